"""The bridge between async request handlers and the blocking local runtime.

Every runtime call runs on a worker thread, so the event loop keeps serving while requests
wait for the scheduler. A stream is pumped by one worker thread into an asyncio queue; when the
consumer goes away (the client disconnected) the pump closes the runtime's iterator, which
aborts the request at the scheduler's next step.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sgnb.serve.schemas import Item

T = TypeVar("T")
_END = object()


class Engine:
    """Async face of a LocalRuntime (or anything with its ``generate``/``score`` API)."""

    def __init__(self, runtime: Any, max_workers: int = 512) -> None:
        self.rt = runtime
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sgnb-serve")
        self.inflight = 0
        self.streams: dict[str, str] = {}  # client rid -> runtime rid, for /abort_request
        self._decode_cache: dict[int, str] = {}

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

    def token_text(self, token: int) -> str:
        text = self._decode_cache.get(token)
        if text is None:
            text = str(self.rt.tokenizer.decode([token]))
            if len(self._decode_cache) < 200_000:
                self._decode_cache[token] = text
        return text

    def _entries(self, values: list[float | None], ids: list[int], with_text: bool) -> list[list[Any]]:
        return [[v, t, self.token_text(t) if with_text else None] for v, t in zip(values, ids, strict=True)]

    # ---- blocking work (runs on worker threads) ----------------------------------------------

    def validate(self, item: Item) -> None:
        """Everything the runtime checks before compute, without submitting anything."""
        params = {**item.params, "max_new_tokens": max(1, int(item.params.get("max_new_tokens", 1)))}
        self.rt.make_request(item.text, input_ids=item.input_ids, sampling_params=params)
        if item.return_logprob and item.logprob_start_len >= len(self.prompt_ids(item)):
            raise ValueError(
                f"logprob_start_len ({item.logprob_start_len}) must be less than the prompt length "
                f"({len(self.prompt_ids(item))} tokens)"
            )

    def _logprobs(self, item: Item, ids: list[int], output_ids: list[int]) -> dict[str, Any]:
        """SGLang's ``input_token_logprobs`` / ``output_token_logprobs``: ``[logprob, id, text]``.

        The first prompt entry has no logprob (None), as in SGLang; ``logprob_start_len`` -1 means
        output tokens only.
        """
        start = item.logprob_start_len
        first = len(ids) if start < 0 else start + 1  # the first position that gets a logprob
        continuation = ids[first:] + output_ids
        values = self.rt.score(ids[:first], continuation) if continuation else []
        n_in = len(ids) - first
        input_entries = (
            [] if start < 0 else self._entries([None, *values[:n_in]], ids[start:], item.text_in_logprobs)
        )
        return {
            "input_token_logprobs": input_entries,
            "output_token_logprobs": self._entries(list(values[n_in:]), output_ids, item.text_in_logprobs),
        }

    def _prefill_only(self, item: Item) -> dict[str, Any]:
        """``max_new_tokens: 0``: prefill (caching the prompt) and return no text, as SGLang."""
        started = time.perf_counter()
        self.validate(item)
        ids = self.prompt_ids(item)
        meta: dict[str, Any] = {"id": item.rid or uuid.uuid4().hex, "cached_tokens": 0}
        if item.return_logprob:
            meta.update(self._logprobs(item, ids, []))
        else:
            params = {**item.params, "max_new_tokens": 1, "temperature": 0.0}
            params.pop("min_new_tokens", None)
            for key in ("regex", "json_schema", "ebnf"):
                params.pop(key, None)
            out = self.rt.generate(input_ids=ids, sampling_params=params)
            meta["cached_tokens"] = out["meta_info"].get("cached_tokens", 0)
        meta.update(
            prompt_tokens=len(ids),
            completion_tokens=0,
            finish_reason={"type": "length", "length": 0},
            e2e_latency=time.perf_counter() - started,
        )
        return {"text": "", "output_ids": [], "meta_info": meta}

    def _generate(self, item: Item) -> dict[str, Any]:
        if item.prefill_only:
            return self._prefill_only(item)
        if item.return_logprob:
            self.validate(item)
        out = dict(self.rt.generate(item.text, item.params, input_ids=item.input_ids))
        return self._finish(item, out)

    def _finish(self, item: Item, out: dict[str, Any]) -> dict[str, Any]:
        meta = out["meta_info"]
        if item.rid:
            meta["id"] = item.rid
        if item.return_logprob:
            meta.update(self._logprobs(item, self.prompt_ids(item), list(out["output_ids"])))
        return out

    # ---- async API ---------------------------------------------------------------------------

    async def generate(self, item: Item) -> dict[str, Any]:
        self.inflight += 1
        try:
            return await self.call(self._generate, item)
        finally:
            self.inflight -= 1

    async def generate_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        for item in items:  # all or nothing: refuse a batch with one bad prompt before any compute
            await self.call(self.validate, item)
        return list(await asyncio.gather(*(self.generate(item) for item in items)))

    async def open_stream(self, item: Item) -> AsyncGenerator[dict[str, Any], None]:
        """Submit ``item`` and return its chunks (cumulative, like ``LocalRuntime.generate(stream=True)``).

        Raises ValueError here, before any compute; the last chunk has a ``finish_reason``.
        """
        if item.prefill_only:
            return _once(await self.generate(item))
        if item.return_logprob:
            await self.call(self.validate, item)
        chunks = await self.call(
            self.rt.generate, item.text, item.params, input_ids=item.input_ids, stream=True
        )
        return self._pump(item, chunks)

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
        try:
            while True:
                value = await queue.get()
                if value is _END:
                    break
                if isinstance(value, BaseException):
                    raise value
                last = value
                if item.rid:
                    self.streams[item.rid] = last["meta_info"]["id"]
                    last["meta_info"]["id"] = item.rid
                if last["meta_info"].get("finish_reason") is not None:
                    break
                yield last
            if last is None or last["meta_info"].get("finish_reason") is None:
                raise RuntimeError("the runtime ended the stream without a result")
            yield await self.call(self._finish, item, last)
        finally:
            gone.set()
            self.inflight -= 1
            if item.rid:
                self.streams.pop(item.rid, None)

    def abort(self, rid: str) -> None:
        self.rt.abort(self.streams.get(rid, rid))


async def _once(value: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    yield value


def stable_text(text: str, stop: Any = None, final: bool = False) -> str:
    """The part of a growing text that can no longer change: held back are a trailing partial
    UTF-8 character and as much as a stop string could still match (it is cut when it does)."""
    if final:
        return text
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    hold = max((len(s) - 1 for s in stops), default=0)
    if hold > 0:
        text = text[: max(0, len(text) - hold)]
    return text.rstrip("\ufffd")
