"""``n > 1``: parallel sampling of one prompt, the way SGLang's ``TokenizerManager`` runs it.

``GenerateReqInput._handle_parallel_sampling`` turns one prompt with ``sampling_params.n = k`` into a
batch, and ``TokenizerManager._handle_batch_request`` first sends the prompt alone with
``max_new_tokens = 0`` - so it is prefilled once and lands in the radix cache - then ``k`` copies
of the request. Each copy finds the prompt cached (all but its last token, which is recomputed to
pick the first new token), so the tree shows one prefix with ``k`` branches. The result is a list
of ``k`` results in order (``Engine.generate`` returns the batch's list); a stream yields every copy's
chunks, each with its ``index`` (``TokenizerManager._stream_batch_responses``).
"""

from __future__ import annotations

import numbers
import queue
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgnb.runtimes.local.request import Request
    from sgnb.runtimes.local.runtime import LocalRuntime


def parallel_n(sampling_params: dict[str, Any] | None, kwargs: dict[str, Any]) -> int:
    """The request's ``n`` (1 when unset). As in SGLang, ``n <= 1`` is one sample."""
    n = kwargs.get("n", (sampling_params or {}).get("n", 1))
    if n is None:
        return 1
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise ValueError(f"n must be an int, got {n!r}")
    return max(1, int(n))


def generate_n(
    rt: LocalRuntime,
    n: int,
    prompt: str | None,
    input_ids: list[int] | None,
    sampling_params: dict[str, Any] | None,
    stream: bool,
    kwargs: dict[str, Any],
    rid: str | None = None,
) -> list[dict[str, Any]] | Iterator[dict[str, Any]]:
    """Run ``n`` samples of one prompt after prefilling it once; see the module docstring.

    With ``rid`` the copies are ``{rid}_{i}`` (``GenerateReqInput._normalize_rid``), so aborting
    ``rid`` - which matches rids by prefix, as SGLang's scheduler does - aborts them all.
    """
    # Every copy is checked before anything runs: a bad request fails whole, as SGLang's does.
    reqs = [
        rt.make_request(
            prompt,
            input_ids=input_ids,
            sampling_params=sampling_params,
            rid=None if rid is None else f"{rid}_{i}",
            **kwargs,
        )
        for i in range(n)
    ]
    # The warm-up: the prompt alone, prefill only, so its KV is in the radix cache for every copy.
    rt.generate(input_ids=reqs[0].input_ids, max_new_tokens=0)
    shared: queue.Queue[dict[str, Any] | None] | None = queue.Queue() if stream else None
    for req in reqs:
        req.stream = shared
        rt.scheduler.submit(req)
    if shared is not None:
        return _stream(rt, reqs, shared)
    try:
        return [rt._wait(req) for req in reqs]
    except BaseException:
        _abort_unfinished(rt, reqs)
        raise


def _stream(
    rt: LocalRuntime, reqs: list[Request], chunks: queue.Queue[dict[str, Any] | None]
) -> Iterator[dict[str, Any]]:
    index = {req.rid: i for i, req in enumerate(reqs)}
    left = len(reqs)
    try:
        while left:
            chunk = chunks.get()
            if chunk is None:  # one copy finished
                left -= 1
                continue
            yield {**chunk, "index": index[chunk["meta_info"]["id"]]}
    finally:
        _abort_unfinished(rt, reqs)  # the consumer stopped early or was interrupted
    failed = next((req.error for req in reqs if req.error is not None), None)
    if failed is not None:
        raise RuntimeError(f"request failed: {failed}") from failed


def _abort_unfinished(rt: LocalRuntime, reqs: list[Request]) -> None:
    for req in reqs:
        if not req.done.is_set():
            rt.abort(req.rid)
