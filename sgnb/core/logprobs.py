"""Logprob requests and results in SGLang's shapes, shared by the local runtime, the DSL and ``sgnb serve``.

SGLang's ``GenerateReqInput`` (``sglang/srt/managers/io_struct.py``) takes five request-level fields
(they are *not* sampling parameters): ``return_logprob``, ``logprob_start_len``, ``top_logprobs_num``,
``token_ids_logprob`` and ``return_text_in_logprobs``. The results come back in ``meta_info``:

* ``input_token_logprobs`` / ``output_token_logprobs``: one ``(logprob, token_id, text | None)``
  per token; ``output_token_logprobs_length`` is the cumulative count;
* ``input_top_logprobs`` / ``output_top_logprobs`` (``top_logprobs_num > 0``): per position a list
  of ``top_logprobs_num`` such tuples, best first;
* ``input_token_ids_logprobs`` / ``output_token_ids_logprobs`` (``token_ids_logprob`` set): per
  position one tuple per requested id.

The first prompt position of each ``input_*`` list is ``None`` (SGLang's
``SchedulerLogprobResultProcessor._process_input_token_logprobs``: ``[None] + logprobs[:-1]``),
and text is filled in only with ``return_text_in_logprobs`` (``TokenizerManager.detokenize_logprob_tokens``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOGPROB_FIELDS = (
    "return_logprob",
    "logprob_start_len",
    "top_logprobs_num",
    "token_ids_logprob",
    "return_text_in_logprobs",
)

Entry = tuple[float | None, int, str | None]
TokenText = Callable[[int], str]


@dataclass(frozen=True)
class LogprobOptions:
    """What one request asks for; defaults are SGLang's (``GenerateReqInput._normalize_single_inputs``)."""

    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    token_ids_logprob: tuple[int, ...] | None = None
    return_text_in_logprobs: bool = False

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any], vocab_size: int | None = None) -> LogprobOptions:
        """Take the logprob fields out of ``kwargs`` (in place) and check them; ValueError on bad input."""
        raw = {name: kwargs.pop(name) for name in LOGPROB_FIELDS if name in kwargs}
        return cls.build(raw, vocab_size)

    @classmethod
    def build(cls, raw: dict[str, Any], vocab_size: int | None = None) -> LogprobOptions:
        want = raw.get("return_logprob")
        start = raw.get("logprob_start_len")
        top = raw.get("top_logprobs_num")
        ids = raw.get("token_ids_logprob")
        text = raw.get("return_text_in_logprobs")
        if want is not None and not isinstance(want, bool):
            raise ValueError(f"return_logprob must be a bool, got {want!r}")
        if text is not None and not isinstance(text, bool):
            raise ValueError(f"return_text_in_logprobs must be a bool, got {text!r}")
        if start is not None and (not _is_int(start) or start < -1):
            raise ValueError(f"logprob_start_len must be -1 or a position in the prompt, got {start!r}")
        if top is not None and not _is_int(top):
            raise ValueError(f"top_logprobs_num must be an int, got {top!r}")
        top_n = max(0, int(top or 0))  # SGLang treats a negative count as none
        if vocab_size is not None and top_n > vocab_size:
            raise ValueError(f"top_logprobs_num ({top_n}) exceeds the vocabulary size ({vocab_size})")
        token_ids: tuple[int, ...] | None = None
        if ids:  # SGLang: None and [] both mean "none"
            if not isinstance(ids, list | tuple) or not all(_is_int(t) for t in ids):
                raise ValueError("token_ids_logprob must be a flat list of integers.")
            token_ids = tuple(int(t) for t in ids)
            for t in token_ids:
                if vocab_size is not None and not 0 <= t < vocab_size:
                    # TokenizerManager._validate_token_ids_logprob's message
                    raise ValueError(
                        f"token_ids_logprob contains out-of-vocabulary token id {t}; "
                        f"valid range is [0, {vocab_size})."
                    )
        return cls(
            return_logprob=bool(want),
            logprob_start_len=-1 if start is None else int(start),
            top_logprobs_num=top_n,
            token_ids_logprob=token_ids,
            return_text_in_logprobs=bool(text),
        )

    def resolve_start(self, prompt_len: int) -> int:
        """The first prompt position that gets an ``input_*`` entry; ``prompt_len`` means none.

        SGLang's ``Scheduler.handle_generate_request``: -1 means output tokens only, and a start
        past the prompt is refused with this message.
        """
        if self.logprob_start_len == -1:
            return prompt_len
        if self.logprob_start_len > prompt_len:
            raise ValueError(
                f"req.logprob_start_len={self.logprob_start_len} is higher than the number of input tokens "
                f"len(req.origin_input_ids)={prompt_len}. Please use a smaller logprob_start_len."
            )
        return self.logprob_start_len


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class LogprobRows:
    """Logprobs of some positions, as plain floats: what :func:`sampling.logprob_rows` computes."""

    chosen: list[float]
    top_values: list[list[float]] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    ids_values: list[list[float]] = field(default_factory=list)


