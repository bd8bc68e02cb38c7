"""``python -m sgnb.bench --json``: the notebook workloads, measured side by side in one run.

Figures are ratios against a baseline taken in the same process (a plain transformers decode
loop, the cache flushed, the radix cache off), because these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from sgnb.bench import peer as bench_peer
from sgnb.bench import workloads
from sgnb.bench.workloads import (
    BATCH_MESSAGES,
    DECODE_MESSAGES,
    DECODE_TOKENS,
    JSON_MESSAGES,
    JSON_SCHEMA,
    PREFIX_TOKENS,
    QUESTION,
    STORY,
    SUFFIX_TOKENS,
    TURN_TOKENS,
    TURNS,
    Timed,
    load_average,
    median,
    print_figures,
    seconds_since_exec,
)
from sgnb.runtimes.local import LocalRuntime

__all__ = ["JSON_SCHEMA", "QUESTION", "STORY", "engine_round", "main", "quick_bench", "run"]


class TimedRuntime:
    """A runtime as a :class:`~sgnb.bench.workloads.BenchEngine`: greedy requests timed by the
    runtime's own ``meta_info`` (``ttft``, ``e2e_latency``); several prompts run on a thread each."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.json_params = {"json_schema": json.dumps(JSON_SCHEMA)}

    def chat(self, messages: list[dict[str, str]]) -> str:
        return str(self.rt.apply_chat_template(messages))

    def encode(self, text: str) -> list[int]:
        return list(self.rt.tokenizer.encode(text))

    def reset_cache(self) -> None:
        self.rt.flush_cache()

    def run(
        self, prompts: Sequence[str | list[int]], max_tokens: int, **params: Any
    ) -> tuple[float, list[Timed]]:
        def one(prompt: str | list[int]) -> Timed:
            text, ids = (prompt, None) if isinstance(prompt, str) else (None, list(prompt))
            out = self.rt.generate(text, input_ids=ids, max_new_tokens=max_tokens, temperature=0, **params)
            m = out["meta_info"]
            # SGLang's non-streamed meta_info has no ttft (the tutorials wrap such runtimes to stream).
            ttft = float(m.get("ttft", math.nan))
            return Timed(ttft, float(m["e2e_latency"]), int(m["completion_tokens"]), out["text"])

        start = time.perf_counter()
        if len(prompts) == 1:
            timed = [one(prompts[0])]
        else:
            with ThreadPoolExecutor(len(prompts)) as pool:
                timed = list(pool.map(one, prompts))
        return time.perf_counter() - start, timed


# The measurements of sgnb.bench.workloads on a runtime (the tutorials call these).


def decode_rate(rt: Any, prompt: str, n: int = DECODE_TOKENS) -> float:
    return workloads.decode_rate(TimedRuntime(rt), prompt, n)


def per_token_time(rt: Any, prompt: str, n: int, **params: Any) -> float:
    return workloads.per_token_time(TimedRuntime(rt), prompt, n, **params)


def concurrent_rate(rt: Any, prompts: list[str], n: int = DECODE_TOKENS) -> float:
    return workloads.concurrent_rate(TimedRuntime(rt), prompts, n)


def prefix_ttft(
    rt: Any, prefix_tokens: int = PREFIX_TOKENS, suffix_tokens: int = SUFFIX_TOKENS
) -> tuple[float, float]:
    return workloads.prefix_ttft(TimedRuntime(rt), prefix_tokens, suffix_tokens)


def multiturn(rt: Any, turns: int = TURNS, new_tokens: int = TURN_TOKENS) -> float:
    return workloads.multiturn(TimedRuntime(rt), turns, new_tokens)


