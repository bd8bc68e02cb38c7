"""SGLang's ``meta_info`` logprob triples in OpenAI's two shapes.

* ``/v1/chat/completions``: ``{"content": [{"token", "bytes", "logprob", "top_logprobs": [...]}]}``,
  as ``OpenAIServingChat._build_token_logprobs_from_raw`` builds it;
* ``/v1/completions``: ``{"text_offset", "token_logprobs", "tokens", "top_logprobs"}``, as
  ``sglang.srt.entrypoints.openai.utils.to_openai_style_logprobs`` builds it.

Byte-level BPE tokens (GPT-2 family, SmolLM2 among them) that are a fragment of a character decode to
U+FFFD; SGLang recovers their true bytes through the GPT-2 byte decoder (``token_id_to_bytes``) and,
in the completions shape, shows a fragment as latin-1 text (``_lossless_token_text``). These are
re-implemented here rather than imported because importing SGLang's OpenAI serving modules takes
seconds and pulls in most of SGLang; ``tests/test_logprobs_serve.py`` checks them against SGLang's own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgnb.serve.context import ServeContext

Triple = Sequence[Any]  # (logprob, token_id, text | None)


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_LEVEL: dict[int, bool] = {}


def is_byte_level(tokenizer: Any) -> bool:
    """SGLang's ``_is_byte_level_tokenizer``: a fast tokenizer's flag, else probe a few vocabulary pieces."""
    key = id(tokenizer)
    if key in _BYTE_LEVEL:
        return _BYTE_LEVEL[key]
    flag = getattr(tokenizer, "is_byte_level", None)
    if isinstance(flag, bool):
        _BYTE_LEVEL[key] = flag
        return flag
    decoder = _byte_decoder()
    result = True
    try:
        size = len(tokenizer.get_vocab())
        for sid in (0, 1, 2, 3, size // 2, size - 2):
            if not 0 <= sid < size:
                continue
            piece = tokenizer.convert_ids_to_tokens(sid)
            if piece and any(ch not in decoder for ch in piece):
                result = False
                break
    except Exception:
        result = False
    _BYTE_LEVEL[key] = result
    return result


def token_bytes(tokenizer: Any, token_id: int) -> list[int] | None:
    """SGLang's ``token_id_to_bytes``: a byte-level token's raw bytes, or None."""
    if not is_byte_level(tokenizer):
        return None
    try:
        piece = tokenizer.convert_ids_to_tokens(token_id)
    except Exception:
        return None
    if not piece:
        return None
    decoder = _byte_decoder()
    out = []
    for ch in piece:
        if ch not in decoder:
            return None
        out.append(decoder[ch])
    return out


def lossless_text(tokenizer: Any, token_id: int, text: str | None) -> str:
    """SGLang's ``_lossless_token_text``: a fragment of a character as latin-1, anything else as is."""
    if text is not None and "\ufffd" not in text:
        return text
    raw = token_bytes(tokenizer, token_id) if token_id is not None else None
    if raw is None:
        return text if text is not None else ""
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(raw).decode("latin-1")
    return text if text is not None else ""


def chat_logprobs(
    tokenizer: Any, token_logprobs: Sequence[Triple], top_logprobs: Sequence[Sequence[Triple] | None] | None
) -> dict[str, Any]:
    """A chat choice's ``logprobs`` (``ChoiceLogprobs``) from ``output_token_logprobs`` / ``output_top_logprobs``."""

    def as_bytes(token_id: int, text: str | None) -> list[int]:
        raw = token_bytes(tokenizer, token_id)
        return raw if raw is not None else list((text or "").encode("utf-8"))

    content = []
    for i, (logprob, token_id, text) in enumerate(token_logprobs):
        tops = []
        row = top_logprobs[i] if top_logprobs and i < len(top_logprobs) else None
        for top_lp, top_id, top_text in row or ():
            tops.append({"token": top_text or "", "bytes": as_bytes(top_id, top_text), "logprob": top_lp})
        content.append(
            {"token": text or "", "bytes": as_bytes(token_id, text), "logprob": logprob, "top_logprobs": tops}
        )
    return {"content": content}


def completion_logprobs(
    tokenizer: Any,
    token_logprobs: Sequence[Triple] | None,
    top_logprobs: Sequence[Sequence[Triple] | None] | None,
    input_token_logprobs: Sequence[Triple] | None = None,
    input_top_logprobs: Sequence[Sequence[Triple] | None] | None = None,
) -> dict[str, Any]:
    """A completion choice's ``logprobs`` (``LogProbs``), as ``to_openai_style_logprobs`` orders it:
    prompt tokens (echo) before output tokens; ``text_offset`` is -1 (SGLang does not compute it)."""
    out: dict[str, Any] = {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
    for triples in (input_token_logprobs, token_logprobs):
        for logprob, token_id, text in triples or ():
            out["tokens"].append(lossless_text(tokenizer, token_id, text))
            out["token_logprobs"].append(logprob)
            out["text_offset"].append(-1)
    for rows in (input_top_logprobs, top_logprobs):
        for row in rows or ():
            out["top_logprobs"].append(
                None if row is None else {lossless_text(tokenizer, t, s): lp for lp, t, s in row}
            )
    return out


def chat_logprobs_of(ctx: ServeContext, meta: dict[str, Any], start: int = 0, end: int | None = None) -> Any:
    """``choices[i].logprobs`` of a chat response from ``meta_info`` (tokens ``start:end``)."""
    tops = meta.get("output_top_logprobs")
    return chat_logprobs(
        ctx.runtime.tokenizer, meta["output_token_logprobs"][start:end], tops[start:end] if tops else None
    )


def completion_logprobs_of(
    ctx: ServeContext, meta: dict[str, Any], start: int = 0, end: int | None = None
) -> Any:
    """``choices[i].logprobs`` of a completion from ``meta_info`` (tokens ``start:end``)."""
    return completion_logprobs(
        ctx.runtime.tokenizer,
        meta.get("output_token_logprobs", [])[start:end],
        meta.get("output_top_logprobs", [])[start:end],
    )
