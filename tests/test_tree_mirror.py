"""TreeMirror rebuilds the radix tree from KV events alone (sgnb/tree/mirror.py).

The oracle is always the real tree: sgnb's RadixCache (driven directly, and inside a running
LocalRuntime) and SGLang's own RadixCache with its KV-event recorder on.
"""

from __future__ import annotations

import random
import threading
from array import array
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conftest import finished

from sgnb.core.events import (
    AllBlocksCleared,
    BlockLedger,
    BlockRemoved,
    BlockStored,
    EventHub,
    block_hashes,
    coalesce,
)
from sgnb.runtimes.kv_subscriber import convert
from sgnb.runtimes.local.radix_cache import RadixCache
from sgnb.tree.mirror import TreeMirror


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cache_paths(root: Any, key: Any = lambda n: n.key) -> set[tuple[int, ...]]:
    """Root-to-leaf token sequences of a radix tree (sgnb's or SGLang's)."""
    out: set[tuple[int, ...]] = set()
    stack: list[tuple[Any, tuple[int, ...]]] = [(c, ()) for c in root.children.values()]
    while stack:
        node, prefix = stack.pop()
        path = prefix + tuple(int(t) for t in key(node))
        if not node.children:
            out.add(path)
        stack.extend((c, path) for c in node.children.values())
    return out


def rt_cache_paths(cache: RadixCache) -> set[tuple[int, ...]]:
    """The same, from ``cache.nodes()`` / ``node.key`` / ``node.parent`` (leaves walk up)."""
    out: set[tuple[int, ...]] = set()
    for node in cache.nodes():
        if node.children:
            continue
        parts: list[list[int]] = []
        n: Any = node
        while n is not None and n is not cache.root:
            parts.append(n.key)
            n = n.parent
        out.add(tuple(t for part in reversed(parts) for t in part))
    return out


def assert_maximal(mirror: TreeMirror) -> None:
    """Nodes are maximal chains: no node has a lone child of the same state."""
    snap = mirror.snapshot()
    for node in snap.nodes.values():
        if len(node.children) == 1:
            assert snap.nodes[node.children[0]].evicted != node.evicted, node


# ---- against sgnb's RadixCache ------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 4])
def test_random_workload_matches_radix_cache(page_size: int) -> None:
    rng = random.Random(7 + page_size)
    clock = Clock()
    mirror = TreeMirror(fade_s=0.5, clock=clock)
    cache = RadixCache(page_size=page_size, on_event=mirror.handle)
    seqs: list[list[int]] = [[]]
    slot = 0
    for step in range(400):
        clock.t += 0.1
        op = rng.random()
        if op < 0.55:
            base = rng.choice(seqs)
            tokens = base[: rng.randint(0, len(base))] + [rng.randrange(6) for _ in range(rng.randint(1, 24))]
            seqs.append(tokens)
            cache.insert(tokens, torch.arange(slot, slot + len(tokens)))
            slot += len(tokens)
        elif op < 0.8:
            cache.match_prefix(rng.choice(seqs))  # splits nodes: no event, same paths
        elif op < 0.97:
            cache.evict(rng.randint(1, 40))
        else:
            cache.reset()
        assert mirror.paths() == cache_paths(cache.root) == rt_cache_paths(cache), f"step {step}"
        assert_maximal(mirror)
    assert mirror.block_count() * page_size == cache.total_size()


def test_merges_chains_and_keeps_single_child_nodes_merged() -> None:
    mirror = TreeMirror()
    cache = RadixCache(page_size=1, on_event=mirror.handle)
    cache.insert([1, 2, 3, 4], torch.arange(4))
    cache.insert([1, 2, 9], torch.arange(4, 7))  # split at 2 -> [1,2] with children [3,4], [9]
    assert mirror.node_count() == 3
    cache.evict(1)  # the LRU leaf [3, 4] goes; [1, 2] keeps one child in sgnb's cache
    assert mirror.paths() == {(1, 2, 9)}
    assert mirror.node_count() == 2  # ghost [3,4] still fading (its own node)
    mirror.fade_s = 0.0
    snap = mirror.snapshot()
    assert [n.tokens for n in snap.nodes.values()] == [[1, 2, 9]]  # merged once the ghost is gone


def test_one_event_per_token_merges_into_nodes() -> None:
    """SGLang with page_size 1 publishes one BlockStored per token."""
    mirror = TreeMirror()
    parent = None
    for tok in [5, 6, 7, 8]:
        (h,) = block_hashes([tok], parent, 1)
        mirror.handle(BlockStored(block_hashes=[h], parent_block_hash=parent, token_ids=[tok], block_size=1))
        parent = h
    snap = mirror.snapshot()
    assert len(snap.nodes) == 1 and next(iter(snap.nodes.values())).tokens == [5, 6, 7, 8]