def hf_decode_rate(rt: Any, prompt: str, n: int = DECODE_TOKENS) -> Callable[[], float]:
    """A plain transformers loop (DynamicCache, SDPA), same weights and dtype: the baseline."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(rt.model_path, dtype=rt.model.dtype).eval()
    ids = torch.tensor([rt.tokenizer.encode(prompt)])

    @torch.inference_mode()
    def run() -> float:
        out = hf(ids, use_cache=True)
        past, tok = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        start = time.perf_counter()
        for _ in range(n - 1):
            out = hf(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        return (n - 1) / (time.perf_counter() - start)

    return run


def run(model: str = "bundled", rounds: int = 3, quick: bool = False) -> dict[str, Any]:
    n = 32 if quick else DECODE_TOKENS
    rt = LocalRuntime(model)
    results: dict[str, Any] = {"model": model, "dtype": rt.options["dtype"], "threads": rt.options["threads"]}
    try:
        prompt = rt.apply_chat_template(DECODE_MESSAGES)
        decode_rate(rt, prompt, 8)  # warm-up
        hf = hf_decode_rate(rt, prompt, n)
        hf()
        ours, theirs = [], []
        for _ in range(rounds):  # alternate, so drift in machine load hits both alike
            ours.append(decode_rate(rt, prompt, n))
            theirs.append(hf())
        results["decode_tok_s_1"] = statistics.median(ours)
        results["hf_decode_tok_s_1"] = statistics.median(theirs)
        prompts = [rt.apply_chat_template(m) for m in BATCH_MESSAGES]
        results["decode_tok_s_8"] = median(lambda: concurrent_rate(rt, prompts, n), rounds)
        ttfts = [prefix_ttft(rt) for _ in range(rounds)]
        results["prefix_ttft_cold_s"] = statistics.median(c for c, _ in ttfts)
        results["prefix_ttft_s"] = statistics.median(w for _, w in ttfts)
        results["prefix_ttft_speedup"] = results["prefix_ttft_cold_s"] / results["prefix_ttft_s"]
        free = [per_token_time(rt, prompt, n, ignore_eos=True) for _ in range(rounds)]
        json_prompt = rt.apply_chat_template(JSON_MESSAGES)
        constrained = [
            per_token_time(rt, json_prompt, n, json_schema=json.dumps(JSON_SCHEMA)) for _ in range(rounds)
        ]
        results["constrained_overhead"] = statistics.median(constrained) / statistics.median(free) - 1
        results["multiturn_s"] = median(lambda: multiturn(rt), 1 if quick else rounds)
        from sgnb.bench.serve_overhead import measure_serve_overhead

        results["serve_overhead"] = measure_serve_overhead(runtime=rt)
    finally:
        rt.stop()
    off = LocalRuntime(model, disable_radix_cache=True)
    try:
        results["multiturn_nocache_s"] = median(lambda: multiturn(off), 1 if quick else rounds)
    finally:
        off.stop()
    results["multiturn_speedup"] = results["multiturn_nocache_s"] / results["multiturn_s"]
    results["decode_ratio_vs_hf"] = results["decode_tok_s_1"] / results["hf_decode_tok_s_1"]
    results["batch_scaling_8"] = results["decode_tok_s_8"] / results["decode_tok_s_1"]
    return results


def quick_bench(rt: Any, progress: Any = None) -> dict[str, Any]:
    """A short benchmark of a running runtime (``%sglang bench``); flushes its cache.

    ``progress(done, total, next_step)`` is called before each step and at the end (``%sglang
    bench`` draws a bar with it and removes it when the table is shown); without it, a tqdm bar.
    """
    from tqdm.auto import tqdm

    steps = ("one-stream decode", "8-stream decode", "first token with and without a cached prefix")
    bar = tqdm(total=len(steps), desc="sgnb bench") if progress is None else None

    def step(done: int) -> None:
        if progress is not None:
            progress(done, len(steps), steps[done] if done < len(steps) else "done")
        elif done:
            assert bar is not None
            bar.update()

    prompt = rt.apply_chat_template(DECODE_MESSAGES)
    prompts = [rt.apply_chat_template(m) for m in BATCH_MESSAGES]
    figures: dict[str, Any] = {"runtime": rt.kind, "model": rt.model_name}
    step(0)
    figures["decode_tok_s_1"] = decode_rate(rt, prompt, 32)
    step(1)
    figures["decode_tok_s_8"] = concurrent_rate(rt, prompts, 32)
    step(2)
    cold, warm = prefix_ttft(rt)
    figures.update(prefix_ttft_cold_s=cold, prefix_ttft_s=warm, prefix_ttft_speedup=cold / warm)
    step(3)
    if bar is not None:
        bar.close()
    return figures


# ---- one sgnb round of the side-by-side run (``--peer``, see sgnb.bench.peer) ----------------------


def engine_round(
    model: str = "bundled",
    reps: int = 2,
    quick: bool = False,
    nocache: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """The peer workloads on sgnb's local runtime, in a fresh process (as ``sgnb.bench.peer_vllm`` does vLLM's)."""
    load_start = load_average()
    n = 32 if quick else DECODE_TOKENS
    options: dict[str, Any] = {} if threads is None else {"threads": threads}
    rt = LocalRuntime(model, **options)
    r: dict[str, Any] = {"engine": "sgnb", "startup_s": seconds_since_exec()}
    try:
        r.update(workloads.peer_round(TimedRuntime(rt), n, reps))
        r["threads"] = rt.options["threads"]
    finally:
        rt.stop()
    if nocache:
        off = LocalRuntime(model, disable_radix_cache=True, **options)
        try:
            r["multiturn_nocache_s"] = median(lambda: multiturn(off), reps)
        finally:
            off.stop()
    else:
        r["multiturn_nocache_s"] = None
    import transformers

    r["load_avg_start"] = load_start
    r["load_avg_end"] = load_average()
    r["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return r


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--workload", choices=["notebook", "router"], default="notebook")
    if pre.parse_known_args(argv)[0].workload == "router":  # sgnb.bench.router: the router's policies
        from sgnb.bench.router import main as router_main

        return router_main(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m sgnb.bench", description=__doc__)
    parser.add_argument(
        "--workload",
        choices=["notebook", "router"],
        default="notebook",
        help="router: the router's policies over two workers (python -m sgnb.bench --workload router -h)",
    )
    parser.add_argument("--model", default="bundled")
    parser.add_argument(
        "--runtime",
        choices=["engine", "local"],
        help="what an in-process runtime costs (sgnb.bench.engine): dsl_overhead, runtime_endpoint_speedup, "
        "watch_overhead, engine_start_s; engine needs a GPU",
    )
    parser.add_argument("--requests", type=int, default=None, help="with --runtime: requests per batch")
    parser.add_argument("--no-graphs", dest="graphs", action="store_false", help="with --runtime engine")
    parser.add_argument("--no-endpoint", dest="endpoint", action="store_false", help="with --runtime")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="with --runtime engine: measure the overheads with CUDA graphs on (default: off on both sides)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="repetitions (default 3; 5 with --runtime)")
    parser.add_argument(
        "--quick", action="store_true", help="32 new tokens instead of 128, one multiturn round"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--peer",
        choices=["vllm"],
        help="side by side with a peer engine in .venv-peer (`make peer`): fresh-process rounds, alternating",
    )
    parser.add_argument("--reps", type=int, default=2, help="with --peer: repetitions inside each round")
    parser.add_argument(
        "--no-nocache", dest="nocache", action="store_false", help="with --peer: skip multiturn_nocache_s"
    )
    parser.add_argument("--enforce-eager", action="store_true", help="with --peer vllm: no torch.compile")
    parser.add_argument("--log", default=None, help="with --peer: where the rounds' stderr goes")
    parser.add_argument(
        "--sgnb-threads",
        type=int,
        default=None,
        help="with --peer: sgnb's torch threads (default: all cores)",
    )
    # One sgnb round in this (fresh) process, printed as JSON: what --peer runs on sgnb's side.
    parser.add_argument("--engine-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_round:
        result = engine_round(args.model, args.reps, args.quick, args.nocache, args.sgnb_threads)
        print(json.dumps(result), flush=True)
        return 0
    if args.peer:
        try:
            results = bench_peer.peer_run(
                args.peer,
                args.model,
                args.rounds,
                args.reps,
                args.quick,
                args.nocache,
                args.enforce_eager,
                args.log,
                args.sgnb_threads,
            )
        except bench_peer.PeerMissingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(results))
        else:
            bench_peer.print_table(results, args.peer)
        return 0
    if args.runtime:
        from sgnb.bench.engine import PROMPTS, run_engine_bench

        figures = run_engine_bench(
            args.runtime,
            args.model,
            args.rounds or 5,
            args.requests or (PROMPTS if args.runtime == "engine" else 8),
            args.graphs,
            args.endpoint,
            args.cuda_graph,
        )
        print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))
        return 0
    print_figures(run(args.model, args.rounds or 3, args.quick), args.json)
    return 0
