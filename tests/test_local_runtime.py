"""The local runtime end to end: the radix cache changes nothing but speed, streaming, abort, score."""

from __future__ import annotations

import itertools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import (
    KVMirror,
    assert_idle_balanced,
    assert_same_or_near_tie,
    chat,
    cold,
    shared_prefix_prompts,
)

from sgnb.core.events import BlockRemoved, BlockStored, EventLog, block_hashes

MAX_NEW = 16
# All 20 prompts compare cache on vs off. The eviction and paging runs, to stay short (a float32
# request costs ~1-3 s on 2 busy cores), take fewer prompts and SHORT_NEW tokens, and compare
# with the first SHORT_NEW reference tokens (greedy: a shorter run is a prefix of a longer one).
N_TINY = 12
N_PAGED = 10
SHORT_NEW = 8


def run_sequential(runtime: Any, prompts: list[str], max_new_tokens: int = MAX_NEW) -> list[dict[str, Any]]:
    """Greedy, one request at a time; after each one no lock is held and the KV books balance."""
    results = []
    for prompt in prompts:
        results.append(runtime.generate(prompt, max_new_tokens=max_new_tokens, temperature=0))
        assert_idle_balanced(runtime)
    return results


@pytest.fixture(scope="module")
def reference(make_runtime_module: Any) -> dict[str, Any]:
    """Greedy outputs in float32 with the radix cache disabled: the ground truth for claim 1.

    Submitted all at once to save time: in float32 a batched request equals the same request alone
    (test_concurrency checks that separately), and with the cache off no request affects another.
    """
    off = make_runtime_module(dtype="float32", disable_radix_cache=True, max_total_tokens=4096)
    prompts = shared_prefix_prompts(off)
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        results = list(pool.map(lambda p: off.generate(p, max_new_tokens=MAX_NEW, temperature=0), prompts))
    assert_idle_balanced(off)
    assert all(r["meta_info"]["cached_tokens"] == 0 for r in results)
    assert off.cache_state()["used"] == 0
    lengths = [len(off.tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    return {"prompts": prompts, "results": results, "max_prompt": max(lengths), "min_prompt": min(lengths)}


def texts(results: list[dict[str, Any]]) -> list[str]:
    return [r["text"] for r in results]


def ids(results: list[dict[str, Any]]) -> list[list[int]]:
    return [r["output_ids"] for r in results]


# ---- claim 1: the cache is invisible in the outputs ---------------------------------------------


def test_cache_on_equals_cache_off(rt32: Any, reference: dict[str, Any]) -> None:
    rt32.flush_cache()
    results = run_sequential(rt32, reference["prompts"])
    assert ids(results) == ids(reference["results"])
    assert texts(results) == texts(reference["results"])
    cached = [r["meta_info"]["cached_tokens"] for r in results]
    assert cached[0] == 0
    # Every later prompt reuses at least the shared system prompt + few-shot preamble.
    assert all(c >= 50 for c in cached[1:]), cached
    for r in results:
        meta = r["meta_info"]
        assert meta["cached_tokens"] < meta["prompt_tokens"]
        assert 0 < meta["completion_tokens"] <= MAX_NEW
        assert meta["finish_reason"]["type"] in ("stop", "length")


def test_eviction_under_a_tiny_budget(make_runtime_module: Any, reference: dict[str, Any]) -> None:
    budget = reference["max_prompt"] + SHORT_NEW + 8
    tiny = make_runtime_module(dtype="float32", max_total_tokens=budget)
    mirror = KVMirror(tiny)
    log = EventLog(tiny.hub)
    results = run_sequential(tiny, reference["prompts"][:N_TINY], SHORT_NEW)
    assert ids(results) == [r[:SHORT_NEW] for r in ids(reference["results"][:N_TINY])]
    removed = log.of_type(BlockRemoved)
    assert removed, "the budget was meant to force eviction"
    assert len(removed) >= N_TINY // 2, "eviction should run between most requests"
    # LRU keeps the shared preamble (it is touched by every request), so hits continue.
    assert all(r["meta_info"]["cached_tokens"] >= 50 for r in results[1:])
    assert tiny.cache_state()["cached"] <= budget
    mirror.assert_matches(tiny)


def test_page_size_16(make_runtime_module: Any, reference: dict[str, Any]) -> None:
    paged = make_runtime_module(dtype="float32", page_size=16, max_total_tokens=2048)
    log = EventLog(paged.hub)
    mirror = KVMirror(paged)
    results = run_sequential(paged, reference["prompts"][:N_PAGED], SHORT_NEW)
    assert ids(results) == [r[:SHORT_NEW] for r in ids(reference["results"][:N_PAGED])]
    cached = [r["meta_info"]["cached_tokens"] for r in results]
    assert all(c % 16 == 0 for c in cached), cached
    assert cached[0] == 0 and all(c >= 48 for c in cached[1:]), cached
    stored = log.of_type(BlockStored)
    assert stored and all(e.block_size == 16 and len(e.token_ids) == 16 * len(e.block_hashes) for e in stored)
    assert all(len(node.key) % 16 == 0 for node in paged.cache.nodes())
    mirror.assert_matches(paged)


def test_bf16_cache_differences_are_near_ties_only(rt: Any) -> None:
    """bf16 is not bitwise stable across prefill chunking; any flip must be at a near-tie."""
    prompts = shared_prefix_prompts(rt, 6)  # the 6th flipped at token 13 when measured
    ref = []
    for p in prompts:
        ref.append(cold(rt, p, max_new_tokens=MAX_NEW, temperature=0))
    rt.flush_cache()
    warm = run_sequential(rt, prompts)
    assert all(r["meta_info"]["cached_tokens"] > 0 for r in warm[1:])
    identical = 0
    for p, a, b in zip(prompts, ref, warm, strict=True):
        prompt_ids = rt.tokenizer.encode(p, add_special_tokens=False)
        identical += assert_same_or_near_tie(rt, prompt_ids, a["output_ids"], b["output_ids"])
    assert identical >= len(prompts) - 2, f"only {identical}/{len(prompts)} identical"


def test_cached_tokens_reported(rt: Any, make_runtime_module: Any) -> None:
    p1, p2 = shared_prefix_prompts(rt, 2)
    first = cold(rt, p1, max_new_tokens=4, temperature=0)
    second = rt.generate(p2, max_new_tokens=4, temperature=0)
    again = rt.generate(p1, max_new_tokens=4, temperature=0)
    assert first["meta_info"]["cached_tokens"] == 0
    assert 50 <= second["meta_info"]["cached_tokens"] < second["meta_info"]["prompt_tokens"]
    # The same prompt again: everything but the last prompt token (recomputed for its logits).
    assert again["meta_info"]["cached_tokens"] == again["meta_info"]["prompt_tokens"] - 1
    assert_idle_balanced(rt)

    off = make_runtime_module(disable_radix_cache=True, max_total_tokens=512)
    for p in (p1, p2, p1):
        r = off.generate(p, max_new_tokens=4, temperature=0)
        assert r["meta_info"]["cached_tokens"] == 0
        assert_idle_balanced(off)
    assert off.cache.nodes() == []


def test_prefix_lock_survives_eviction_while_waiting(make_runtime_module: Any) -> None:
    """A request whose cached prefix is the only evictable KV must not evict it to make room.

    Regression test: admission used to match the prefix, evict (possibly that very prefix) and
    only then lock it, so the request read freed, reused KV slots and the books stopped balancing.
    """
    small = make_runtime_module(dtype="float32", max_total_tokens=255)
    log = EventLog(small.hub)
    tok = small.tokenizer
    prefix = tok.encode("The quick brown fox jumps over the lazy dog. " * 4, add_special_tokens=False)[:30]
    other = tok.encode(
        "Once upon a time, in a land far away, there lived a king who", add_special_tokens=False
    )
    suffix = tok.encode(" Tell me a short story about a cat and a hat", add_special_tokens=False)[:10]
    ref = cold(small, input_ids=prefix + suffix, max_new_tokens=10, temperature=0)

    small.flush_cache()
    small.generate(input_ids=prefix, max_new_tokens=1, temperature=0)  # cache exactly the prefix
    chunks: list[dict[str, Any]] = []
    long_request = threading.Thread(
        target=lambda: chunks.extend(
            small.generate(input_ids=other, max_new_tokens=200, temperature=0, ignore_eos=True, stream=True)
        )
    )
    long_request.start()
    deadline = time.monotonic() + 60
    while not chunks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chunks, "the long request never started"
    # prefix(30) + suffix(10) + 10 decode do not fit beside the long request's 200-token reservation
    # unless the cached prefix is evicted; it must not be: the request waits instead.
    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            small.generate(input_ids=prefix + suffix, max_new_tokens=10, temperature=0)
        )
    )
    waiter.start()
    while small.cache_state()["waiting"] == 0 and waiter.is_alive():
        time.sleep(0.01)
    assert small.cache_state()["waiting"] == 1
    prefix_blocks = set(block_hashes(prefix, None, 1))
    assert not any(prefix_blocks & set(e.block_hashes) for e in log.of_type(BlockRemoved))
    small.abort(chunks[-1]["meta_info"]["id"])
    waiter.join(60)
    long_request.join(60)
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert result["output_ids"] == ref["output_ids"]
    assert result["meta_info"]["cached_tokens"] == len(prefix)
    assert_idle_balanced(small)
    again = cold(small, input_ids=prefix + suffix, max_new_tokens=10, temperature=0)
    assert again["output_ids"] == ref["output_ids"]