def test_fade_out_then_drop_and_revive() -> None:
    clock = Clock()
    mirror = TreeMirror(fade_s=2.0, clock=clock)
    cache = RadixCache(on_event=mirror.handle)
    cache.insert([1, 2, 3], torch.arange(3))
    cache.insert([1, 2, 4], torch.arange(3, 6))
    cache.evict(1)
    ghosts = [n for n in mirror.snapshot().nodes.values() if n.evicted]
    assert len(ghosts) == 1 and ghosts[0].evicted_at == clock.t
    clock.t += 1.0
    assert len(mirror.snapshot().nodes) == 3
    clock.t += 1.5
    assert len(mirror.snapshot().nodes) == 1 and mirror.paths() == {(1, 2, 4)}
    cache.reset()
    assert mirror.paths() == set() and mirror.node_count(include_evicted=True) == 1
    cache.insert([1, 2, 4], torch.arange(3))  # same chained hashes: the ghost comes back to life
    assert mirror.paths() == {(1, 2, 4)} and mirror.node_count(include_evicted=True) == 1


def test_hits_last_path_and_in_flight() -> None:
    mirror = TreeMirror(decode=lambda ids: "".join(chr(96 + t) for t in ids))
    cache = RadixCache(on_event=mirror.handle)
    cache.insert([1, 2, 3, 4], torch.arange(4))  # prefilled, not finished yet
    assert all(n.in_flight for n in mirror.snapshot().nodes.values())
    mirror.handle(finished([1, 2, 3], [4, 5], "a"))
    cache.insert([1, 2, 5, 6], torch.arange(4, 8))
    mirror.handle(finished([1, 2, 5], [6, 7], "b", cached=2))
    snap = mirror.snapshot()
    by_text = {n.text: n for n in snap.nodes.values()}
    assert set(by_text) == {"ab", "cd", "ef"}
    assert by_text["ab"].hits == 2 and by_text["ab"].requests == ["a", "b"]
    assert by_text["cd"].hits == 1 and by_text["ef"].hits == 1
    assert not any(n.in_flight for n in snap.nodes.values())
    assert [n.text for n in snap.nodes.values() if n.on_last_path] == ["ab", "ef"]
    assert snap.last_request is not None and snap.last_request.rid == "b"


def test_late_kv_events_are_walked_when_they_arrive() -> None:
    mirror = TreeMirror()
    cache = RadixCache(on_event=mirror.handle)
    mirror.handle(finished([1, 2, 3], [4], "late"))  # the meta_info came first (ZMQ lag)
    cache.insert([1, 2, 3], torch.arange(3))
    assert next(iter(mirror.snapshot().nodes.values())).hits == 1


def test_unknown_parent_attaches_to_root_and_foreign_events_are_refused() -> None:
    """sgnb's own event types only: SGLang's go through the one adapter (kv_subscriber.convert)."""
    kv_events = pytest.importorskip("sglang.srt.disaggregation.kv_events")
    mirror = TreeMirror()
    mirror.handle(BlockStored(block_hashes=[11], parent_block_hash=999, token_ids=[3], block_size=1))
    sglang_stored = kv_events.BlockStored(
        block_hashes=[12], parent_block_hash=11, token_ids=[4], block_size=1, lora_id=None
    )
    for foreign in (object(), sglang_stored, kv_events.KVEventBatch(ts=0.0, events=[sglang_stored])):
        with pytest.raises(TypeError, match="sgnb events"):
            mirror.handle(foreign)  # type: ignore[arg-type]
    assert mirror.paths() == {(3,)}
    mirror.handle(convert(sglang_stored))  # type: ignore[arg-type]
    assert mirror.paths() == {(3, 4)}
    mirror.handle(BlockRemoved(block_hashes=[12345]))
    mirror.handle(AllBlocksCleared())
    assert mirror.paths() == set()


def test_hub_subscription_threads_and_listeners() -> None:
    hub = EventHub()
    mirror = TreeMirror(hub)
    changes: list[int] = []
    mirror.on_change(lambda: changes.append(1))
    caches = [RadixCache(on_event=hub.publish) for _ in range(4)]

    def work(i: int) -> None:
        for j in range(50):
            caches[i].insert([100 + i, j, j + 1], torch.arange(3))
            mirror.snapshot()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = set().union(*(cache_paths(c.root) for c in caches[:1]))
    assert expected <= mirror.paths()
    assert len(mirror.paths()) == sum(len(cache_paths(c.root)) for c in caches)
    assert len(changes) > 0
    mirror.detach()
    before = mirror.version
    caches[0].insert([1, 1, 1], torch.arange(3))
    assert mirror.version == before


# ---- against SGLang's own RadixCache and event types ---------------------------------------


