"""Shared fixtures and helpers for the local-runtime tests.

Two session runtimes are shared by every test file, so the model loads twice per run, not per test:

* ``rt``: ``sgnb.start()`` as a user gets it (bfloat16, radix cache on).
* ``rt32``: the same model in float32, for the claims of *bitwise* equality (cache on vs off,
  eviction, paging, batching). In bfloat16 the result of a prompt depends slightly on how its
  prefill is chunked (a cached prefix + the rest vs the whole prompt in one forward), so greedy
  outputs can flip at near-ties; ``assert_same_or_near_tie`` checks exactly that, and nothing looser.

Comparisons on the bf16 runtime use ``cold()``, which empties the cache first, so both sides
are computed the same way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sgnb
from sgnb.core.events import AllBlocksCleared, BlockRemoved, BlockStored, EventLog, RequestFinished

# A shell that starts a command in the background (`cmd &`, nohup, some CI runners) hands it SIGINT
# and SIGQUIT ignored; then `_thread.interrupt_main()` does nothing and the interrupt tests cannot
# tell a working Ctrl-C from a broken one. A Jupyter kernel always has Python's own SIGINT handler,
# so the tests run with it too, and with SIGQUIT's default action (what a kernel has).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

SYSTEM = "You are a helpful geography tutor. Answer in one short sentence. Be precise and friendly."
FEW_SHOT = [
    ("What is the capital of Italy?", "Rome."),
    ("What is the capital of Spain?", "Madrid."),
]
QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Germany?",
    "Name a large river in Africa.",
    "What ocean lies west of Portugal?",
    "How many continents are there?",
    "What is the tallest mountain?",
    "Which country has the most people?",
    "What is the capital of Japan?",
    "Name a desert in Asia.",
    "What sea is between Europe and Africa?",
    "What is the longest river in Europe?",
    "Where is Mount Kilimanjaro?",
    "What is the capital of Canada?",
    "Which country is shaped like a boot?",
    "What is the largest island?",
    "Name a country in South America.",
    "What is the capital of Egypt?",
    "Which continent is Kenya in?",
    "What is the smallest country?",
    "What river flows through Paris?",
]


# ---- runtimes --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rt() -> Iterator[Any]:
    runtime = sgnb.start()
    yield runtime
    runtime.stop()


@pytest.fixture(scope="session")
def rt32() -> Iterator[Any]:
    runtime = sgnb.start(dtype="float32", max_total_tokens=8192)
    yield runtime
    runtime.stop()


def _runtime_factory() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(**options: Any) -> Any:
        runtime = sgnb.start(**options)
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        runtime.stop()


@pytest.fixture
def make_runtime() -> Iterator[Callable[..., Any]]:
    """Start extra runtimes inside one test; all are stopped when it ends."""
    yield from _runtime_factory()


@pytest.fixture(scope="module")
def make_runtime_module() -> Iterator[Callable[..., Any]]:
    """Extra runtimes shared by one module's tests, stopped at its end."""
    yield from _runtime_factory()