# ---- claim 5: streaming, abort, score ------------------------------------------------------------


def test_streaming_is_cumulative_and_ends_with_the_result(rt: Any) -> None:
    prompt = chat(rt, "Describe the sea in two sentences.")
    whole = cold(rt, prompt, max_new_tokens=20, temperature=0)
    rt.flush_cache()
    chunks = list(rt.generate(prompt, max_new_tokens=20, temperature=0, stream=True))
    assert len(chunks) == whole["meta_info"]["completion_tokens"]  # one chunk per token
    for before, after in itertools.pairwise(chunks):
        assert after["text"].startswith(before["text"])
        assert after["output_ids"][: len(before["output_ids"])] == before["output_ids"]
        assert before["meta_info"]["finish_reason"] is None
    last = chunks[-1]
    assert last["text"] == whole["text"]
    assert last["output_ids"] == whole["output_ids"]
    assert last["meta_info"]["finish_reason"] == whole["meta_info"]["finish_reason"]
    assert len({c["meta_info"]["id"] for c in chunks}) == 1
    assert_idle_balanced(rt)


def test_abort_a_running_request(rt: Any, events: EventLog) -> None:
    prompt = chat(rt, "Write a long story about a dragon.")
    chunks: list[dict[str, Any]] = []

    def consume() -> None:
        for chunk in rt.generate(prompt, max_new_tokens=400, temperature=0, ignore_eos=True, stream=True):
            chunks.append(chunk)

    worker = threading.Thread(target=consume)
    worker.start()
    deadline = time.monotonic() + 60
    while len(chunks) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chunks, "the request never started"
    rid = chunks[0]["meta_info"]["id"]
    rt.abort(rid)
    worker.join(60)
    assert not worker.is_alive()
    last = chunks[-1]
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    assert 2 <= last["meta_info"]["completion_tokens"] < 400
    finished = [e for e in events.events if getattr(e, "rid", None) == rid]
    assert len(finished) == 1 and finished[0].finish_reason["type"] == "abort"
    assert_idle_balanced(rt)

    # The runtime still serves, with the same greedy output as before the abort.
    short = chat(rt, "What is the capital of France?")
    before = cold(rt, short, max_new_tokens=12, temperature=0)
    after = cold(rt, short, max_new_tokens=12, temperature=0)
    assert after["output_ids"] == before["output_ids"]
    assert "Paris" in after["text"]
    assert_idle_balanced(rt)


