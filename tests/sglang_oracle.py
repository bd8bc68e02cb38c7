"""SGLang's own text pipeline, replayed on CPU: the expected text of any output token sequence.

Given a prompt and the token ids a request generated, :func:`sglang_texts` runs them through the
classes SGLang 0.5.23 itself uses - ``schedule_batch.Req`` (``update_finish_state``,
``check_match_stop_str_prefix``, ``init_incremental_detokenize``), the output streamer's rule for
when a step is sent (``scheduler_components/output_streamer.py``, ``accept``) and
``DetokenizerManager._decode_batch_token_id_output`` - and accumulates the text as
``TokenizerManager`` does. What comes out is what SGLang's server would answer: each streamed
chunk's cumulative text, the final text and ``meta_info.finish_reason``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

FORCE_STREAM_INTERVAL = 50  # SGLANG_FORCE_STREAM_INTERVAL's default


@dataclass
class Replay:
    chunks: list[str]  # cumulative text of each streamed chunk, the final one last
    text: str  # the final text
    finish_reason: dict[str, Any] | None
    output_ids: list[int]  # through the stop token, as SGLang returns them


def _detokenizer(tokenizer: Any) -> Any:
    from sglang.srt.managers.detokenizer_manager import DetokenizerManager

    dm = object.__new__(DetokenizerManager)  # its __init__ opens ZMQ sockets; the decode needs none
    dm.tokenizer = tokenizer
    dm.decode_status = {}
    dm.vocab_size = len(tokenizer)
    dm.disable_tokenizer_batch_decode = False
    dm.is_tool_call_parser_gpt_oss = False
    dm.tool_close_token_ids = set()
    return dm


def sglang_texts(
    tokenizer: Any,
    prompt_ids: list[int],
    output_ids: list[int],
    sampling_params: dict[str, Any],
    *,
    stream: bool,
    eos_token_ids: set[int],
) -> Replay:
    """Feed ``output_ids`` one token at a time to a real SGLang ``Req`` and its detokenizer."""
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.sampling.sampling_params import SamplingParams
    from sglang.srt.utils.hf_transformers.common import attach_additional_stop_token_ids

    if not hasattr(tokenizer, "additional_stop_token_ids"):
        attach_additional_stop_token_ids(tokenizer)  # what SGLang's get_tokenizer adds
    sp = SamplingParams(**sampling_params)
    sp.normalize(tokenizer)
    sp.verify(len(tokenizer))
    req = Req("oracle", "", array("q", prompt_ids), sp, stream=stream, eos_token_ids=eos_token_ids)
    req.tokenizer = tokenizer
    dm = _detokenizer(tokenizer)
    text = ""
    chunks: list[str] = []
    for token in output_ids:
        req.output_ids.append(token)
        req.update_finish_state()
        finished = req.finished()
        if finished:
            req.finished_len = req.finished_len or len(req.output_ids)
        elif stream and req.check_match_stop_str_prefix():
            continue  # output_streamer.accept: held back while the text ends in part of a stop
        elif not stream and len(req.output_ids) % FORCE_STREAM_INTERVAL:
            continue  # output_streamer.accept: a non-streaming request is sent every 50 tokens
        decode_ids, read_offset = req.init_incremental_detokenize()
        batch = SimpleNamespace(
            rids=[req.rid],
            decoded_texts=[req.decoded_text],
            decode_ids=[list(decode_ids[req.send_decode_id_offset :])],
            read_offsets=[read_offset],
            finished_reasons=[req.finished_reason.to_json() if finished else None],
            no_stop_trim=[sp.no_stop_trim],
            skip_special_tokens=[sp.skip_special_tokens],
            spaces_between_special_tokens=[sp.spaces_between_special_tokens],
        )
        req.send_decode_id_offset = len(decode_ids)
        text += dm._decode_batch_token_id_output(batch)[0]
        chunks.append(text)
        if finished:
            return Replay(chunks, text, req.finished_reason.to_json(), list(req.output_ids_through_stop))
    return Replay(chunks, text, None, list(req.output_ids))