def sglang_steps(page_size: int, steps: int) -> Iterator[tuple[int, Any, list[Any]]]:
    """SGLang's own RadixCache (``create_simulated``, KV events on) under random inserts, matches
    and evictions: per step, (step, the cache, its KV events converted to sgnb's and coalesced)."""
    sg_radix = pytest.importorskip("sglang.srt.mem_cache.radix_cache")
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams

    class Alloc:
        device = "cpu"

        def free_segment(self, indices: torch.Tensor, start_pos: int = 0) -> None:
            pass

    rng = random.Random(page_size)
    cache = sg_radix.RadixCache.create_simulated(
        page_size=page_size, mock_allocator=Alloc(), enable_kv_cache_events=True
    )
    seqs: list[list[int]] = [[]]
    for step in range(steps):
        op = rng.random()
        if op < 0.6:
            base = rng.choice(seqs)
            tokens = base[: rng.randint(0, len(base))] + [rng.randrange(5) for _ in range(rng.randint(1, 20))]
            seqs.append(tokens)
            key = sg_radix.RadixKey(token_ids=array("q", tokens), extra_key=None)
            cache.insert(InsertParams(key=key, value=torch.arange(len(tokens))))
        elif op < 0.8:
            key = sg_radix.RadixKey(token_ids=array("q", rng.choice(seqs)), extra_key=None)
            cache.match_prefix(MatchPrefixParams(key=key))
        else:
            cache.evict(EvictParams(num_tokens=rng.randint(1, 30)))
        yield step, cache, list(coalesce(map(convert, cache.kv_events.take())))
    cache.reset()
    yield steps, cache, list(coalesce(map(convert, cache.kv_events.take())))


def sglang_paths(cache: Any) -> set[tuple[int, ...]]:
    return cache_paths(cache.root_node, key=lambda n: n.key.token_ids)


@pytest.mark.parametrize("page_size", [1, 4])
def test_sglang_event_stream_matches_sglang_tree(page_size: int) -> None:
    mirror = TreeMirror(fade_s=0.0)
    n_stored = 0
    for step, cache, events in sglang_steps(page_size, 200):
        n_stored += sum(isinstance(e, BlockStored) for e in events)
        mirror.replay(events)
        assert mirror.paths() == sglang_paths(cache), f"step {step}"
        assert_maximal(mirror)
    assert n_stored > 0
    assert mirror.paths() == set()  # the last step resets the cache


@pytest.mark.parametrize("page_size", [1, 4])
def test_ledger_replay_rebuilds_sglangs_tree_at_any_point(page_size: int) -> None:
    """What a late subscriber of an engine or remote runtime is handed (``BlockLedger.replay``):
    after every step a mirror built only from the replay holds SGLang's tree, and so does one that
    replayed at step 40 and then followed the live stream."""
    ledger = BlockLedger()
    follower: TreeMirror | None = None
    evicted = 0
    for step, cache, events in sglang_steps(page_size, 150):
        for event in events:
            ledger.apply(event)
            evicted += isinstance(event, BlockRemoved)
            if follower is not None:
                follower.handle(event)
        late = TreeMirror(fade_s=0.0)
        late.replay(ledger.replay())
        assert late.paths() == sglang_paths(cache), f"step {step}"
        if step == 40:
            follower = TreeMirror(fade_s=0.0)
            follower.replay(ledger.replay())
        if follower is not None:
            assert follower.paths() == late.paths(), f"step {step}"
        if step == 149:
            assert evicted and len(ledger) > 0
    assert ledger.replay() == [] and len(ledger) == 0  # the last step resets the cache


# ---- against a running LocalRuntime -------------------------------------------------------


@pytest.fixture(scope="module")
def small_rt() -> Any:
    import sgnb

    rt = sgnb.start(max_total_tokens=24)
    yield rt
    rt.stop()


def test_runtime_events_rebuild_the_cache(small_rt: Any) -> None:
    rt = small_rt
    rt.flush_cache()
    mirror = TreeMirror(rt)
    removed: list[Any] = []
    unsubscribe = rt.hub.subscribe(lambda e: removed.append(e) if isinstance(e, BlockRemoved) else None)

    def cache_now() -> set[tuple[int, ...]]:
        return set(rt.scheduler.call(lambda: rt_cache_paths(rt.cache)))

    prompts = [
        "The capital of France is",
        "The capital of Spain is",
        "The capital of France is",
        "Two plus two equals",
        "The capital of Italy is",
        "Two plus three equals",
    ]
    seen_hit = False
    late = None
    for i, prompt in enumerate(prompts):
        out = rt.generate(prompt, max_new_tokens=3, temperature=0)
        seen_hit |= out["meta_info"]["cached_tokens"] > 0
        assert mirror.paths() == cache_now(), prompt
        if i == 2:
            late = TreeMirror(rt)  # created mid-way: loads what is cached, then follows
        if late is not None:
            assert late.paths() == cache_now(), prompt
    assert seen_hit and removed, "the workload should hit the cache and evict (24-token budget)"
    snap = mirror.snapshot()
    assert snap.last_request is not None and any(n.on_last_path for n in snap.nodes.values())
    assert any(n.hits >= 2 for n in snap.live())
    assert any("Two" in n.text for n in snap.live())
    rt.flush_cache()
    assert mirror.paths() == set() == cache_now()
    unsubscribe()
    mirror.detach()
    assert late is not None
    late.detach()
