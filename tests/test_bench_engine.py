"""``python -m sgnb.bench --runtime local``: the in-process runtime figures (sgnb.bench.engine) on a CPU.

The engine runtime's run is on the GPU (docs/gpu-verification.md); here the same code on the local
runtime, small, so that its figures are built, named and sane (a time <= 0 is an error, not a figure).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sgnb.bench.engine import alternate, check_times

BENCH = [sys.executable, "-m", "sgnb.bench"]


def test_alternates_after_a_warm_up() -> None:
    calls: list[str] = []
    xs, ys = alternate(lambda: calls.append("a") or 1.0, lambda: calls.append("b") or 2.0, 2)
    assert calls == ["a", "b", "a", "b", "a", "b"] and xs == [1.0, 1.0] and ys == [2.0, 2.0]


def test_a_time_of_zero_or_less_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="broken"):
        check_times("x", [0.5, -0.1])
    check_times("x", [0.5])


def test_local_runtime_figures() -> None:
    proc = subprocess.run(
        [*BENCH, "--runtime", "local", "--rounds", "1", "--requests", "3", "--no-endpoint", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["runtime"] == "local" and figures["start_s"] > 0
    assert (
        figures["dsl"]["requests"] == 3
        and figures["dsl"]["dsl_s"] > 0
        and figures["dsl"]["direct_batch_s"] > 0
    )
    assert figures["dsl_overhead"] == pytest.approx(
        figures["dsl"]["dsl_s"] / figures["dsl"]["direct_batch_s"] - 1
    )
    assert figures["watch"]["tok_s_watched"] > 0 and "watch_overhead" in figures
