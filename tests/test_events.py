"""KV and request events from the local runtime: what a tree mirror or a widget would consume."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import KVMirror, assert_idle_balanced, chat

from sgnb.core.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventLog,
    RequestFinished,
    block_hashes,
    page_chunks,
)


def fresh_ids(runtime: Any, text: str) -> list[int]:
    return list(runtime.tokenizer.encode(text, add_special_tokens=False))


def test_block_stored_for_a_new_prompt(rt: Any, events: EventLog) -> None:
    rt.flush_cache()
    events.events.clear()
    prompt = fresh_ids(rt, "Zebras graze near the quiet river while herons wait.")
    r = rt.generate(input_ids=prompt, max_new_tokens=6, temperature=0, ignore_eos=True)
    out = r["output_ids"]
    stored = events.of_type(BlockStored)
    # The prompt is stored once prefilled (shared while the request decodes), then the rest of
    # the KV at the end: every generated token but the last, whose KV was never computed.
    assert [e.token_ids for e in stored] == [prompt, out[:-1]]
    chain = block_hashes(prompt + out[:-1], None, 1)
    assert stored[0].parent_block_hash is None
    assert stored[0].block_hashes == chain[: len(prompt)]
    assert stored[1].parent_block_hash == stored[0].block_hashes[-1]
    assert stored[1].block_hashes == chain[len(prompt) :]
    assert all(e.block_size == 1 and e.medium == "GPU" and e.lora_id is None for e in stored)
    assert not events.of_type(BlockRemoved)
    assert_idle_balanced(rt)


def test_shared_prefix_chains_to_its_parent_block(rt: Any, events: EventLog) -> None:
    rt.flush_cache()
    base = fresh_ids(rt, "Octopuses have three hearts and blue blood, and they")
    rt.generate(input_ids=base, max_new_tokens=1, temperature=0)
    events.events.clear()
    branch = base[:6] + fresh_ids(rt, " live in every ocean of the world")
    rt.generate(input_ids=branch, max_new_tokens=1, temperature=0)
    stored = events.of_type(BlockStored)
    assert len(stored) == 1  # the split of the shared node publishes nothing
    (event,) = stored
    assert event.token_ids == branch[6:]
    assert event.parent_block_hash == block_hashes(base[:6], None, 1)[-1]
    assert event.block_hashes == block_hashes(branch, None, 1)[6:]  # position-aware chain


def test_request_finished_matches_meta_info(rt: Any, events: EventLog) -> None:
    prompt = chat(rt, "Name a fruit.")
    rt.flush_cache()
    first = rt.generate(prompt, max_new_tokens=8, temperature=0)
    second = rt.generate(prompt, max_new_tokens=8, temperature=0, regex=r"(apple|pear|plum)")
    finished = {e.rid: e for e in events.of_type(RequestFinished)}
    assert len(finished) == 2
    for r in (first, second):
        meta = r["meta_info"]
        e = finished[meta["id"]]
        assert e.prompt_tokens == meta["prompt_tokens"] == len(e.prompt_ids)
        assert e.cached_tokens == meta["cached_tokens"]
        assert e.completion_tokens == meta["completion_tokens"] == len(r["output_ids"])
        assert e.output_ids == r["output_ids"]
        assert e.finish_reason == meta["finish_reason"]
        assert e.prompt_ids == rt.tokenizer.encode(prompt, add_special_tokens=False)
        assert 0 <= e.ttft <= e.e2e_latency
    assert finished[first["meta_info"]["id"]].cached_tokens == 0
    assert finished[second["meta_info"]["id"]].cached_tokens == second["meta_info"]["prompt_tokens"] - 1
    assert finished[first["meta_info"]["id"]].constraint is None
    assert finished[second["meta_info"]["id"]].constraint == "regex"


def test_stats_follow_request_events(rt: Any) -> None:
    before = (rt.stats.requests, rt.stats.prompt_tokens, rt.stats.cached_tokens, rt.stats.completion_tokens)
    r = rt.generate(chat(rt, "Name a fruit."), max_new_tokens=3, temperature=0)
    meta = r["meta_info"]
    after = (rt.stats.requests, rt.stats.prompt_tokens, rt.stats.cached_tokens, rt.stats.completion_tokens)
    assert [b - a for a, b in zip(before, after, strict=True)] == [
        1,
        meta["prompt_tokens"],
        meta["cached_tokens"],
        meta["completion_tokens"],
    ]


def test_flush_cache_clears_everything(rt: Any, events: EventLog) -> None:
    rt.generate(chat(rt, "Name a fruit."), max_new_tokens=3, temperature=0)
    assert rt.cache_state()["cached"] > 0
    events.events.clear()
    rt.flush_cache()
    assert [type(e) for e in events.events] == [AllBlocksCleared]
    s = rt.cache_state()
    assert s["cached"] == s["used"] == 0 and s["free"] == s["capacity"]
    assert rt.cache.nodes() == []
    r = rt.generate(chat(rt, "Name a fruit."), max_new_tokens=3, temperature=0)
    assert r["meta_info"]["cached_tokens"] == 0


def test_flush_refused_while_a_request_runs(rt: Any, events: EventLog) -> None:
    chunks: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: chunks.extend(
            rt.generate(chat(rt, "Write a long story."), max_new_tokens=300, ignore_eos=True, stream=True)
        )
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not chunks and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="while requests are running"):
        rt.flush_cache()
    assert not events.of_type(AllBlocksCleared)
    rt.abort(chunks[0]["meta_info"]["id"])
    worker.join(60)
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert_idle_balanced(rt)


def test_events_replay_to_the_tree(make_runtime: Any) -> None:
    """Stored / removed / cleared events, replayed, give exactly the blocks in the tree, also
    through eviction and a flush."""
    small = make_runtime(max_total_tokens=64)
    mirror = KVMirror(small)
    log = EventLog(small.hub)
    for i, animal in enumerate(["owls", "bats", "owls", "frogs", "owls", "moles", "bats", "owls"]):
        small.generate(f"Tell me fact number {i % 3} about {animal}.", max_new_tokens=8, temperature=0)
        mirror.assert_matches(small)
        assert_idle_balanced(small)
    assert log.of_type(BlockRemoved), "64 tokens were meant to force eviction"
    assert mirror.stored > 8
    small.flush_cache()
    mirror.assert_matches(small)
    assert mirror.live == set()


# ---- what a late subscriber gets: BlockLedger.replay and the runtimes' replay_tree ----------


def test_ledger_keeps_a_block_while_any_medium_holds_it() -> None:
    """SGLang's HiCache stores a block on GPU and host; ``BlockRemoved`` names the medium it leaves."""
    from sgnb.core.events import BlockLedger

    ledger = BlockLedger()
    chain = block_hashes([1, 2, 3, 4], None, 2)
    ledger.apply(BlockStored(chain, None, [1, 2, 3, 4], 2, medium="GPU"))
    ledger.apply(BlockStored(chain[1:], chain[0], [3, 4], 2, medium="CPU_PINNED"))
    ledger.apply(BlockRemoved(chain[1:], medium="GPU"))
    replay = ledger.replay()
    assert [(e.block_hashes, e.token_ids, e.medium) for e in replay if isinstance(e, BlockStored)] == [
        ([chain[0]], [1, 2], "GPU"),
        ([chain[1]], [3, 4], "CPU_PINNED"),
    ]
    ledger.apply(BlockRemoved(chain[1:], medium="CPU_PINNED"))
    assert [e.block_hashes for e in ledger.replay() if isinstance(e, BlockStored)] == [[chain[0]]]