@dataclass
class LogprobTrack:
    """One request's logprobs as they accumulate, kept as ids and floats until ``meta_info`` asks.

    ``input_*`` lists hold one item per prompt position from ``logprob_start_len`` on (the first is
    None); ``output_*`` one per sampled token.
    """

    options: LogprobOptions
    input_ids: list[int] = field(default_factory=list)
    input_values: list[float | None] = field(default_factory=list)
    input_top: list[tuple[list[float], list[int]] | None] = field(default_factory=list)
    input_ids_values: list[list[float] | None] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    output_values: list[float] = field(default_factory=list)
    output_top: list[tuple[list[float], list[int]]] = field(default_factory=list)
    output_ids_values: list[list[float]] = field(default_factory=list)

    def set_input(self, tokens: list[int], rows: LogprobRows | None) -> None:
        """``tokens`` = prompt[start:]; ``rows`` the logprobs of tokens[1:] (positions start..len-2)."""
        self.input_ids = list(tokens)
        if not tokens:
            return
        self.input_values = [None, *(rows.chosen if rows else [])]
        if self.options.top_logprobs_num:
            tops = list(zip(rows.top_values, rows.top_ids, strict=True)) if rows else []
            self.input_top = [None, *tops]
        if self.options.token_ids_logprob:
            self.input_ids_values = [None, *(rows.ids_values if rows else [])]
        assert len(self.input_values) == len(tokens), (len(self.input_values), len(tokens))

    def add_output(self, token: int, rows: LogprobRows) -> None:
        self.output_ids.append(token)
        self.output_values.append(rows.chosen[0])
        if self.options.top_logprobs_num:
            self.output_top.append((rows.top_values[0], rows.top_ids[0]))
        if self.options.token_ids_logprob:
            self.output_ids_values.append(rows.ids_values[0])

    def meta_info(self, token_text: TokenText) -> dict[str, Any]:
        """The ``meta_info`` keys of SGLang's ``TokenizerManager.add_logprob_to_meta_info``."""
        text = token_text if self.options.return_text_in_logprobs else None

        def entries(values: list[Any], ids: list[int]) -> list[Entry]:
            return [(v, t, text(t) if text else None) for v, t in zip(values, ids, strict=True)]

        def top_entries(rows: list[Any]) -> list[list[Entry] | None]:
            return [entries(row[0], row[1]) if row and row[0] else None for row in rows]

        ids_request = list(self.options.token_ids_logprob or ())
        info: dict[str, Any] = {
            "input_token_logprobs": entries(self.input_values, self.input_ids),
            "output_token_logprobs": entries(self.output_values, self.output_ids),
            "output_token_logprobs_length": len(self.output_ids),
        }
        if self.options.top_logprobs_num:
            info["input_top_logprobs"] = top_entries(self.input_top)
            info["output_top_logprobs"] = top_entries(self.output_top)
        if self.options.token_ids_logprob:
            info["input_token_ids_logprobs"] = top_entries(
                [None if v is None else (v, ids_request) for v in self.input_ids_values]
            )
            info["output_token_ids_logprobs"] = top_entries(
                [(v, ids_request) for v in self.output_ids_values]
            )
        return info
