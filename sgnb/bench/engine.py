"""``python -m sgnb.bench --runtime engine --json``: what the in-process runtime costs (issue 13).

Each figure is a ratio against a baseline measured in the same run, as medians of ``--reps``
repetitions after a warm-up, the two sides alternating so that drift hits both alike:

- ``dsl_overhead``: 256 short requests (32 new tokens, ``ignore_eos``) through an ``@sgl.function``
  ``run_batch`` on sgnb's backend (SGLang's default ``num_threads``), against the same prompts in one
  batched ``rt.generate`` (for the engine runtime: one ``Engine.async_generate``), minus 1.
- ``runtime_endpoint_speedup``: the same ``run_batch`` on SGLang's own ``RuntimeEndpoint`` over HTTP
  (``sglang.launch_server`` on a GPU, ``sgnb serve`` on a CPU, same model and flags), divided by sgnb's
  in-process time.
- ``watch_overhead``: output tokens/s of a batched decode with KV events subscribed and a live tree
  view and cache panel open, against a runtime started without KV events, minus 1.
- ``engine_start_s``: ``sgnb.start_runtime`` in this fresh process (``import sglang`` included, as in a
  fresh kernel), then ``engine_restart_s`` for a second start, and ``start_s`` per CUDA-graph setting.

On a CPU (``--runtime local``, small sizes) the same code runs; CI runs it that way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from sgnb.net import free_port, wait_for_server

PROMPTS = 256
NEW_TOKENS = 32
WATCH_PROMPTS = 64
WATCH_TOKENS = 128
# The start options of the Engines that measure overheads (the GPU tests' settings): a small KV pool, so
# that a server for the RuntimeEndpoint side fits beside it, and CUDA graphs off on both sides by default
# (a ratio of like with like; a restart 24 s instead of 35 s, H200 2026-11-30); --cuda-graph measures
# with them on. graph_figures measures start and decode speed per graph setting.
ENGINE_OPTIONS: dict[str, Any] = {"max_total_tokens": 20000, "mem_fraction_static": 0.3}
OVERHEAD_OPTIONS: dict[str, Any] = {**ENGINE_OPTIONS, "disable_cuda_graph": True}
# CUDA-graph settings compared by --graphs: sgnb's notebook default (off), a few small batch sizes, SGLang's.
GRAPH_SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"disable_cuda_graph": True},
    "max_bs_decode_8": {"disable_cuda_graph": False, "cuda_graph_max_bs_decode": 8},
    "sglang_default": {"disable_cuda_graph": False},
}


def prompts(n: int = PROMPTS) -> list[str]:
    return [f"Request {i}: write a sentence about the number {i}." for i in range(n)]


def alternate(a: Callable[[], float], b: Callable[[], float], reps: int) -> tuple[list[float], list[float]]:
    """``reps`` timings of each, a then b then a ...; one untimed warm-up of each first."""
    a(), b()
    xs, ys = [], []
    for _ in range(reps):
        xs.append(a())
        ys.append(b())
    return xs, ys


def check_times(name: str, values: list[float]) -> None:
    """A negative or zero time is a bug, not a result."""
    if not values or min(values) <= 0:
        raise RuntimeError(f"{name}: a time <= 0 was measured ({values}); the measurement is broken")


def program() -> Any:
    import sglang as sgl

    @sgl.function
    def one(s: Any, p: str) -> None:
        s += p + sgl.gen("out", max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)

    return one


def timed_run_batch(backend: Any, batch: list[str], num_threads: Any = "auto") -> Callable[[], float]:
    one = program()
    args = [{"p": p} for p in batch]
    flush = getattr(backend, "flush_cache", None)

    def run() -> float:
        if flush is not None:
            flush()
        t = time.perf_counter()
        states = one.run_batch(args, backend=backend, num_threads=num_threads)
        elapsed = time.perf_counter() - t
        bad = [s for s in states if s.error() is not None]
        if bad:
            raise RuntimeError(f"run_batch failed: {bad[0].error()}")
        return elapsed

    return run


def timed_direct(rt: Any, batch: list[str]) -> Callable[[], float]:
    params = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}

    def run() -> float:
        rt.flush_cache()
        t = time.perf_counter()
        outs = rt.generate(batch, params)
        elapsed = time.perf_counter() - t
        if len(outs) != len(batch):
            raise RuntimeError(f"{len(outs)} results for {len(batch)} prompts")
        return elapsed

    return run


def dsl_figures(rt: Any, n: int, reps: int) -> dict[str, Any]:
    batch = prompts(n)
    dsl, direct = alternate(timed_run_batch(rt.backend, batch), timed_direct(rt, batch), reps)
    check_times("dsl", dsl)
    check_times("direct", direct)
    threads64, _ = alternate(timed_run_batch(rt.backend, batch, 64), lambda: 1.0, max(1, reps // 2))
    return {
        "dsl_s": statistics.median(dsl),
        "direct_batch_s": statistics.median(direct),
        "dsl_overhead": statistics.median(dsl) / statistics.median(direct) - 1,
        "dsl_64_threads_s": statistics.median(threads64),
        "dsl_runs_s": dsl,
        "direct_runs_s": direct,
        "requests": n,
        "new_tokens": NEW_TOKENS,
    }


def endpoint_figures(rt: Any, kind: str, model: str, flags: str, n: int, reps: int) -> dict[str, Any]:
    """sgnb's backend in-process against SGLang's ``RuntimeEndpoint`` on a server started here."""
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    from sgnb.serve.launch import server_command, start_server, stop_server

    port = free_port()
    server = start_server(server_command(kind, model, port, flags))
    url = f"http://127.0.0.1:{port}"
    try:
        t = time.perf_counter()
        ready, why = wait_for_server(url, 600, process=server.proc, log=server.log_path)
        if not ready:
            raise RuntimeError(f"the server for RuntimeEndpoint did not start: {why}")
        server_start = time.perf_counter() - t
        endpoint = RuntimeEndpoint(url)
        batch = prompts(n)
        ours, theirs = alternate(timed_run_batch(rt.backend, batch), timed_run_batch(endpoint, batch), reps)
        check_times("sgnb", ours)
        check_times("endpoint", theirs)
    finally:
        stop_server(server)
    return {
        "sgnb_backend_s": statistics.median(ours),
        "runtime_endpoint_s": statistics.median(theirs),
        "runtime_endpoint_speedup": statistics.median(theirs) / statistics.median(ours),
        "endpoint_server_start_s": round(server_start, 1),
    }


def decode_tok_s(rt: Any, n: int, tokens: int) -> Callable[[], float]:
    batch = prompts(n)
    params = {"max_new_tokens": tokens, "temperature": 0, "ignore_eos": True}

    def run() -> float:
        t = time.perf_counter()
        outs = rt.generate(batch, params)
        elapsed = time.perf_counter() - t
        check_times("decode", [elapsed])
        return sum(int(o["meta_info"]["completion_tokens"]) for o in outs) / elapsed

    return run


def watched(rt: Any) -> Callable[[], None]:
    """Open a live tree view and cache panel on ``rt`` (as ``%sglang tree`` / ``stats`` do); close them."""
    from sgnb.widgets import CachePanel, RadixTreeWidget

    tree, panel = RadixTreeWidget(rt), CachePanel(rt)

    def close() -> None:
        tree.close()
        panel.close()

    return close


def run_engine_bench(
    runtime: str = "engine",
    model: str = "bundled",
    reps: int = 5,
    n: int = PROMPTS,
    graphs: bool = True,
    endpoint: bool = True,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """Every figure of this module, in this process (engines one after another: SGLang's
    ``Engine.shutdown`` kills every child process of its caller, so two must never overlap).

    ``cuda_graph=True`` measures the overheads with CUDA graphs on (SGLang's and sgnb's default) on
    both sides instead of off: the GPU's share of each run shrinks ~3x, so fixed costs weigh more."""
    from sgnb.runtimes.factory import start_runtime

    options = (dict(ENGINE_OPTIONS) if cuda_graph else dict(OVERHEAD_OPTIONS)) if runtime == "engine" else {}
    results: dict[str, Any] = {"runtime": runtime, "model": model, "reps": reps, "options": options}
    watch_n, watch_tokens = (WATCH_PROMPTS, WATCH_TOKENS) if runtime == "engine" else (4, 16)

    t = time.perf_counter()
    quiet = start_runtime(model, runtime, kv_events=False, **options) if runtime == "engine" else None
    if quiet is not None:
        results["engine_start_s"] = round(time.perf_counter() - t, 1)
        try:
            off_runs = [decode_tok_s(quiet, watch_n, watch_tokens)() for _ in range(reps + 1)][1:]
            # the same DSL figures without KV events: what the kernel-side subscriber costs them
            results["dsl_without_kv_events"] = dsl_figures(quiet, n, reps)
        finally:
            quiet.stop()
    t = time.perf_counter()
    rt = start_runtime(model, runtime, **options)
    results["engine_restart_s" if quiet is not None else "start_s"] = round(time.perf_counter() - t, 1)
    try:
        close = watched(rt)
        try:
            on_runs = [decode_tok_s(rt, watch_n, watch_tokens)() for _ in range(reps + 1)][1:]
        finally:
            close()
        if quiet is None:  # the local runtime always publishes its tree: compare with no view open
            off_runs = [decode_tok_s(rt, watch_n, watch_tokens)() for _ in range(reps)]
        results["watch"] = {
            "tok_s_watched": statistics.median(on_runs),
            "tok_s_unwatched": statistics.median(off_runs),
            "prompts": watch_n,
            "new_tokens": watch_tokens,
        }
        results["watch_overhead"] = statistics.median(off_runs) / statistics.median(on_runs) - 1
        results["dsl"] = dsl_figures(rt, n, reps)
        results["dsl_overhead"] = results["dsl"]["dsl_overhead"]
        if endpoint:
            flags = engine_flags(options) if runtime == "engine" else ""
            try:
                results["endpoint"] = endpoint_figures(rt, runtime, model, flags, n, reps)
                results["runtime_endpoint_speedup"] = results["endpoint"]["runtime_endpoint_speedup"]
            except RuntimeError as exc:  # the figures above stand; say why this one is missing
                results["endpoint"] = {"error": str(exc).splitlines()[0][:300]}
    finally:
        rt.stop()
    if graphs and runtime == "engine":
        results["cuda_graphs"] = graph_figures(model, reps)
    return results


