"""The engine runtime on a real GPU: ``pytest -m gpu`` on the device (see docs/gpu-verification.md).

Weights are random (``load_format="dummy"``: no checkpoint travels to the GPU machine), so the
text is garbage, but cache hits, constrained output, KV events and memory are real.
Results are written to ``$OUT/gpu-results.json`` and the KV-event stream to ``$OUT/kv_events.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.gpu

MODEL = os.environ.get("SGNB_GPU_MODEL", "/tmp/models/smollm2-135m")
ENGINE_ARGS: dict[str, Any] = {"load_format": "dummy", "max_total_tokens": 20000, "mem_fraction_static": 0.3}
OUT = Path(os.environ.get("OUT", "/tmp/out"))
RESULTS: dict[str, Any] = {}


def _save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu-results.json").write_text(json.dumps(RESULTS, indent=2, default=str))


@pytest.fixture(scope="module")
def engine() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from sgnb.events import EventLog
    from sgnb.runtimes.engine import EngineRuntime

    free_before, total = torch.cuda.mem_get_info()
    started = time.perf_counter()
    rt = EngineRuntime(MODEL, **ENGINE_ARGS)
    RESULTS["engine_start_s"] = round(time.perf_counter() - started, 1)
    RESULTS["gpu"] = torch.cuda.get_device_name()
    import sglang

    RESULTS["sglang_version"] = sglang.__version__
    log = EventLog(rt.hub)
    rt.log = log
    yield rt
    rt.stop()
    time.sleep(3)
    free_after, _ = torch.cuda.mem_get_info()
    RESULTS["gpu_mem_delta_after_stop_gib"] = round((free_before - free_after) / 2**30, 3)
    with open(OUT / "kv_events.jsonl", "w") as f:
        for event in log.events:
            f.write(json.dumps({"type": type(event).__name__, **dataclasses.asdict(event)}) + "\n")
    _save()


def test_repeated_prompt_hits_cache(engine: Any) -> None:
    prompt = "The history of the radix tree: " + " ".join(f"word{i}" for i in range(300))
    first = engine.generate(prompt, max_new_tokens=8, temperature=0)
    second = engine.generate(prompt, max_new_tokens=8, temperature=0)
    m = second["meta_info"]
    RESULTS["repeat_prompt"] = {"prompt_tokens": m["prompt_tokens"], "cached_first": first["meta_info"]["cached_tokens"],
                                "cached_second": m["cached_tokens"]}
    _save()
    assert m["cached_tokens"] >= 0.9 * m["prompt_tokens"]


def test_constrained_and_stream_and_score(engine: Any) -> None:
    out = engine.generate("Answer yes or no:", max_new_tokens=8, temperature=1.0, regex="(yes|no)")
    assert re.fullmatch("(yes|no)", out["text"]), out["text"]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    js = engine.generate("JSON:", max_new_tokens=32, temperature=0, json_schema=json.dumps(schema))
    json.loads(js["text"])
    chunks = list(engine.generate("Count:", max_new_tokens=8, temperature=0, ignore_eos=True, stream=True))
    assert len(chunks) >= 2 and chunks[-1]["meta_info"]["completion_tokens"] == 8
    ids = engine.tokenizer.encode("The capital of France is")
    lps = engine.score(ids, engine.tokenizer.encode(" Paris"))
    assert lps and all(lp <= 0 for lp in lps)
    RESULTS["constrained"] = {"regex": out["text"], "json": js["text"], "stream_chunks": len(chunks), "score": lps}
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate("x", max_new_tokens=-1)
    _save()


def test_dsl_on_engine(engine: Any) -> None:
    import sglang as sgl
    from sglang.lang.choices import greedy_token_selection, unconditional_likelihood_normalized

    sgl.set_default_backend(engine.backend)

    @sgl.function
    def program(s: Any) -> None:
        s += "Q: pick a colour. A:" + sgl.select("colour", choices=[" red", " blue", " green"])
        s += " Answer:" + sgl.gen("yn", max_tokens=4, regex="(yes|no)", temperature=0)
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f" Idea {i}:" + sgl.gen("idea", max_tokens=6, temperature=0)
        forks.join()

    state = program.run()
    assert state["colour"] in (" red", " blue", " green")
    assert state["yn"] in ("yes", "no")
    for method in (greedy_token_selection, unconditional_likelihood_normalized):

        @sgl.function
        def pick(s: Any) -> None:
            s += "The sky is" + sgl.select("c", choices=[" blue", " green"], choices_method=method)

        assert pick.run()["c"] in (" blue", " green")
    RESULTS["dsl"] = {"colour": state["colour"], "yn": state["yn"]}
    _save()


def test_dsl_overhead(engine: Any) -> None:
    """256 requests through run_batch on the sgnb backend vs. straight to engine.generate."""
    import asyncio

    import sglang as sgl

    sgl.set_default_backend(engine.backend)
    prompts = [f"Request {i}: write a sentence about the number {i}." for i in range(256)]
    params = {"max_new_tokens": 32, "temperature": 0, "ignore_eos": True}

    @sgl.function
    def one(s: Any, p: str) -> None:
        s += p + sgl.gen("out", max_tokens=32, temperature=0, ignore_eos=True)

    one.run_batch([{"p": p} for p in prompts[:16]], num_threads=64)  # warm-up
    engine.flush_cache()
    t = time.perf_counter()
    one.run_batch([{"p": p} for p in prompts], num_threads=256)
    dsl_s = time.perf_counter() - t
    engine.flush_cache()

    async def direct() -> Any:
        return await engine.engine.async_generate(prompt=prompts, sampling_params=params)

    t = time.perf_counter()
    engine._call(direct())
    direct_s = time.perf_counter() - t
    RESULTS["dsl_overhead"] = {"dsl_s": dsl_s, "direct_s": direct_s, "dsl_overhead": dsl_s / direct_s - 1}
    _save()


def test_kv_events_mirror_prompts(engine: Any) -> None:
    from sgnb.events import BlockStored

    time.sleep(1.0)  # events are published after the scheduler step
    stored = engine.log.of_type(BlockStored)
    assert stored, "no KV events arrived over ZMQ"
    # Rebuild token paths from the parent-linked blocks and check a served prompt is on one.
    parent: dict[int, int | None] = {}
    tokens: dict[int, list[int]] = {}
    for e in stored:
        prev = e.parent_block_hash
        per = max(1, len(e.token_ids) // max(1, len(e.block_hashes)))
        for i, h in enumerate(e.block_hashes):
            parent[h], tokens[h] = prev, e.token_ids[i * per : (i + 1) * per]
            prev = h
    prompt = engine.tokenizer.encode("The capital of France is")
    paths = []
    for h in parent:
        seq: list[int] = []
        node: int | None = h
        while node is not None and node in tokens:
            seq = tokens[node] + seq
            node = parent[node]
        paths.append(seq)
    assert any(p[: len(prompt)] == prompt for p in paths)
    RESULTS["kv_events"] = {"block_stored": len(stored), "received": engine._subscriber.received}
    try:
        from sgnb.tree_mirror import TreeMirror

        mirror = TreeMirror()
        for event in engine.log.events:
            mirror.apply(event)
        RESULTS["kv_events"]["mirror_nodes"] = len(mirror.nodes)
    except ImportError:
        pass
    _save()


def test_restart_and_papermill(engine: Any, tmp_path: Path) -> None:
    """%sglang start --runtime engine in a real kernel, through papermill (after the fixture's engine)."""
    nb = Path(__file__).parent / "notebooks" / "gpu-engine-magics.ipynb"
    out = OUT / "gpu-engine-magics.out.ipynb"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", "-k", "python3", str(nb), str(out), "-p", "MODEL", MODEL],
        capture_output=True, text=True, timeout=400,
    )
    RESULTS["papermill"] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
                            "tail": proc.stderr[-1500:]}
    _save()
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_start_stop_start_memory() -> None:
    torch = pytest.importorskip("torch")
    from sgnb.runtimes.engine import EngineRuntime

    free0, _ = torch.cuda.mem_get_info()
    deltas = []
    for _ in range(2):
        rt = EngineRuntime(MODEL, **ENGINE_ARGS)
        assert rt.generate("hello", max_new_tokens=4, temperature=0)["meta_info"]["completion_tokens"] == 4
        rt.stop()
        time.sleep(3)
        free, _ = torch.cuda.mem_get_info()
        deltas.append(round((free0 - free) / 2**30, 3))
    RESULTS["start_stop_start_mem_delta_gib"] = deltas
    _save()
    assert all(d < 1.0 for d in deltas)


def test_interrupt_then_generate(engine: Any) -> None:
    """Ctrl-C during a generation aborts it; the next request is served."""
    import _thread

    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        engine.generate("Tell me everything.", max_new_tokens=4000, temperature=0, ignore_eos=True)
    out = engine.generate("hello", max_new_tokens=4, temperature=0)
    assert out["meta_info"]["completion_tokens"] == 4
