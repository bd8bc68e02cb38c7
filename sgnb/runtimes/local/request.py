"""A request's life in the local runtime: waiting -> prefill -> decode steps -> finished; and its token trace."""

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
from sgnb.core.events import TokenStep
from sgnb.core.grammar import Grammar
from sgnb.core.logprobs import LogprobTrack
from sgnb.core.params import SamplingParams
from sgnb.core.token_trace import TRACE_TOP_K
from sgnb.runtimes.local.radix_cache import TreeNode
from sgnb.runtimes.local.sampling import logprob_rows

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

    def take_scores(self, logits: torch.Tensor, row: int) -> int:
        """A scoring request's prompt logprobs, from its rows of ``logits`` starting at ``row``;
        returns the row after them."""
        start = max(self.logprob_start or 0, 1)
        targets = self.input_ids[start:]
        rows = logits[row : row + len(targets)]
        logprobs = torch.log_softmax(rows, dim=-1).gather(1, torch.tensor(targets).unsqueeze(1))
        self.input_logprobs = [float(x) for x in logprobs.squeeze(1)]
        return row + len(targets)

    def take_input_logprobs(self, logits: torch.Tensor, row: int) -> int:
        """Prompt logprobs of a just-prefilled ``return_logprob`` request, from its extra logits rows
        starting at ``row``; returns the row after them."""
        assert self.logprobs is not None
        opts, n = self.logprobs.options, self.input_logprob_rows
        start = self.input_logprob_start
        rows = None
        if n:
            targets = self.input_ids[start + 1 :]
            rows = logprob_rows(logits[row : row + n], targets, opts.top_logprobs_num, opts.token_ids_logprob)
        self.logprobs.set_input(self.input_ids[start:], rows)
        return row + n

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


class TokenTrace:
    """One traced request's steps (the wire format of :mod:`sgnb.core.token_trace`); the scheduler calls
    :meth:`before_grammar` and :meth:`after_sample`."""

    def __init__(self, top_k: int = TRACE_TOP_K) -> None:
        self.top_k = max(1, int(top_k))
        self.steps: list[dict[str, Any]] = []
        self._last = time.perf_counter()

    def before_grammar(self, logits: torch.Tensor, temperature: float) -> tuple[list[float], list[int]]:
        """The model's own top-k of ``logits`` ([vocab], penalties applied, grammar not yet)."""
        scaled = logits if temperature == 1.0 else logits / temperature
        values, ids = torch.log_softmax(scaled, dim=-1).topk(self.top_k)
        return values.tolist(), ids.tolist()

    def after_sample(
        self,
        req: Request,
        token: int,
        logits: torch.Tensor,
        unconstrained: tuple[list[float], list[int]] | None,
    ) -> TokenStep:
        """Record the step of ``token``, sampled from ``logits`` (masked); the event to publish."""
        now = time.perf_counter()
        step: dict[str, Any] = {"i": len(self.steps), "id": int(token), "ms": (now - self._last) * 1000}
        self._last = now
        track = req.logprobs
        if track is not None and track.options.top_logprobs_num and track.output_ids:
            # the numbers meta_info returns (computed just before, in Scheduler._sample)
            values, ids = track.output_top[-1]
            step["lp"], step["top"] = (
                track.output_values[-1],
                [[v, t] for v, t in zip(values, ids, strict=True)],
            )
        else:
            temperature = 1.0 if req.params.greedy else req.params.temperature
            rows = logprob_rows(logits.unsqueeze(0), [token], self.top_k, None, temperature)
            step["lp"] = rows.chosen[0]
            step["top"] = [[v, t] for v, t in zip(rows.top_values[0], rows.top_ids[0], strict=True)]
        if req.grammar is not None:
            step["n"] = req.grammar.allowed_count()
            if unconstrained is not None:
                values, ids = unconstrained
                allowed = req.grammar.allows(ids)
                step["unc"] = [[v, t, int(a)] for v, t, a in zip(values, ids, allowed, strict=True)]
        self.steps.append(step)
        first = step["i"] == 0
        kind, source = req.params.constraint or (None, None)
        return TokenStep(
            rid=req.rid,
            step=step,
            prompt_ids=list(req.input_ids) if first else None,
            cached_tokens=req.cached_tokens,
            constraint=kind if first else None,
            constraint_source=source if first else None,
        )
