"""A request's life in the local runtime: waiting -> prefill -> decode steps -> finished."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sgnb.core.detokenize import IncrementalDetokenizer, StopChecker
from sgnb.core.logprobs import LogprobTrack
from sgnb.core.params import SamplingParams
from sgnb.core.token_trace import TokenTrace
from sgnb.runtimes.local.grammar import Grammar
from sgnb.runtimes.local.radix_cache import TreeNode

_seq = itertools.count()


@dataclass(eq=False)
class Request:
    input_ids: list[int]
    params: SamplingParams
    grammar: Grammar | None = None
    # Scoring requests generate nothing; they return the logprobs of input_ids[logprob_start:].
    logprob_start: int | None = None
    stream: queue.Queue[dict[str, Any] | None] | None = None
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    # return_logprob requests (sgnb.core.logprobs): what they asked for and what has been computed so far.
    logprobs: LogprobTrack | None = None
    input_logprob_start: int = 0  # resolved logprob_start_len; len(input_ids) means no prompt entries
    token_text: Callable[[int], str] = str  # a token's text, for return_text_in_logprobs
    trace: TokenTrace | None = None  # per-step grammar facts and latency, for the token view
    seq: int = field(default_factory=lambda: next(_seq))

    # --- filled in by the scheduler ---
    output_ids: list[int] = field(default_factory=list)
    kv_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    last_node: TreeNode | None = None  # the locked end of this request's cached path
    protected_len: int = 0  # kv_indices[:protected_len] belong to the radix tree
    cached_tokens: int = 0  # prefix reused at admission: what meta_info reports
    reserved: int = 0  # KV slots promised for future decode steps
    input_logprobs: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None
    # Text as SGLang's detokenizer builds it: appended step by step, the matched stop trimmed.
    detok: IncrementalDetokenizer | None = None
    stops: StopChecker | None = None
    text: str = ""

    created: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finish_reason: dict[str, Any] | None = None
    error: BaseException | None = None
    aborted: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def is_score(self) -> bool:
        return self.logprob_start is not None

    @property
    def input_logprob_rows(self) -> int:
        """Prompt positions whose next-token logprob this request returns (computed at its prefill)."""
        if self.logprobs is None:
            return 0
        return max(0, len(self.input_ids) - 1 - self.input_logprob_start)

    @property
    def kv_tokens(self) -> list[int]:
        """The tokens whose KV is in the pool: everything but the newest sampled token."""
        return (self.input_ids + self.output_ids)[: int(self.kv_indices.numel())]

    @property
    def next_input(self) -> list[int]:
        """Tokens this request feeds to its next forward pass."""
        return (self.input_ids + self.output_ids)[int(self.kv_indices.numel()) :]

    def stops_held(self) -> bool:
        """SGLang holds a streamed step back while the text ends in part of a stop string."""
        return self.stops is not None and self.stops.holds_stop_prefix(self.output_ids)

    def emit(self, finished: bool = False) -> None:
        """Append the text SGLang's detokenizer would send now (the finishing step trims the stop)."""
        if self.detok is not None:
            self.text += self.detok.step(self.output_ids, self.finish_reason if finished else None)

    def meta_info(self) -> dict[str, Any]:
        now = time.perf_counter()
        info: dict[str, Any] = {
            "id": self.rid,
            "prompt_tokens": len(self.input_ids),
            "completion_tokens": len(self.output_ids),
            "cached_tokens": self.cached_tokens,
            "finish_reason": self.finish_reason,
            "e2e_latency": now - self.created,
        }
        if self.first_token_at is not None:
            info["ttft"] = self.first_token_at - self.created
        if self.is_score:
            info["input_token_logprobs"] = list(self.input_logprobs)
        if self.logprobs is not None:
            info.update(self.logprobs.meta_info(self.token_text))
        if self.params.constraint:
            info["constraint"] = self.params.constraint[0]
        return info

    def result(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "output_ids": list(self.output_ids),
            "meta_info": self.meta_info(),
        }
