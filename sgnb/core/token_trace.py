"""Per-token facts SGLang's ``meta_info`` does not carry, recorded where the grammar mask is applied.

A request of the local runtime is *traced* when it asks for logprobs (``return_logprob``) or while
:func:`tracing` is on (``%%sglang --show tokens``). Its :class:`TokenTrace` is the local runtime's
counterpart of SGLang's ``SamplingObserver`` (``sglang/srt/sampling/sampling_observer.py``, called by
``SamplingBatchInfo.apply_logits_bias_with_observer``): :meth:`TokenTrace.before_grammar` sees the
logits the grammar is about to mask, :meth:`TokenTrace.after_sample` the token sampled from the
masked ones. Untraced requests pay nothing.

One step (a dict, the token view's wire format) per output token:

* ``i``: output position; ``id``: the token; ``ms``: milliseconds since the request's previous
  token (for the first: since the request was made, so queueing and prefill included);
* ``lp``: its logprob in the distribution it was sampled from, and ``top``: ``[[logprob, id], ...]``
  best first - the numbers of ``output_token_logprobs`` / ``output_top_logprobs``;
* constrained steps only: ``n``, how many tokens the grammar allowed (1: *forced*), and ``unc``:
  ``[[logprob, id, allowed], ...]``, the model's own top-k before the mask, each flagged with
  whether the grammar allowed it.

:class:`GrammarReplay` recomputes ``n`` for any runtime (sglang.Engine, a server) by running the
request's grammar over its output ids, as xgrammar did when the request ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from sgnb.core.events import TokenStep

if TYPE_CHECKING:
    from sgnb.runtimes.local.request import Request

TRACE_TOP_K = 5  # alternatives kept per step when the request did not ask for top_logprobs_num


class TokenTrace:
    """One request's steps; the scheduler calls :meth:`before_grammar` and :meth:`after_sample`."""

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
            from sgnb.runtimes.local.sampling import logprob_rows

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


@contextmanager
def tracing(runtime: Any, top_k: int = TRACE_TOP_K) -> Iterator[bool]:
    """Trace every request ``runtime`` gets meanwhile; yields False where it cannot (not local)."""
    if not hasattr(runtime, "trace_top_k"):
        yield False
        return
    before = runtime.trace_top_k
    runtime.trace_top_k = top_k
    try:
        yield True
    finally:
        runtime.trace_top_k = before


class GrammarReplay:
    """Allowed-token counts of a finished or streaming request, replayed through its grammar.

    ``feed(token)`` returns how many tokens the grammar allowed at that step (before accepting
    ``token``), or None once the grammar has ended or rejected a token. ``runtime`` gives the
    compiler (sgnb's ``GrammarCompiler``, or one built on the runtime's tokenizer).
    """

    def __init__(self, runtime: Any, kind: str, source: str) -> None:
        from sgnb.runtimes.local.grammar import GrammarCompiler

        compiler = getattr(runtime, "grammars", None)
        if compiler is None:
            tokenizer = runtime.tokenizer
            if tokenizer is None:
                raise ValueError("this runtime's tokenizer is not readable here; cannot replay its grammar")
            compiler = GrammarCompiler(tokenizer, len(tokenizer))
        self.grammar = compiler.matcher(compiler.compile(kind, source))
        self.ok = True

    def feed(self, token: int) -> int | None:
        if not self.ok or self.grammar.is_terminated():
            return None
        self.grammar.fill()
        allowed = self.grammar.allowed_count()
        self.ok = self.grammar.accept(int(token))
        return allowed