def test_local_replay_tree_is_the_cache(make_runtime: Any) -> None:
    """``LocalRuntime.replay_tree`` gives what the live events built (a ledger of them), through
    eviction; ``follow`` hands a late subscriber the replay and then the live events, no more."""
    from sgnb.core.events import BlockLedger

    small = make_runtime(max_total_tokens=64)
    ledger = BlockLedger()
    unsubscribe = small.hub.subscribe(ledger.apply)
    late = EventLog()
    stop_following = None
    for i, animal in enumerate(["owls", "bats", "owls", "frogs", "moles", "bats"]):
        small.generate(f"Tell me fact number {i % 3} about {animal}.", max_new_tokens=8, temperature=0)
        replay = small.replay_tree()
        assert all(isinstance(e, BlockStored) for e in replay)
        assert _hash_set(replay) == _hash_set(ledger.replay()), animal
        if i == 2:
            stop_following = small.follow(late.append)
    assert stop_following is not None
    followed = BlockLedger()
    for event in late.events:
        followed.apply(event)
    assert _hash_set(followed.replay()) == _hash_set(ledger.replay())
    assert late.of_type(BlockRemoved), "64 tokens were meant to force eviction"
    stop_following()
    unsubscribe()


def _hash_set(events: list[Any]) -> set[tuple[int | None, int, tuple[int, ...]]]:
    """(parent, hash, tokens) per block: what two replays must agree on, however runs are merged."""
    out: set[tuple[int | None, int, tuple[int, ...]]] = set()
    for e in events:
        parent = e.parent_block_hash
        for h, tokens in page_chunks(e):
            out.add((parent, h, tuple(tokens)))
            parent = h
    return out
