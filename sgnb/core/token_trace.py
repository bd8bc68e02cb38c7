"""Per-token facts SGLang's ``meta_info`` does not carry, recorded where the grammar mask is applied.

A request of the local runtime is *traced* when it asks for logprobs (``return_logprob``) or while
:func:`tracing` is on (``%%sglang --show tokens``). Its ``TokenTrace`` (in
``sgnb.runtimes.local.request``, next to the request it traces) is the local runtime's counterpart
of SGLang's ``SamplingObserver`` (``sglang/srt/sampling/sampling_observer.py``, called by
``SamplingBatchInfo.apply_logits_bias_with_observer``): ``before_grammar`` sees the logits the
grammar is about to mask, ``after_sample`` the token sampled from the masked ones, and each step is
published as a :class:`sgnb.core.events.TokenStep`. Untraced requests pay nothing. This module holds
what a view needs (the step format, :func:`tracing`), so views need not import the runtime.

One step (a dict, the token view's wire format) per output token:

* ``i``: output position; ``id``: the token; ``ms``: milliseconds since the request's previous
  token (for the first: since the request was made, so queueing and prefill included);
* ``lp``: its logprob in the distribution it was sampled from, and ``top``: ``[[logprob, id], ...]``
  best first - the numbers of ``output_token_logprobs`` / ``output_top_logprobs``;
* constrained steps only: ``n``, how many tokens the grammar allowed (1: *forced*), and ``unc``:
  ``[[logprob, id, allowed], ...]``, the model's own top-k before the mask, each flagged with
  whether the grammar allowed it.

:class:`sgnb.core.grammar.GrammarReplay` recomputes ``n`` for any runtime (sglang.Engine, a server) by
running the request's grammar over its output ids, as xgrammar did when the request ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TRACE_TOP_K = 5  # alternatives kept per step when the request did not ask for top_logprobs_num


@contextmanager
def tracing(runtime: Any, top_k: int = TRACE_TOP_K) -> Iterator[bool]:
    """Trace every request ``runtime`` gets meanwhile; yields False where it cannot.

    The local runtime records each step with the trace hook (``trace_top_k``); a remote runtime
    (``logprob_top_k``: ``sgnb.runtimes.remote``) asks the server for the logprobs and top-k of every
    request (``return_logprob``, ``top_logprobs_num``), which its ``RequestFinished`` events carry.
    """
    name = next((n for n in ("trace_top_k", "logprob_top_k") if hasattr(runtime, n)), None)
    if name is None:
        yield False
        return
    before = getattr(runtime, name)
    setattr(runtime, name, top_k)
    try:
        yield True
    finally:
        setattr(runtime, name, before)
