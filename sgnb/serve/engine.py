"""The bridge between async request handlers and the blocking local runtime.

Every runtime call runs on a worker thread, so the event loop keeps serving while requests
wait for the scheduler. A stream is pumped by one worker thread into an asyncio queue; when the
consumer goes away (the client disconnected) the pump closes the runtime's iterator, which
aborts the request at the scheduler's next step. A non-streaming request runs under its ``rid``
(the client's, or a fresh one), so ``/abort_request`` and a client disconnect abort it too, as
SGLang's ``TokenizerManager`` does (``abort_request``, ``_wait_one_response``).

The text the runtime returns is already SGLang's (``sgnb.core.detokenize``): the matched stop trimmed,
streams held back while they end in an incomplete character or part of a stop string.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from sgnb.serve.schemas import MAX_BATCH, BadRequest, Item

T = TypeVar("T")
DISCONNECT_POLL_S = 0.5  # how often a waiting non-streaming request checks its client
_END = object()


class Engine:
    """Async face of a LocalRuntime (or anything with its ``generate``/``score`` API)."""

    def __init__(self, runtime: Any, max_workers: int = 512) -> None:
        self.rt = runtime
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sgnb-serve")
        self.inflight = 0

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- tokens ------------------------------------------------------------------------------

    def prompt_ids(self, item: Item) -> list[int]:
        if item.input_ids is not None:
            return list(item.input_ids)
        assert item.text is not None
        return list(self.rt.tokenizer.encode(item.text, add_special_tokens=False))

    # ---- blocking work (runs on worker threads) ----------------------------------------------

    @staticmethod
    def logprob_kwargs(item: Item) -> dict[str, Any]:
        """The item's request-level logprob fields for ``rt.generate`` (see ``sgnb.core.logprobs``); none unless asked."""
        if not item.return_logprob:
            return {}
        return {
            "return_logprob": True,
            "logprob_start_len": item.logprob_start_len,
            "top_logprobs_num": item.top_logprobs_num,
            "token_ids_logprob": item.token_ids_logprob,
            "return_text_in_logprobs": item.text_in_logprobs,
        }

    def validate(self, item: Item) -> None:
        """Everything the runtime checks before compute, without submitting anything."""
        params = dict(item.params)
        self.rt.make_request(
            item.text, input_ids=item.input_ids, sampling_params=params, **self.logprob_kwargs(item)
        )

    def _generate(self, item: Item, rid: str) -> Any:
        """One result, or a list of ``n`` for ``n > 1`` (the copies' rids are ``{rid}_{i}``).
        ``max_new_tokens: 0`` is the runtime's own prefill-only request, prompt logprobs included."""
        out = self.rt.generate(
            item.text, item.params, input_ids=item.input_ids, rid=rid, **self.logprob_kwargs(item)
        )
        if isinstance(out, list):
            return out
        return self._finish(item, dict(out))

    def _finish(self, item: Item, out: dict[str, Any]) -> dict[str, Any]:
        meta = out["meta_info"]
        if item.rid:
            meta["id"] = item.rid
        return out

    # ---- async API ---------------------------------------------------------------------------

    async def generate(self, item: Item, is_disconnected: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Run one request to its end. If ``is_disconnected`` (Starlette's ``request.is_disconnected``)
        turns true first, abort the request (its KV is freed) and raise ValueError, as SGLang does."""
        rid = item.rid or uuid.uuid4().hex
        self.inflight += 1
        try:
            job = asyncio.ensure_future(self.call(self._generate, item, rid))
            while True:
                done, _ = await asyncio.wait({job}, timeout=DISCONNECT_POLL_S)
                if done:
                    return job.result()
                if is_disconnected is not None and await is_disconnected():
                    self.rt.abort(rid)
                    await asyncio.wait({job})  # the runtime retires it at its next step
                    raise ValueError(f"Request is disconnected from the client side. Abort request {rid}")
        except asyncio.CancelledError:
            self.rt.abort(rid)
            raise
        finally:
            self.inflight -= 1

    async def generate_batch(self, items: list[Item]) -> list[Any]:
        for item in items:  # all or nothing: refuse a batch with one bad prompt before any compute
            await self.call(self.validate, item)
        return list(await asyncio.gather(*(self.generate(item) for item in items)))

    async def open_stream(self, item: Item) -> AsyncGenerator[dict[str, Any], None]:
        """Submit ``item`` and return its chunks (cumulative, like ``LocalRuntime.generate(stream=True)``).

        Raises ValueError here, before any compute; the last chunk has a ``finish_reason``.
        """
        if item.prefill_only:
            return _once(await self.generate(item))
        chunks = await self.call(
            self.rt.generate,
            item.text,
            item.params,
            input_ids=item.input_ids,
            stream=True,
            **self.logprob_kwargs(item),
            rid=item.rid or uuid.uuid4().hex,
        )
        return self._pump(item, chunks)

    async def open_batch_stream(self, items: list[Item]) -> AsyncGenerator[dict[str, Any], None]:
        """Submit every prompt of a streamed batch at once and return their chunks interleaved as
        they come, each with its ``index`` in the batch's result list: prompt ``i``'s sample ``j`` at
        ``i * n + j`` (``TokenizerManager._handle_batch_request`` lists the rids prompt-major and
        ``_stream_batch_responses`` sets ``index`` from that list).

        All prompts are checked before any is submitted (ValueError here, as :meth:`generate_batch`);
        they are submitted together, so the scheduler runs them in one batch.
        """
        for item in items:
            await self.call(self.validate, item)
        n = parallel_n(items[0]) if items else 1
        # each item's rid now, so a failure to open one can abort those already submitted
        items = [replace(item, rid=item.rid or uuid.uuid4().hex) for item in items]
        opened = await asyncio.gather(*(self.open_stream(item) for item in items), return_exceptions=True)
        failed = next((o for o in opened if isinstance(o, BaseException)), None)
        if failed is not None:
            for item in items:
                self.rt.abort(item.rid)
            raise failed
        return interleave([o for o in opened if not isinstance(o, BaseException)], n)

    async def _pump(self, item: Item, chunks: Any) -> AsyncGenerator[dict[str, Any], None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        gone = threading.Event()

        def put(value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, value)
            except RuntimeError:  # the loop is closed: the server is shutting down
                gone.set()

        def pump() -> None:
            try:
                for chunk in chunks:
                    if gone.is_set():
                        break
                    put(chunk)
            except BaseException as exc:
                put(exc)
            finally:
                chunks.close()  # aborts the request if it is still running
                put(_END)

        self.inflight += 1
        loop.run_in_executor(self.executor, pump)
        last: dict[str, Any] | None = None
        n, ended = parallel_n(item), 0
        try:
            while True:
                value = await queue.get()
                if value is _END:
                    break
                if isinstance(value, BaseException):
                    raise value
                last = value
                if n > 1:  # every choice's chunks, each with its index, until all have ended
                    ended += last["meta_info"].get("finish_reason") is not None
                    yield last
                    if ended == n:
                        return
                    continue
                if last["meta_info"].get("finish_reason") is not None:
                    break
                yield last
            if n > 1:
                raise RuntimeError("the runtime ended the stream without a result")
            if last is None or last["meta_info"].get("finish_reason") is None:
                raise RuntimeError("the runtime ended the stream without a result")
            yield await self.call(self._finish, item, last)
        finally:
            gone.set()
            self.inflight -= 1

    def abort(self, rid: str) -> None:
        """``/abort_request {"rid"}``, as ``TokenizerManager.abort_request``: nothing unless a request
        named ``rid`` is waiting or running; then every request whose rid starts with ``rid`` (the
        scheduler's match), so ``{"rid": "job"}`` leaves ``job-1`` alone unless ``job`` runs too."""
        self.rt.abort(rid, if_live=True)

    def abort_all(self) -> None:
        """``/abort_request {"abort_all": true}``: every waiting and running request."""
        self.rt.abort_all()


def parallel_n(item: Item) -> int:
    """The item's ``n`` (parallel samples), as ``GenerateReqInput._handle_parallel_sampling`` reads it."""
    n = item.params.get("n", 1)
    return n if isinstance(n, int) and n > 1 else 1


def fan_out(items: list[Item]) -> int:
    """The request's ``n``. BadRequest when its prompts disagree (SGLang's ValueError in
    ``_handle_parallel_sampling``) or when prompts x n is more sequences than one request may run
    (``MAX_BATCH``, the batch limit: ``n`` makes a batch)."""
    n = parallel_n(items[0]) if items else 1  # an empty batch: SGLang answers [] (no outputs)
    if any(parallel_n(item) != n for item in items):
        raise BadRequest("The parallel_sample_num should be the same for all samples in sample params.")
    if n * len(items) > MAX_BATCH:
        raise BadRequest(
            f"n = {n} for {len(items)} prompt(s) ({n * len(items)} sequences; parallel sampling beyond "
            f"{MAX_BATCH}) is not supported by sgnb serve"
        )
    return n


def flatten(outs: list[Any]) -> list[dict[str, Any]]:
    """Results per prompt (a dict, or a list of ``n``) in SGLang's batch order: each prompt's ``n`` in a row."""
    flat: list[dict[str, Any]] = []
    for out in outs:
        flat.extend(out if isinstance(out, list) else [out])
    return flat


async def _once(value: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    yield value


async def interleave(
    streams: list[AsyncGenerator[dict[str, Any], None]], n: int
) -> AsyncGenerator[dict[str, Any], None]:
    """The chunks of every stream, in the order they come, stream ``i``'s chunk for sample ``j``
    (its ``index``, 0 without one) as ``index`` ``i * n + j``; as SGLang's
    ``TokenizerManager._stream_batch_responses``. Closing it (a client gone) or a stream's error
    closes every stream, which aborts their requests."""
    pending = {asyncio.ensure_future(s.__anext__()): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                i = pending.pop(task)
                try:
                    chunk = task.result()
                except StopAsyncIteration:
                    continue
                yield {**chunk, "index": i * n + int(chunk.get("index", 0))}
                pending[asyncio.ensure_future(streams[i].__anext__())] = i
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
