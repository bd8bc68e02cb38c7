"""A local request's checks before any compute: its token ids, SGLang's length rules, a duplicate rid."""

from __future__ import annotations

import threading
from typing import Any

from sgnb.core.params import SamplingParams
from sgnb.runtimes.base import check_prompt
from sgnb.runtimes.local.request import Request


def fit_context(
    ids: list[int], params: SamplingParams, asked: Any, context_length: int, kv_capacity: int, truncate: bool
) -> list[int]:
    """SGLang's length rules (see ``LocalRuntime.make_request``) for prompt ``ids`` against the context
    length and the KV pool's ``kv_capacity`` (tokens); ``asked`` is the caller's own ``max_new_tokens``.
    Sets ``params.max_new_tokens`` to an int; returns the (with ``truncate``: cut) ids; ValueError when
    they do not fit."""
    ctx = context_length
    if len(ids) >= ctx:
        if not truncate:
            raise ValueError(
                f"The input ({len(ids)} tokens) is longer than the model's context length ({ctx} tokens)."
            )
        ids = ids[:ctx]
    if asked is not None and params.max_new_tokens is not None and params.max_new_tokens + len(ids) > ctx:
        if not truncate:
            raise ValueError(
                "Requested token count exceeds the model's maximum context length "
                f"of {ctx} tokens. You requested a total of {params.max_new_tokens + len(ids)} "
                f"tokens: {len(ids)} tokens from the input messages and "
                f"{params.max_new_tokens} tokens for the completion. Please reduce the number "
                "of tokens in the input messages or the completion to fit within the limit."
            )
        params.max_new_tokens = max(0, ctx - len(ids))
    max_req_len = min(ctx - 1, kv_capacity - 1)
    max_req_input_len = max_req_len - 5
    wanted = params.max_new_tokens if params.max_new_tokens is not None else 1 << 30
    params.max_new_tokens = max(0, min(wanted, max_req_len - len(ids) - 1))
    params.min_new_tokens = min(params.min_new_tokens, params.max_new_tokens)
    if len(ids) >= max_req_input_len:
        if not truncate:
            raise ValueError(
                f"Input length ({len(ids)} tokens) exceeds the maximum allowed length "
                f"({max_req_input_len} tokens). Use a shorter input or enable --allow-auto-truncate."
            )
        ids = ids[:max_req_input_len]
    return ids


def tokenize(tokenizer: Any, vocab_size: int, prompt: str | None, input_ids: list[int] | None) -> list[int]:
    """The prompt's token ids (``input_ids`` checked against ``vocab_size``, else ``prompt`` encoded
    without special tokens); ValueError on a bad or empty prompt."""
    check_prompt(prompt, input_ids)
    if input_ids is not None:
        ids = [int(t) for t in input_ids]
        if any(t < 0 or t >= vocab_size for t in ids):
            raise ValueError(f"input_ids must be in [0, {vocab_size})")
    else:
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    if not ids:
        raise ValueError("the prompt is empty")
    return ids


class RidClaims:
    """The requests submitted by rid; thread-safe."""

    def __init__(self) -> None:
        self._rids: dict[str, Request] = {}
        self._lock = threading.Lock()

    def claim(self, req: Request) -> None:
        """Refuse a rid that names a request still in flight, as SGLang's TokenizerManager does."""
        with self._lock:
            other = self._rids.get(req.rid)
            if other is not None and not other.done.is_set():
                raise ValueError(f"Duplicate request ID detected: {req.rid}")
            if len(self._rids) >= 4096:  # forget finished ones
                self._rids = {rid: r for rid, r in self._rids.items() if not r.done.is_set()}
            self._rids[req.rid] = req
