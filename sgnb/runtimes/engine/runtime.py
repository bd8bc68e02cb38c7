"""``EngineRuntime``: the real ``sglang.Engine``, in-process, on a GPU.

The Engine's sync API runs ``loop.run_until_complete``, which fails inside Jupyter's running
loop, and ``nest_asyncio`` would patch the whole kernel. So the Engine lives on a dedicated
thread that owns a fresh asyncio loop; every call crosses over with
``asyncio.run_coroutine_threadsafe`` (verified on H100, also under papermill).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sgnb.core.events import EventHub, finished_from_result
from sgnb.core.models import resolve_model
from sgnb.core.params import SamplingParams
from sgnb.core.version_check import installed_sglang
from sgnb.net import free_port
from sgnb.runtimes import options as start_options
from sgnb.runtimes.backend import SgnbBackend
from sgnb.runtimes.base import GenerateReqInput, Runtime, is_batch, one_prompt, params_of
from sgnb.runtimes.engine.start import EngineStartError, engine_loop, start_on_loop
from sgnb.runtimes.kv_subscriber import KVEventsTree, KVEventSubscriber

T = TypeVar("T")
__all__ = ["ENGINE_DEFAULTS", "EngineRuntime", "EngineStartError"]
# Measured on H100 with sglang 0.5.17: triton attention starts without an nvcc JIT (flashinfer's
# first request compiles for ~90 s); the pytorch sampler and xgrammar need no extra kernels.
# CUDA graphs stay SGLang's default (on): measured on an H200 (2026-11-30, warm, sglang 0.5.17) they add
# ~4.5 s to a start (31.9 s vs 27.4 s) and make one stream decode 19x faster (808 vs 43 tok/s) and 64
# streams 15x (35,926 vs 2,388 tok/s); cuda_graph_max_bs_decode=8 kept one stream fast but not 64.
ENGINE_DEFAULTS: dict[str, Any] = {
    "attention_backend": "triton",
    "sampling_backend": "pytorch",
    "grammar_backend": "xgrammar",
    "log_level": "warning",
}


class EngineRuntime(KVEventsTree, Runtime):
    kind = "engine"

    def __init__(
        self,
        model: str = "bundled",
        *,
        max_total_tokens: int | None = None,
        page_size: int | None = None,
        disable_radix_cache: bool = False,
        dtype: str | None = None,
        context_length: int | None = None,
        mem_fraction_static: float | None = None,
        tp_size: int | None = None,
        kv_events: bool = True,
        hub: EventHub | None = None,
        **engine_kwargs: Any,
    ) -> None:
        import sglang as sgl
        import torch

        explicit = {
            "max_total_tokens": max_total_tokens,
            "page_size": page_size,
            "disable_radix_cache": disable_radix_cache,
            "dtype": dtype,
            "context_length": context_length,
            "mem_fraction_static": mem_fraction_static,
            "tp_size": tp_size,
        }
        start_options.check("engine", {**explicit, **engine_kwargs})  # one line, before any process
        if not torch.cuda.is_available():
            raise ValueError("the engine runtime needs a CUDA GPU; use runtime='local' on this machine")
        self.model_name = model
        self.model_path: Path = resolve_model(model)
        self.hub = hub or EventHub()
        self.options: dict[str, Any] = {
            k: v
            for k, v in {**explicit, "disable_radix_cache": disable_radix_cache or None}.items()
            if v is not None
        }
        args = {**ENGINE_DEFAULTS, **self.options, **engine_kwargs, "model_path": str(self.model_path)}
        args["enable_cache_report"] = True
        self._subscriber: KVEventSubscriber | None = None
        if kv_events:  # the tree widget's feed; subscribe before the first request (ZMQ slow joiner)
            port = free_port()
            self._subscriber = KVEventSubscriber(f"tcp://127.0.0.1:{port}", "kv-events", self.hub, bind=True)
            args["kv_events_config"] = json.dumps(
                {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "topic": "kv-events"}
            )
        self._loop = engine_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sgnb-engine-loop", daemon=True)
        self._thread.start()
        started = time.perf_counter()
        self.memory_before = torch.cuda.mem_get_info()
        try:  # a failed start raises EngineStartError here and leaves no process behind
            self.engine = start_on_loop(self._loop, lambda: sgl.Engine(**args))
        except BaseException:
            self._close_loop()
            if self._subscriber is not None:
                self._subscriber.close()
            raise
        self.load_time = time.perf_counter() - started
        self._tokenizer = self.engine.tokenizer_manager.tokenizer
        self._stopped = False
        self._backend: SgnbBackend | None = None
        self._inflight: set[str] = set()

    # ---- plumbing ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        if threading.current_thread() is not threading.main_thread():
            # Other threads (run_batch, fork) block outright: 256 threads polling every 0.1 s each
            # asked for the GIL 2,560 times a second, preempting the loop thread that runs SGLang's
            # tokenizer manager (issue 13's dsl_overhead). Only the main thread sees Ctrl-C.
            return future.result()
        try:
            while True:
                try:
                    return future.result(timeout=0.1)  # short waits keep Ctrl-C responsive
                except concurrent.futures.TimeoutError:
                    continue
        except KeyboardInterrupt:
            future.cancel()
            raise

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def backend(self) -> SgnbBackend:
        if self._backend is None:
            self._backend = SgnbBackend(self)
        return self._backend

    # ---- requests ------------------------------------------------------------------------

    def _generate_request(self, req: GenerateReqInput) -> Any:
        """:meth:`Runtime.generate` on the Engine: one ``Engine.async_generate`` call on its loop.

        A batch (a list of texts or of ``input_ids`` lists) goes to SGLang as one call, as
        ``Engine.generate`` takes it: a list of results back (with ``n > 1``, ``n`` per prompt in
        SGLang's order, ``TokenizerManager._handle_batch_request``), or streamed chunks each naming its
        output in ``"index"``. Ctrl-C or a closed stream aborts the call's requests.
        """
        self._check_running()
        raw, stream = req.sampling_params, req.stream
        batch = is_batch(req)
        if batch:
            prompts: list[Any] = list(req.text if req.text is not None else req.input_ids or [])
            if not prompts:  # SGLang admits a batch of none and answers it with no outputs
                return iter(()) if stream else []
            rid: Any = req.rid if isinstance(req.rid, list) else None
        else:
            text, ids, rid = one_prompt(req)
            prompts = [text if text is not None else ids]
        if any(p is not None and len(p) == 0 for p in prompts):
            raise ValueError("the prompt is empty")
        # The local runtime's one-line ValueErrors for the parameters both know; the Engine
        # judges the rest (it has more, e.g. logit_bias).
        names = SamplingParams.names()
        for one in raw if isinstance(raw, list) else [raw]:
            SamplingParams.from_dict({k: v for k, v in one.items() if k in names})
        stamp = time.monotonic_ns()
        if rid is None:
            rid = [f"sgnb-{stamp}-{i}" for i in range(len(prompts))] if batch else f"sgnb-{stamp}"
        field = "prompt" if req.text is not None else "input_ids"
        request = {field: prompts if batch else prompts[0], "sampling_params": raw, "rid": rid, **req.logprob}
        abort = self._aborter(rid, int(params_of(raw, 0).get("n") or 1))
        started = time.perf_counter()
        if stream:
            return self._stream(request, prompts, started, abort)
        try:
            out: Any = self._call(self.engine.async_generate(**request))
        except KeyboardInterrupt:
            abort()
            raise
        outs = out if isinstance(out, list) else [out]
        n = max(1, len(outs) // len(prompts))
        for i, one in enumerate(outs):
            self._finished(one, prompts[i // n], started, params_of(raw, i // n))
        return out

    def _aborter(self, rid: str | list[str], n: int) -> Callable[[], None]:
        if n > 1:  # SGLang gives each sample a fresh uuid rid (regenerate_rid): ours reach none of them
            return self.abort_all
        rids = rid if isinstance(rid, list) else [rid]

        def abort() -> None:
            for one in rids:
                self.abort(one)

        return abort

    def _stream(
        self, request: dict[str, Any], prompts: list[Any], started: float, abort: Callable[[], None]
    ) -> Iterator[dict[str, Any]]:
        last: dict[int, dict[str, Any]] = {}
        for chunk in self._pump(request, abort):
            last[int(chunk.get("index", 0))] = chunk
            yield chunk
        n = max(1, len(last) // len(prompts))
        for index, out in sorted(last.items()):
            self._finished(
                out,
                prompts[min(index // n, len(prompts) - 1)],
                started,
                params_of(request["sampling_params"], min(index // n, len(prompts) - 1)),
            )

    def _pump(self, request: dict[str, Any], abort: Callable[[], None]) -> Iterator[dict[str, Any]]:
        """``Engine.async_generate(..., stream=True)``'s chunks, read here from the Engine's loop; the
        time to first token added to each (the Engine reports none). Ctrl-C or a closed iterator aborts."""
        chunks: queue.Queue[Any] = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                gen: AsyncIterator[dict[str, Any]] = await self.engine.async_generate(**request, stream=True)
                async for chunk in gen:
                    chunks.put(chunk)
            except Exception as exc:
                chunks.put(exc)
            chunks.put(done)

        started = time.perf_counter()
        asyncio.run_coroutine_threadsafe(pump(), self._loop)
        first: dict[int, float] = {}  # per output: a batch's chunks name theirs in "index"
        try:
            while (item := chunks.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                index = int(item.get("index", 0))
                first.setdefault(index, time.perf_counter() - started)
                item.setdefault("meta_info", {})["ttft"] = first[index]
                yield item
        except (KeyboardInterrupt, GeneratorExit):
            abort()
            raise

    def _finished(self, out: dict[str, Any], prompt: Any, started: float, params: dict[str, Any]) -> None:
        # The tree view's "used by" and the cache panel's prompt text need the ids; the Engine's
        # meta_info does not return them.
        ids = self._tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt or [])
        self.hub.publish(finished_from_result(out, ids, time.perf_counter() - started, params))

    def score(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
        self._check_running()
        if not prompt_ids or not continuation_ids:
            raise ValueError("score needs a non-empty prompt and continuation")
        out = self._call(
            self.engine.async_generate(
                input_ids=list(prompt_ids) + list(continuation_ids),
                sampling_params={"max_new_tokens": 0, "temperature": 0},
                return_logprob=True,
                logprob_start_len=len(prompt_ids) - 1,
            )
        )
        entries = out["meta_info"]["input_token_logprobs"][-len(continuation_ids) :]
        return [float(e[0]) for e in entries]

    def abort(self, rid: str) -> None:
        # abort_request looks up the running loop, so it must run on the Engine's own thread.
        self._loop.call_soon_threadsafe(lambda: self.engine.tokenizer_manager.abort_request(rid=rid))

    def abort_all(self) -> None:
        self._loop.call_soon_threadsafe(lambda: self.engine.tokenizer_manager.abort_request(abort_all=True))

    def flush_cache(self) -> None:
        self._check_running()
        self._call(self.engine.tokenizer_manager.flush_cache())

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(
            self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    def status(self) -> dict[str, Any]:
        import torch

        free, total = torch.cuda.mem_get_info()
        return {
            "runtime": self.kind,
            "model": self.model_name,
            "model_path": str(self.model_path),
            "device": torch.cuda.get_device_name(),
            "state": "stopped" if self._stopped else "running",
            **self.options,
            "gpu_memory_used_gib": round((total - free) / 2**30, 2),
            "kv_events_received": self._subscriber.received if self._subscriber else "off",
            "load_time_s": round(self.load_time, 2),
            "sglang_version": installed_sglang(),
        }

    # ---- lifecycle -----------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError("this runtime is stopped; start a new one")

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def stop(self) -> None:
        """Shut the Engine down and give its GPU memory back (verified within 3 s on H100)."""
        if self._stopped:
            return
        self._stopped = True
        self._close_loop()  # shutdown() works once the loop has stopped
        self.engine.shutdown()
        if self._subscriber is not None:
            self._subscriber.close()
        import torch

        torch.cuda.empty_cache()

    shutdown = stop

    def __repr__(self) -> str:
        return f"<EngineRuntime model={self.model_name!r} {'stopped' if self._stopped else 'running'}>"
