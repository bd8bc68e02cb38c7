"""Token ids to text exactly as SGLang 0.5.23 does it: stop checks, stop trimming, incremental text.

One implementation for every sgnb path (the local runtime's results and streams, the DSL backend,
``sgnb serve``), mirroring three places in SGLang:

- ``sglang/srt/managers/schedule_batch.py`` ``Req``: when a request finishes
  (:func:`finish_reason_after`, from ``update_finish_state``), and whether a streamed step is held
  back because the text ends in a prefix of a stop string (:func:`holds_stop_prefix`, from
  ``check_match_stop_str_prefix``, used by ``scheduler_components/output_streamer.py``);
- ``sglang/srt/managers/detokenizer_manager.py``: incremental detokenization with
  ``surr_offset`` / ``read_offset``, holding back text that ends in an incomplete UTF-8 character
  (``'\\ufffd'``), and ``trim_matched_stop`` (:class:`IncrementalDetokenizer`, :func:`trim_matched_stop`);
- ``sglang/utils.py`` ``find_printable_text``.

This module imports neither torch nor sglang, so the local runtime stays quick to import.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # Python 3.11+ (sgnb's floor), as sampling_params.py imports it
from collections.abc import Iterable, Sequence
from typing import Any

# schedule_batch.INIT_INCREMENTAL_DETOKENIZATION_OFFSET: prompt tokens decoded as left context.
INIT_INCREMENTAL_DETOKENIZATION_OFFSET = 5
_MAX_LEN = 2**30


def abort_reason(
    message: str = "Aborted", status_code: int | None = None, err_type: str | None = None
) -> dict[str, Any]:
    """``FINISH_ABORT(...).to_json()``: what ``meta_info.finish_reason`` holds for an aborted request."""
    return {"type": "abort", "message": message, "status_code": status_code, "err_type": err_type}


# ---- stop conditions (schedule_batch.Req) -------------------------------------------------------


def stop_str_max_len(tokenizer: Any, stops: Sequence[str]) -> int:
    """``SamplingParams.normalize``: the longest stop string, in tokens."""
    return max((len(tokenizer.encode(s, add_special_tokens=False)) for s in stops), default=0)


def regex_max_len(pattern: str) -> int:
    """``sampling_params.get_max_seq_length``: the most characters ``pattern`` can match (2**30 if unbounded)."""
    return _max_from_subpattern(sre_parse.parse(pattern))


def _max_from_subpattern(subpattern: Any) -> int:
    total = 0
    for token, value in subpattern:
        if token in (sre_parse.LITERAL, sre_parse.IN, sre_parse.ANY):
            total += 1
        elif token == sre_parse.SUBPATTERN:
            total += _max_from_subpattern(value[3])
        elif token == sre_parse.BRANCH:
            total += max(_max_from_subpattern(branch) for branch in value[1])
        elif token in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
            _, most, inner = value
            total += _MAX_LEN if most == sre_parse.MAXREPEAT else most * _max_from_subpattern(inner)
        elif token == sre_parse.AT:
            pass
        else:
            total += _MAX_LEN
    return total


class StopChecker:
    """A request's stop strings, stop regexes and stop tokens, judged as SGLang's ``Req`` does.

    ``tokenizer`` needs ``encode`` and ``decode``; ``eos_token_ids`` are the model's end tokens.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        stop: Sequence[str] = (),
        stop_regex: Sequence[str] = (),
        stop_token_ids: Iterable[int] = (),
        eos_token_ids: Iterable[int] = (),
        ignore_eos: bool = False,
        max_new_tokens: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.stop_regex = list(stop_regex)
        self.stop_token_ids = set(stop_token_ids)
        self.eos_token_ids = set(eos_token_ids)
        self.ignore_eos = ignore_eos
        self.max_new_tokens = max_new_tokens
        self.stop_str_max_len = stop_str_max_len(tokenizer, self.stop) if self.stop else 0
        self.stop_regex_max_len = max((regex_max_len(p) for p in self.stop_regex), default=0)

    def tail_str(self, output_ids: Sequence[int]) -> str:
        """``Req.tail_str``: the last few output tokens decoded, special tokens included."""
        if not self.stop and not self.stop_regex:
            return ""
        tail_len = min(max(self.stop_str_max_len + 1, self.stop_regex_max_len + 1), len(output_ids))
        return str(self.tokenizer.decode(list(output_ids[len(output_ids) - tail_len :])))

    def finish_reason_after(self, output_ids: Sequence[int]) -> dict[str, Any] | None:
        """``Req.update_finish_state`` after one new token: the finish reason, or None to go on.

        Order as SGLang's: stop strings, stop regexes, stop tokens / EOS (all skipped with
        ``ignore_eos``), then the length cap. Grammar termination is the caller's (it comes last).
        """
        if self.stop or self.stop_regex:
            tail = self.tail_str(output_ids)
            for stop in self.stop:
                if stop in tail:
                    return {"type": "stop", "matched": stop}
            for pattern in self.stop_regex:
                if re.search(pattern, tail):
                    return {"type": "stop", "matched": pattern}
        token = output_ids[-1]
        if not self.ignore_eos and (token in self.stop_token_ids or token in self.eos_token_ids):
            return {"type": "stop", "matched": int(token)}
        if self.max_new_tokens is not None and len(output_ids) >= self.max_new_tokens:
            return {"type": "length", "length": self.max_new_tokens}
        return None

    def holds_stop_prefix(self, output_ids: Sequence[int]) -> bool:
        """``Req.check_match_stop_str_prefix``: True while the text ends in (a prefix of) a stop string.

        A streamed step is not sent then, so a stream never shows text the stop will trim.
        """
        if not self.stop:
            return False
        tail = self.tail_str(output_ids)
        if not tail:
            return False
        for stop in self.stop:
            if not stop:
                continue
            if stop in tail:
                return True
            for i in range(1, min(len(tail), len(stop)) + 1):
                if tail[-i:] == stop[:i]:
                    return True
        return False


