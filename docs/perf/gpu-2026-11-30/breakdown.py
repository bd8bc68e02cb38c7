"""Issue 13 diagnosis: where do run_batch's seconds go, in-process vs HTTP? (session 6)

python3 diag.py OUT.json [reps]   -- on the GPU machine, PYTHONPATH with the repo and /tmp/site.
For each CUDA-graph setting: an sglang.launch_server (HTTP) and sgnb's engine runtime (KV events on, sgnb's
default), then every variant alternating, `reps` timed runs each after one warm-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import statistics
import sys
import threading
import time
from typing import Any

from sglang.lang.backend.base_backend import BaseBackend

from sgnb.runtimes.backend import SgnbBackend



N, TOK = 256, 32


class Null(BaseBackend):
    def get_model_name(self) -> str:
        return "null"

    def generate(self, s: Any, sampling_params: Any) -> Any:
        return " ok", {}

class Coalesced(SgnbBackend):
    """generate() calls from many threads: one loop wake-up per drain; batched=True sends each drain
    as one batched async_generate, else one task per request."""

    def __init__(self, rt: Any, batched: bool) -> None:
        super().__init__(rt)
        self.batched = batched
        self.lock = threading.Lock()
        self.pending: list[tuple[str, dict[str, Any], concurrent.futures.Future[Any]]] = []
        self.scheduled = False
        self.drains: list[int] = []

    def generate(self, s: Any, sampling_params: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.lock:
            self.pending.append((s.text_, self._params(sampling_params), fut))
            wake = not self.scheduled
            self.scheduled = True
        if wake:
            self.runtime._loop.call_soon_threadsafe(self._drain)
        out = fut.result()
        return out["text"], out["meta_info"]

    def _drain(self) -> None:
        with self.lock:
            items, self.pending, self.scheduled = self.pending, [], False
        self.drains.append(len(items))
        eng = self.runtime.engine
        if self.batched:

            async def go() -> None:
                try:
                    outs = await eng.async_generate(
                        prompt=[t for t, _, _ in items], sampling_params=[p for _, p, _ in items]
                    )
                    for (_, _, f), o in zip(items, outs):
                        f.set_result(o)
                except Exception as exc:
                    for _, _, f in items:
                        f.set_exception(exc)

            asyncio.ensure_future(go())
        else:
            for text, p, f in items:

                async def go1(text: str = text, p: dict[str, Any] = p, f: Any = f) -> None:
                    try:
                        f.set_result(await eng.async_generate(prompt=text, sampling_params=p))
                    except Exception as exc:
                        f.set_exception(exc)

                asyncio.ensure_future(go1())




def main() -> None:
    import requests
    import sglang as sgl
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    from sgnb.bench.engine import ENGINE_OPTIONS, engine_flags, prompts
    from sgnb.net import free_port, wait_for_server
    from sgnb.runtimes.factory import start_runtime
    from sgnb.serve.launch import server_command, start_server, stop_server

    out_path = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    batch = prompts(N)
    params = {"max_new_tokens": TOK, "temperature": 0, "ignore_eos": True}
    args = [{"p": p} for p in batch]

    @sgl.function
    def one(s: Any, p: str) -> None:
        s += p + sgl.gen("out", max_tokens=TOK, temperature=0, ignore_eos=True)

    results: dict[str, Any] = {"n": N, "tokens": TOK, "reps": reps}
    for gname, gopt in [("graphs_on", {}), ("graphs_off", {"disable_cuda_graph": True})]:
        options = {**ENGINE_OPTIONS, **gopt}
        port = free_port()
        server = start_server(server_command("engine", "bundled", port, engine_flags(options)))
        url = f"http://127.0.0.1:{port}"
        res: dict[str, Any] = {}
        try:
            t = time.perf_counter()
            ok, why = wait_for_server(url, 600, process=server.proc, log=server.log_path)
            if not ok:
                raise RuntimeError(why)
            res["server_start_s"] = time.perf_counter() - t
            t = time.perf_counter()
            rt = start_runtime("bundled", "engine", **options)
            res["engine_start_s"] = time.perf_counter() - t
            try:
                endpoint = RuntimeEndpoint(url)
                coal_t, coal_b = Coalesced(rt, False), Coalesced(rt, True)
                session = requests.Session()

                def flush_both() -> None:
                    rt.flush_cache()
                    requests.post(url + "/flush_cache", timeout=60)

                def direct() -> None:
                    rt.generate(batch, params)

                def gather() -> None:
                    async def g() -> Any:
                        return await asyncio.gather(
                            *[rt.engine.async_generate(prompt=p, sampling_params=params) for p in batch]
                        )

                    asyncio.run_coroutine_threadsafe(g(), rt._loop).result()

                def threads_single(k: int = 256) -> Any:
                    def f() -> None:
                        with concurrent.futures.ThreadPoolExecutor(k) as ex:
                            list(ex.map(lambda p: rt.generate(p, params), batch))

                    return f

                def dsl(backend: Any, nt: Any = "auto", switch: float | None = None) -> Any:
                    def f() -> None:
                        old = sys.getswitchinterval()
                        if switch is not None:
                            sys.setswitchinterval(switch)
                        try:
                            states = one.run_batch(args, backend=backend, num_threads=nt)
                        finally:
                            sys.setswitchinterval(old)
                        bad = [s.error() for s in states if s.error() is not None]
                        if bad:
                            raise RuntimeError(str(bad[0]))

                    return f

                def old_call(self: Any, coro: Any) -> Any:  # the product before LoopSubmitter
                    return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

                def dsl_old() -> None:
                    rt._call = old_call.__get__(rt)
                    try:
                        dsl(rt.backend)()
                    finally:
                        del rt._call

                def http_threads() -> None:
                    def post(p: str) -> None:
                        r = requests.post(url + "/generate", json={"text": p, "sampling_params": params}, timeout=600)
                        r.raise_for_status()

                    with concurrent.futures.ThreadPoolExecutor(256) as ex:
                        list(ex.map(post, batch))

                def http_batch() -> None:
                    r = session.post(url + "/generate", json={"text": batch, "sampling_params": params}, timeout=600)
                    r.raise_for_status()

                variants = {
                    "direct_batch": direct,
                    "gather_singles_on_loop": gather,
                    "threads256_single": threads_single(256),
                    "dsl_sgnb": dsl(rt.backend),
                    "dsl_sgnb_old_call": dsl_old,
                    "dsl_sgnb_64threads": dsl(rt.backend, 64),
                    "dsl_sgnb_switch_0.5ms": dsl(rt.backend, "auto", 0.0005),
                    "dsl_sgnb_switch_50ms": dsl(rt.backend, "auto", 0.05),
                    "dsl_coalesced_tasks": dsl(coal_t),
                    "dsl_coalesced_batch": dsl(coal_b),
                    "dsl_null_backend": dsl(Null()),
                    "dsl_runtime_endpoint": dsl(endpoint),
                    "http_threads256_post": http_threads,
                    "http_one_batch": http_batch,
                }
                times: dict[str, list[float]] = {k: [] for k in variants}
                for rep in range(reps + 1):
                    for name, fn in variants.items():
                        flush_both()
                        t = time.perf_counter()
                        try:
                            fn()
                        except Exception as exc:  # record, go on
                            res.setdefault("errors", {})[name] = str(exc)[:300]
                            continue
                        dt = time.perf_counter() - t
                        if rep:
                            times[name].append(dt)
                    print(gname, "rep", rep, "done", flush=True)
                res["median_s"] = {k: statistics.median(v) for k, v in times.items() if v}
                res["runs_s"] = times
                res["coalesced_drain_sizes"] = {
                    "tasks": coal_t.drains[:40],
                    "batch": coal_b.drains[:40],
                }
            finally:
                rt.stop()
        finally:
            stop_server(server)
        results[gname] = res
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
        print(json.dumps({gname: res["median_s"]}, indent=1), flush=True)


if __name__ == "__main__":
    main()