def engine_flags(options: dict[str, Any]) -> str:
    """``%sglang start`` flags for ``options`` (``sgnb.serve.launch.server_command`` takes them)."""
    from sgnb.runtimes.options import BY_NAME

    flags = []
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags.append(f"--{key.replace('_', '-')} {text}" if key in BY_NAME else f"--engine-arg {key}={text}")
    return " ".join(flags)


def graph_figures(model: str, reps: int) -> dict[str, Any]:
    """Start time and decode speed (1 stream, 64 streams) per CUDA-graph setting."""
    from sgnb.runtimes.factory import start_runtime

    figures: dict[str, Any] = {}
    for name, setting in GRAPH_SETTINGS.items():
        t = time.perf_counter()
        try:  # a setting this SGLang release lacks is a figure of its own, not the end of the run
            rt = start_runtime(model, "engine", kv_events=False, **ENGINE_OPTIONS, **setting)
        except (ValueError, RuntimeError) as exc:
            figures[name] = {"error": str(exc).splitlines()[0][:300]}
            continue
        start = time.perf_counter() - t
        try:  # 3 repetitions after a warm-up: decode speed only decides a default here
            one = [decode_tok_s(rt, 1, WATCH_TOKENS)() for _ in range(4)][1:]
            many = [decode_tok_s(rt, WATCH_PROMPTS, WATCH_TOKENS)() for _ in range(4)][1:]
        finally:
            rt.stop()
        figures[name] = {
            "start_s": round(start, 1),
            "decode_tok_s_1": statistics.median(one),
            "decode_tok_s_64": statistics.median(many),
        }
    return figures