# ---- detokenization (detokenizer_manager.py) -----------------------------------------------------


def trim_matched_stop(output: Any, finished_reason: dict[str, Any] | None, no_stop_trim: bool) -> Any:
    """``DetokenizerManager.trim_matched_stop``: cut a matched stop string (text) or stop token (ids).

    A string ``matched`` cuts the text at its first occurrence (kept through it with ``no_stop_trim``);
    an int ``matched`` drops the last token id. Anything else is returned unchanged.
    """
    if not finished_reason:
        return output
    matched = finished_reason.get("matched")
    if matched is None:
        return output
    if isinstance(matched, str) and isinstance(output, str):
        pos = output.find(matched)
        if pos == -1:
            return output
        return output[: pos + len(matched)] if no_stop_trim else output[:pos]
    if isinstance(matched, int) and isinstance(output, list):
        if no_stop_trim:
            return output
        return output[:-1]
    return output


def _is_chinese_char(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def find_printable_text(text: str) -> str:
    """``sglang.utils.find_printable_text``: the longest prefix that holds only whole words."""
    if text.endswith("\n"):
        return text
    if text and _is_chinese_char(ord(text[-1])):
        return text
    if len(text) > 1 and _is_chinese_char(ord(text[-2])):
        return text[:-1]
    return text[: text.rfind(" ") + 1]


class IncrementalDetokenizer:
    """One request's ``DecodeStatus`` and its step of ``_decode_batch_token_id_output``.

    Call :meth:`step` with the request's whole output (ids through the stop token) each time SGLang
    would send a batch output for it; it returns the new text to append. While the text ends in an
    incomplete UTF-8 character it returns only the printable part and retries with more tokens;
    the finishing step trims the matched stop as ``trim_matched_stop`` does.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        no_stop_trim: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.no_stop_trim = no_stop_trim
        # Req.init_incremental_detokenize: the prompt's last few tokens are decoded as left
        # context (a leading space or a byte split across the boundary decodes right).
        read_offset = len(prompt_ids)
        surr_offset = max(read_offset - INIT_INCREMENTAL_DETOKENIZATION_OFFSET, 0)
        self.decode_ids: list[int] = list(prompt_ids[surr_offset:])
        self.surr_offset = 0
        self.read_offset = read_offset - surr_offset
        self.seen = 0  # output ids already in decode_ids
        self.decoded_text = ""
        self.sent_offset = 0

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(
            self.tokenizer.decode(
                ids,
                skip_special_tokens=self.skip_special_tokens,
                spaces_between_special_tokens=self.spaces_between_special_tokens,
            )
        )

    def step(self, output_ids: Sequence[int], finished_reason: dict[str, Any] | None = None) -> str:
        """Take the output so far (``finished_reason`` None while running); return the text to add."""
        self.decode_ids.extend(output_ids[self.seen :])
        self.seen = len(output_ids)
        read_ids = trim_matched_stop(self.decode_ids[self.surr_offset :], finished_reason, self.no_stop_trim)
        surr_text = self._decode(self.decode_ids[self.surr_offset : self.read_offset])
        new_text = self._decode(read_ids)[len(surr_text) :]
        if finished_reason is None:
            pending = self.sent_offset - len(self.decoded_text)
            if new_text and not new_text.endswith("\ufffd"):
                self.decoded_text += new_text
                self.surr_offset = self.read_offset
                self.read_offset = len(self.decode_ids)
                self.sent_offset = len(self.decoded_text)
                return new_text[pending:] if pending else new_text
            printable = find_printable_text(new_text)
            self.sent_offset = len(self.decoded_text) + len(printable)
            return printable[pending:] if pending else printable
        output_str = trim_matched_stop(self.decoded_text + new_text, finished_reason, self.no_stop_trim)
        incremental = output_str[self.sent_offset :]
        self.sent_offset = len(output_str)
        return str(incremental)
