"""The views and batch calls on the engine runtime, on a real GPU (``pytest -m gpu``; see test_gpu_engine.py).

What CI checks on the local and remote runtimes, checked on ``sglang.Engine`` itself: the token view's
chips from SGLang's own ``meta_info`` (issue 16), a tree view opened late replaying the Engine's KV
events (issue 17's seam), and a batch ``generate`` as ``Engine.generate`` returns it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_view_from_meta_info
from test_gpu_engine import ENGINE_ARGS, MODEL

pytestmark = pytest.mark.gpu
OUT = Path(os.environ.get("OUT", "/tmp/out"))
PHONE = r"\(\d{3}\) \d{3}-\d{4}"
RESULTS: dict[str, Any] = {}


def _save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu-views.json").write_text(json.dumps(RESULTS, indent=2, default=str))


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from sgnb.runtimes.engine import EngineRuntime

    rt = EngineRuntime(MODEL, **ENGINE_ARGS)
    yield rt
    rt.stop()


def chat(rt: Any, text: str) -> str:
    return str(rt.apply_chat_template([{"role": "user", "content": text}]))


def test_token_view_from_the_engines_meta_info(engine: Any) -> None:
    """Forced ``(`` of a phone regex, exactly ``cached_tokens`` cached chips on a repeat, and each chip's
    probability exp of SGLang's ``output_token_logprobs`` (its top-k: ``output_top_logprobs``)."""
    from sgnb.widgets import TokenView

    prompt = chat(engine, "Give me a phone number.")
    engine.flush_cache()
    first = TokenView.from_request(engine, prompt, regex=PHONE, max_new_tokens=20, temperature=0)
    view = TokenView.from_request(engine, prompt, regex=PHONE, max_new_tokens=20, temperature=0)
    (row,) = view.rows
    meta = view.result["meta_info"]
    RESULTS["token_view"] = {
        "text": view.result["text"],
        "counts": row["counts"],
        "cached_tokens": meta["cached_tokens"],
        "first_cached": first.rows[0]["counts"]["cached"],
    }
    _save()
    assert re.fullmatch(PHONE, view.result["text"]), view.result["text"]
    assert_view_from_meta_info(first, view, engine.tokenizer)
    html = view._static_html()
    assert "forced" in html


def test_tree_view_opened_late_replays_the_engine(engine: Any) -> None:
    """A tree mirror built after requests ran holds their prompts (``replay_tree`` from the ledger)."""
    from sgnb.tree.mirror import TreeMirror

    prompt = chat(engine, "Name a river in France.")
    engine.generate(prompt, max_new_tokens=8, temperature=0)
    time.sleep(1.0)  # KV events trail the response
    mirror = TreeMirror(engine)
    ids = engine.tokenizer.encode(prompt)
    paths = [list(p) for p in mirror.snapshot().paths()]
    RESULTS["late_mirror_paths"] = len(paths)
    _save()
    assert any(p[: len(ids) - 1] == ids[:-1] for p in paths), "the late mirror misses the served prompt"
    engine.generate(prompt + " Seine", max_new_tokens=4, temperature=0)
    time.sleep(1.0)
    grown = [list(p) for p in mirror.snapshot().paths()]
    assert any(len(p) > len(ids) for p in grown)  # it follows what runs after it joined
    mirror.detach()


def test_batch_generate_is_engine_generates(engine: Any) -> None:
    """``rt.generate([...])`` on the engine: one ``Engine.async_generate`` batch; equal to one by one
    (greedy); streamed chunks name their output in ``index``; ``n=2`` gives two results per prompt."""
    prompts = ["The capital of France is", "One, two, three,"]
    alone = [engine.generate(p, max_new_tokens=6, temperature=0)["text"] for p in prompts]
    outs = engine.generate(prompts, max_new_tokens=6, temperature=0)
    assert [o["text"] for o in outs] == alone
    last: dict[int, str] = {}
    for chunk in engine.generate(prompts, max_new_tokens=6, temperature=0, stream=True):
        last[chunk["index"]] = chunk["text"]
    assert [last[i] for i in sorted(last)] == alone
    two = engine.generate(prompts, max_new_tokens=4, temperature=1.0, n=2)
    assert len(two) == 4
    one = engine.generate(prompts[0], max_new_tokens=4, temperature=1.0, n=2)
    assert isinstance(one, list) and len(one) == 2
    RESULTS["batch"] = {"alone": alone, "n2": [o["text"] for o in two]}
    _save()


def test_dsl_run_batch_and_program_cell_on_the_engine(engine: Any) -> None:
    """A ``%%sglang`` body through ``sgnb.run_program`` and a ``run_batch`` on the engine's backend."""
    import sglang as sgl

    import sgnb

    sgl.set_default_backend(engine.backend)
    state = sgnb.run_program(
        's += "The capital of France is" + sgl.gen("city", max_tokens=4, temperature=0)\n',
        backend=engine.backend,
    )
    RESULTS["run_program"] = state["city"]
    assert state["city"]

    @sgl.function
    def one(s: Any, p: str) -> None:
        s += p + sgl.gen("out", max_tokens=4, temperature=0)

    states = one.run_batch([{"p": f"Number {i}:"} for i in range(32)])
    assert all(s.error() is None for s in states)
    _save()