def test_abort_before_admission_is_not_lost(rt: Any) -> None:
    """Regression test: an abort that reached the scheduler before its request did was ignored."""
    gate = threading.Event()
    blocker = threading.Thread(target=lambda: rt.scheduler.call(lambda: gate.wait(30)))
    blocker.start()  # the scheduler thread now sits in ``gate.wait``, between steps
    time.sleep(0.05)
    req = rt.make_request(
        chat(rt, "Count to a thousand."), max_new_tokens=300, ignore_eos=True, temperature=0
    )
    rt.scheduler.submit(req)
    rt.abort(req.rid)
    gate.set()
    blocker.join(30)
    assert req.done.wait(30)
    assert req.finish_reason is not None and req.finish_reason["type"] == "abort"
    assert len(req.output_ids) < 300
    assert_idle_balanced(rt)


def test_stream_closed_early_aborts(rt: Any) -> None:
    stream = rt.generate(chat(rt, "Write a poem."), max_new_tokens=300, ignore_eos=True, stream=True)
    first = next(stream)
    stream.close()  # the consumer walks away
    deadline = time.monotonic() + 30
    while rt.cache_state()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first["meta_info"]["finish_reason"] is None
    assert_idle_balanced(rt)


def test_score_ranks_paris_above_london(rt: Any) -> None:
    tok = rt.tokenizer
    prompt = tok.encode("The capital of France is", add_special_tokens=False)
    paris = rt.score(prompt, tok.encode(" Paris", add_special_tokens=False))
    london = rt.score(prompt, tok.encode(" London", add_special_tokens=False))
    sentence = rt.score(prompt, tok.encode(" Paris, a city on the Seine.", add_special_tokens=False))
    for logprobs in (paris, london, sentence):
        assert logprobs and all(math.isfinite(x) and x <= 0 for x in logprobs)
    assert len(sentence) == len(tok.encode(" Paris, a city on the Seine.", add_special_tokens=False))
    assert sum(paris) > sum(london)
    assert sentence[: len(paris)] == pytest.approx(paris, abs=0.15)  # same position, same token
    assert_idle_balanced(rt)