@pytest.fixture(scope="module")
def server(rt: Any) -> Iterator[Any]:
    """``sgnb serve`` (``ServerThread``) on 127.0.0.1 over ``rt`` (the module's own, where it has one)."""
    from sgnb.serve.app import create_app
    from sgnb.serve.server import ServerThread

    with ServerThread(create_app(rt)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[Any]:
    """An ``httpx.Client`` on :func:`server`."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for this interpreter in a private JUPYTER_PATH (nothing global is touched), for
    papermill: the kernel name."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "sgnb-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "sgnb test", "language": "python"})
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root)
    yield "sgnb-test"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture
def events(rt: Any) -> Iterator[EventLog]:
    """Every event ``rt`` publishes during one test."""
    log = EventLog(rt.hub)
    yield log
    assert log.unsubscribe is not None
    log.unsubscribe()


# ---- prompts ---------------------------------------------------------------------------------


def shared_prefix_prompts(runtime: Any, n: int = 20) -> list[str]:
    """``n`` chat prompts sharing a system prompt and a few-shot preamble, then different questions."""
    assert n <= len(QUESTIONS)
    prompts = []
    for question in QUESTIONS[:n]:
        messages = [{"role": "system", "content": SYSTEM}]
        for q, a in FEW_SHOT:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        prompts.append(runtime.apply_chat_template(messages))
    return prompts


def chat(runtime: Any, text: str) -> str:
    return str(runtime.apply_chat_template([{"role": "user", "content": text}]))


# ---- running and checking --------------------------------------------------------------------


def cold(runtime: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Generate from an empty cache, so the prompt is prefilled in one forward."""
    runtime.flush_cache()
    return dict(runtime.generate(*args, **kwargs))


def assert_idle_balanced(runtime: Any) -> dict[str, int]:
    """No request holds a lock, and every used KV slot is accounted for by the radix tree."""
    s = runtime.cache_state()
    assert s["running"] == 0 and s["waiting"] == 0, s
    assert s["protected"] == 0, f"lock refs leaked: {s}"
    assert s["used"] + s["free"] == s["capacity"], s
    assert s["cached"] == s["evictable"], s
    assert s["used"] == s["cached"], f"KV slots leaked or double-counted: {s}"
    assert runtime.scheduler.reserved == 0, f"decode reservations leaked: {runtime.scheduler.reserved}"
    if runtime.cache.disable:
        assert s["used"] == 0, s
    # The tree's own view agrees with the counters.
    tree_tokens = sum(len(node.key) for node in runtime.cache.nodes())
    assert tree_tokens == s["cached"], (tree_tokens, s)
    assert all(node.lock_ref == 0 for node in runtime.cache.nodes())
    return dict(s)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_same_or_near_tie(
    runtime: Any, prompt_ids: list[int], ref: list[int], got: list[int], tol: float = 0.3
) -> bool:
    """``got`` equals ``ref``, or first differs where the two tokens' logprobs are within ``tol``.

    Returns True when the outputs are identical.
    """
    k = first_divergence(ref, got)
    if k is None:
        return True
    assert k < min(len(ref), len(got)), f"same tokens, different lengths: {ref} vs {got}"
    context = list(prompt_ids) + ref[:k]
    runtime.flush_cache()
    lp_ref = runtime.score(context, [ref[k]])[0]
    runtime.flush_cache()
    lp_got = runtime.score(context, [got[k]])[0]
    assert abs(lp_ref - lp_got) < tol, (
        f"outputs diverge at token {k} where it is no near-tie: "
        f"{runtime.tokenizer.decode([ref[k]])!r} {lp_ref:.3f} vs {runtime.tokenizer.decode([got[k]])!r} {lp_got:.3f}"
    )
    return False


class KVMirror:
    """Replays KV events into a set of live block hashes and flags impossible sequences."""

    def __init__(self, runtime: Any) -> None:
        self.live: set[int] = set()
        self.errors: list[str] = []
        self.stored = 0
        self.removed = 0
        self.cleared = 0
        self._lock = threading.Lock()
        self.unsubscribe = runtime.hub.subscribe(self.on_event)

    def on_event(self, event: Any) -> None:
        with self._lock:
            if isinstance(event, BlockStored):
                self.stored += 1
                if event.parent_block_hash is not None and event.parent_block_hash not in self.live:
                    self.errors.append(f"BlockStored with unknown parent {event.parent_block_hash}")
                if len(event.token_ids) != len(event.block_hashes) * event.block_size:
                    self.errors.append(f"BlockStored token/block mismatch: {event}")
                for h in event.block_hashes:
                    if h in self.live:
                        self.errors.append(f"block {h} stored twice")
                    self.live.add(h)
            elif isinstance(event, BlockRemoved):
                self.removed += 1
                for h in event.block_hashes:
                    if h not in self.live:
                        self.errors.append(f"removed unknown block {h}")
                    self.live.discard(h)
            elif isinstance(event, AllBlocksCleared):
                self.cleared += 1
                self.live.clear()

    def assert_matches(self, runtime: Any) -> None:
        tree = [h for node in runtime.cache.nodes() for h in node.hashes]
        assert not self.errors, self.errors[:5]
        assert len(tree) == len(set(tree)), "duplicate block hashes in the tree"
        assert self.live == set(tree)


def finished(prompt: list[int], output: list[int], rid: str = "r", cached: int = 0) -> RequestFinished:
    """A ``RequestFinished`` as a runtime publishes it for ``prompt`` -> ``output`` (token ids)."""
    return RequestFinished(
        rid=rid,
        prompt_tokens=len(prompt),
        cached_tokens=cached,
        completion_tokens=len(output),
        ttft=0.01,
        e2e_latency=0.02,
        finish_reason=None,
        prompt_ids=prompt,
        output_ids=output,
    )


def finished_events(log: EventLog) -> list[RequestFinished]:
    return list(log.of_type(RequestFinished))


def assert_view_from_meta_info(first: Any, view: Any, tokenizer: Any) -> None:
    """A phone-regex token view built from SGLang's ``meta_info`` only (the engine and HTTP runtimes),
    ``first`` the prompt's first run: none cached then, exactly ``cached_tokens`` cached chips now (first
    in the prompt), ``(`` forced, and each chip's probability exp of ``output_token_logprobs`` and its
    top-k ``output_top_logprobs`` (masked tokens, -inf clamped to float32's lowest, hidden)."""
    import math

    (row,) = view.rows
    meta = view.result["meta_info"]
    assert first.rows[0]["counts"]["cached"] == 0
    assert row["counts"]["cached"] == meta["cached_tokens"] > 0
    assert [c["k"] for c in row["prompt"]][: meta["cached_tokens"]] == ["cached"] * meta["cached_tokens"]
    assert row["out"][0]["t"] == "(" and row["out"][0]["k"] == "forced"
    entries, tops = meta["output_token_logprobs"], meta["output_top_logprobs"]
    assert len(row["out"]) == len(entries) == meta["completion_tokens"]
    for chip, (lp, token, _), top in zip(row["out"], entries, tops, strict=True):
        assert chip["t"] == tokenizer.decode([token])
        assert chip["p"] == pytest.approx(math.exp(lp), rel=1e-5, abs=1e-9)
        assert [p for _, p in chip["top"]] == pytest.approx(
            [math.exp(v) for v, _, _ in top if v > -1e30], rel=1e-5, abs=1e-9
        )
        assert "unc" not in chip  # SGLang returns the masked distribution only
