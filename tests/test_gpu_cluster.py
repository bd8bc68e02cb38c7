"""Scale-out on two GPUs (issue 15): ``--tp-size 2``, ``--dp-size 2`` and SGLang's router over two
``sglang.launch_server`` workers, one per GPU. ``pytest -m gpu`` on ``nvidia-h200-x2``; skipped with
fewer than two GPUs. The router (``sglang-router``) is carried as a wheel (see docs/gpu-verification.md).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_gpu_engine import ENGINE_ARGS, MODEL

pytestmark = pytest.mark.gpu
OUT = Path(os.environ.get("OUT", "/tmp/out"))
RESULTS: dict[str, Any] = {}
# tp 2 needs head counts that divide by 2: SmolLM2-135M has 9 heads and 3 KV heads (measured: it
# fails an assertion). A 1B Llama-shaped config.json (hidden 2048, 32 heads, 8 KV heads, 16 layers) beside
# the bundled tokenizer, random weights; docs/gpu-verification.md says how it travels.
TP_MODEL = os.environ.get("SGNB_GPU_TP_MODEL", "/tmp/models/llama-1b-shape")


def _save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu-cluster.json").write_text(json.dumps(RESULTS, indent=2, default=str))


@pytest.fixture(autouse=True)
def two_gpus() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")


def test_tp_size_2(tmp_path: Path) -> None:
    from sgnb.runtimes.factory import start_runtime

    t = time.perf_counter()
    rt = start_runtime(TP_MODEL, "engine", tp_size=2, **{**ENGINE_ARGS, "load_format": "dummy"})
    try:
        start = time.perf_counter() - t
        out = rt.generate("Hello", max_new_tokens=8, temperature=0, ignore_eos=True)
        status = rt.status()
        RESULTS["tp2"] = {
            "start_s": round(start, 1),
            "tokens": out["meta_info"]["completion_tokens"],
            **status,
        }
        _save()
        assert out["meta_info"]["completion_tokens"] == 8
        assert status["tp_size"] == 2
    finally:
        rt.stop()


def test_dp_size_2() -> None:
    from sgnb.runtimes.factory import start_runtime

    t = time.perf_counter()
    rt = start_runtime(MODEL, "engine", dp_size=2, **ENGINE_ARGS)
    try:
        start = time.perf_counter() - t
        prompts = [f"Tell me about the number {i}." for i in range(16)]
        outs = rt.generate(prompts, max_new_tokens=16, temperature=0)
        rt.generate(prompts[0], max_new_tokens=4, temperature=0)
        again = rt.generate(prompts[0], max_new_tokens=4, temperature=0)
        RESULTS["dp2"] = {
            "start_s": round(start, 1),
            "results": len(outs),
            "repeat_cached_tokens": again["meta_info"]["cached_tokens"],
        }
        _save()
        assert len(outs) == 16
        assert again["meta_info"]["cached_tokens"] > 0
    finally:
        rt.stop()


def test_router_over_two_gpu_workers() -> None:
    """The real router over one ``sglang.launch_server`` per GPU: per-worker trees from each worker's KV
    events, requests tagged, the policy comparison, and ``stop()`` leaving no process."""
    import sglang as sgl

    from sgnb.scaleout import cluster
    from sgnb.scaleout.compare import Workload, compare_policies, flat
    from sgnb.scaleout.procs import pids_alive

    t = time.perf_counter()
    c = cluster(
        2,
        "cache_aware",
        MODEL,
        "engine",
        max_total_tokens=1800,
        worker_args=["--disable-cuda-graph", "--mem-fraction-static", "0.3"],
    )
    pids: list[int] = []
    try:
        RESULTS["cluster_start_s"] = round(time.perf_counter() - t, 1)
        pids = sorted(c._pids)
        rt = c.runtime

        @sgl.function
        def qa(s: Any, q: str) -> None:
            s += "Q: " + q + "\nA:" + sgl.gen("a", max_tokens=8, temperature=0)

        states = qa.run_batch([{"q": f"What is {i} + {i}?"} for i in range(8)], backend=rt.backend)
        assert all(s.error() is None for s in states)
        time.sleep(1.0)
        workers = c.workers
        RESULTS["workers"] = [str(w) for w in workers]
        results = compare_policies(c, workload=Workload(requests_per_tenant=3))
        RESULTS["policies"] = flat(results)
        trees = [m.node_count() for m in c.mirrors] if c.mirrors else []
        RESULTS["tree_nodes_per_worker"] = trees
        _save()
        assert all(w.state == "alive" for w in workers)
        assert sum(trees) > 0
        assert results["cache_aware"]["cached_tokens"] >= results["round_robin"]["cached_tokens"]
    finally:
        c.stop()
    time.sleep(2)
    RESULTS["pids_left"] = pids_alive(pids)
    _save()
    assert not pids_alive(pids)
