"""How many threads the scheduler's decode steps use (``pick_decode_threads``), re-picked while it runs."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

REPICK_THREADS_S = 20.0  # between checks of pick_decode_threads, made at a decode step (~30 ms each)


def pick_decode_threads(threads: int, probe: Callable[[], object]) -> int:
    """How many threads a decode-only step should use: all of them, or one, whichever is faster here.

    A decode step is a few hundred small memory-bound products, one OpenMP region each. Once the
    notebook's main thread has its own OpenMP team (any large torch op there), this thread's team
    gets slow between regions; our reading is libgomp's throttled spinning, which lets workers
    spin only while it manages no more threads than there are cores. Measured on 2 cores, one
    decode step: 25 ms on 2 threads before the main thread had a team, 38 ms on 2 threads after,
    32 ms on one thread either way. So time ``probe`` (a slice of a real decode
    step, see ``LocalModel.probe``) both ways and keep the faster; the scheduler asks again every
    REPICK_THREADS_S. Prefill is compute-bound and always uses every thread (500 tokens: 0.46 s on
    2 threads, 0.82 s on one).
    """
    if threads == 1:
        return 1

    def cost(n: int) -> float:
        torch.set_num_threads(n)
        probe()  # warm: a first call may build kernels
        times = []
        for _ in range(2):
            start = time.perf_counter()
            probe()
            times.append(time.perf_counter() - start)
        return min(times)

    try:
        best = min((cost(threads), threads), (cost(1), 1))[1]
    finally:
        torch.set_num_threads(threads)
    return best