def test_score_matches_greedy_choice(rt32: Any) -> None:
    """The greedy token is the one ``score`` gives the highest logprob among rivals."""
    tok = rt32.tokenizer
    prompt = tok.encode("One, two, three, four,", add_special_tokens=False)
    out = cold(rt32, input_ids=prompt, max_new_tokens=1, temperature=0)["output_ids"][0]
    chosen = rt32.score(prompt, [out])[0]
    for rival in tok.encode(" six seven ten one", add_special_tokens=False):
        if rival != out:
            assert rt32.score(prompt, [rival])[0] < chosen
    assert_idle_balanced(rt32)


def test_stop_refuses_new_work(make_runtime_module: Any) -> None:
    tmp = make_runtime_module(max_total_tokens=256)
    assert tmp.generate("Hello", max_new_tokens=2, temperature=0)["meta_info"]["completion_tokens"] >= 1
    tmp.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        tmp.generate("Hello", max_new_tokens=2)
    tmp.stop()  # idempotent


def test_stop_releases_weights_and_kv_while_the_runtime_is_still_referenced(make_runtime_module: Any) -> None:
    """A %%sglang -o state keeps SGLang's executor -> the DSL backend -> the runtime alive after a stop;
    its weights and KV tensors must go anyway (a kernel grew ~0.8 GB per stop/start cycle)."""
    import gc
    import weakref

    tmp = make_runtime_module(max_total_tokens=256)
    tmp.generate("Hello", max_new_tokens=2, temperature=0)
    weights = weakref.ref(tmp.model.packed if tmp.model.packed is not None else tmp.model.hf)
    kv = weakref.ref(tmp.pool.k[0])
    tmp.stop()
    gc.collect()
    assert weights() is None and kv() is None
    assert tmp.pool.used_slots + tmp.pool.free_slots == tmp.pool.capacity  # still readable for views
