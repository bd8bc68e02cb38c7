"""``serve_overhead``: what the HTTP layer costs, for ``python -m sgnb.bench``.

The same batch (concurrent requests, greedy, fixed length) runs in-process through
``LocalRuntime.generate`` and through ``sgnb serve``'s ``/generate`` on 127.0.0.1 against the same
runtime; rounds alternate so machine drift hits both alike. The figure is the median over rounds
of in-process throughput over served throughput, minus 1: 0.05 means serving costs 5 %.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any


def _concurrently(jobs: list[Callable[[], int]]) -> float:
    """Run the jobs on one thread each; return generated tokens per second."""
    counts: list[int] = []
    errors: list[BaseException] = []

    def run(job: Callable[[], int]) -> None:
        try:
            counts.append(job())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(jobs)} requests failed: {errors[0]!r}") from errors[0]
    return sum(counts) / elapsed


def measure_serve_overhead(
    model: str = "bundled",
    *,
    runtime: Any = None,
    batch: int = 8,
    max_new_tokens: int = 24,
    rounds: int = 5,
) -> float:
    """In-process tokens/s over served tokens/s for the same batch, minus 1 (lower is better)."""
    import requests

    from sgnb.runtimes.local import LocalRuntime
    from sgnb.serve.app import create_app
    from sgnb.serve.server import ServerThread

    rt = runtime or LocalRuntime(model)
    try:
        prompts = [
            rt.apply_chat_template([{"role": "user", "content": f"Story {i} about a dragon."}])
            for i in range(batch)
        ]
        params = {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True}
        with ServerThread(create_app(rt)) as server:
            url = server.url + "/generate"

            def local(prompt: str) -> Callable[[], int]:
                return lambda: int(rt.generate(prompt, params)["meta_info"]["completion_tokens"])

            def served(prompt: str) -> Callable[[], int]:
                def job() -> int:
                    res = requests.post(url, json={"text": prompt, "sampling_params": params}, timeout=600)
                    res.raise_for_status()
                    return int(res.json()["meta_info"]["completion_tokens"])

                return job

            _concurrently([local(p) for p in prompts])  # warm-up: caches the prompts for both
            _concurrently([served(p) for p in prompts])
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(_concurrently([local(p) for p in prompts]))
                theirs.append(_concurrently([served(p) for p in prompts]))
        # Adjacent runs share the machine's mood: the median of per-round ratios resists noise.
        return statistics.median(a / b for a, b in zip(ours, theirs, strict=True)) - 1
    finally:
        if runtime is None:
            rt.stop()


if __name__ == "__main__":
    print(f"serve_overhead: {measure_serve_overhead():+.3f}")
