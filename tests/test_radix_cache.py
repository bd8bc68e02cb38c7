"""Unit tests for sgnb's radix cache (sgnb/runtimes/local/radix_cache.py)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
import torch

from sgnb.core.events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent, block_hashes
from sgnb.runtimes.local.radix_cache import RadixCache, TreeNode

# ---- helpers -----------------------------------------------------------------------------


def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def arange(start: int, n: int) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.int64)


class Recorder:
    """Collects what the cache hands to ``free_slots`` and ``on_event``."""

    def __init__(self) -> None:
        self.freed: list[torch.Tensor] = []
        self.events: list[KVEvent] = []

    def free(self, indices: torch.Tensor) -> None:
        self.freed.append(indices.clone())

    def event(self, ev: KVEvent) -> None:
        self.events.append(ev)

    def freed_list(self) -> list[int]:
        return torch.cat(self.freed).tolist() if self.freed else []

    def of_type(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def make(page_size: int = 1, disable: bool = False) -> tuple[RadixCache, Recorder]:
    rec = Recorder()
    cache = RadixCache(page_size=page_size, free_slots=rec.free, on_event=rec.event, disable=disable)
    return cache, rec


def node_keys(cache: RadixCache) -> list[list[int]]:
    return sorted(n.key for n in cache.nodes())


def child_by_key(node: TreeNode, key: Sequence[int]) -> TreeNode:
    for child in node.children.values():
        if child.key == list(key):
            return child
    raise AssertionError(f"no child with key {list(key)} under {node.key}")


def check_invariants(cache: RadixCache) -> None:
    """Structural and accounting invariants that must hold after any sequence of operations."""
    nodes = cache.nodes()
    total = sum(len(n.key) for n in nodes)
    assert cache.evictable_size + cache.protected_size == total, (
        f"evictable {cache.evictable_size} + protected {cache.protected_size} != tokens in tree {total}"
    )
    assert cache.total_size() == total
    assert cache.evictable_size == sum(len(n.key) for n in nodes if n.lock_ref == 0)
    assert cache.protected_size == sum(len(n.key) for n in nodes if n.lock_ref > 0)
    assert cache.evictable_size >= 0 and cache.protected_size >= 0
    flat = cache.all_indices().tolist()
    assert len(flat) == total
    assert len(set(flat)) == len(flat), "all_indices() has duplicates"
    seen_parents: set[int] = {id(cache.root)}
    for n in nodes:  # parents before children
        assert n.parent is not None and id(n.parent) in seen_parents
        seen_parents.add(id(n))
        assert len(n.key) > 0 and len(n.key) % cache.page_size == 0
        assert n.value.numel() == len(n.key)
        assert len(n.hashes) == len(n.key) // cache.page_size
        assert n.parent.children[tuple(n.key[: cache.page_size])] is n
        # A node's lock count is at least that of any child (locks are taken on whole paths).
        for c in n.children.values():
            assert n.lock_ref >= c.lock_ref
    # Chained hashes: every page's hash is the hash of its whole prefix from the root.
    for n in nodes:
        assert n.parent is not None
        parent_hash = n.parent.hashes[-1] if n.parent is not cache.root else None
        assert n.hashes == block_hashes(n.key, parent_hash, cache.page_size)


# ---- match / insert ----------------------------------------------------------------------


def test_match_on_empty_tree() -> None:
    cache, _ = make()
    for tokens in ([], [1], [1, 2, 3]):
        m = cache.match_prefix(tokens)
        assert m.length == 0
        assert m.indices.dtype == torch.int64 and m.indices.numel() == 0
        assert m.last_node is cache.root
    assert cache.total_size() == 0 and cache.nodes() == []


def test_insert_then_match_returns_inserted_indices_in_order() -> None:
    cache, _ = make()
    assert cache.insert([1, 2, 3, 4], idx(10, 11, 12, 13)) == 0
    m = cache.match_prefix([1, 2, 3, 4, 5, 6])
    assert m.length == 4
    assert m.indices.tolist() == [10, 11, 12, 13]
    assert m.last_node.key == [1, 2, 3, 4]
    # A prefix that diverges at the first token matches nothing.
    assert cache.match_prefix([2, 2, 3]).length == 0
    assert cache.total_size() == 4 and cache.evictable_size == 4 and cache.protected_size == 0
    check_invariants(cache)


def test_match_ending_mid_node_splits_it() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3, 4, 5], arange(100, 5))
    n_events = len(rec.events)
    m = cache.match_prefix([1, 2, 3, 9, 9])
    assert m.length == 3
    assert m.indices.tolist() == [100, 101, 102]
    assert m.last_node.key == [1, 2, 3]
    assert m.last_node.parent is cache.root
    assert node_keys(cache) == [[1, 2, 3], [4, 5]]
    lower = child_by_key(m.last_node, [4, 5])
    assert lower.value.tolist() == [103, 104]
    assert cache.root.children[(1,)] is m.last_node
    # The split neither adds nor removes tokens and publishes no event.
    assert cache.total_size() == 5 and cache.evictable_size == 5
    assert len(rec.events) == n_events
    # Matching the whole thing again walks both halves.
    assert cache.match_prefix([1, 2, 3, 4, 5]).indices.tolist() == [100, 101, 102, 103, 104]
    # Matching exactly to a node boundary does not split further.
    cache.match_prefix([1, 2, 3])
    assert node_keys(cache) == [[1, 2, 3], [4, 5]]
    check_invariants(cache)


def test_match_shorter_than_node_splits_it() -> None:
    cache, _ = make()
    cache.insert([5, 6, 7, 8], arange(0, 4))
    m = cache.match_prefix([5, 6])
    assert m.indices.tolist() == [0, 1]
    assert node_keys(cache) == [[5, 6], [7, 8]]
    check_invariants(cache)


def test_insert_branching_splits_and_shares_prefix() -> None:
    cache, _ = make()
    assert cache.insert([1, 2, 3, 4], idx(10, 11, 12, 13)) == 0
    assert cache.insert([1, 2, 5, 6], idx(20, 21, 22, 23)) == 2
    assert node_keys(cache) == [[1, 2], [3, 4], [5, 6]]
    # The shared prefix keeps the first insert's KV; the caller frees 20, 21.
    assert cache.match_prefix([1, 2, 5, 6]).indices.tolist() == [10, 11, 22, 23]
    assert cache.match_prefix([1, 2, 3, 4]).indices.tolist() == [10, 11, 12, 13]
    assert cache.match_prefix([1, 2, 7]).indices.tolist() == [10, 11]
    assert cache.total_size() == 6
    # A third branch off the middle of an existing edge.
    assert cache.insert([1, 2, 3, 7], idx(30, 31, 32, 33)) == 3
    assert node_keys(cache) == [[1, 2], [3], [4], [5, 6], [7]]
    assert cache.match_prefix([1, 2, 3, 7]).indices.tolist() == [10, 11, 12, 33]
    check_invariants(cache)


def test_insert_returns_already_cached_length() -> None:
    cache, _ = make()
    seq = [3, 1, 4, 1, 5, 9, 2, 6]
    assert cache.insert(seq, arange(0, 8)) == 0
    assert cache.insert(seq, arange(100, 8)) == 8  # all cached
    assert cache.insert(seq[:5], arange(200, 5)) == 5  # a prefix of a node: splits it
    assert cache.insert([*seq, 5, 3], arange(300, 10)) == 8  # extends the path
    assert cache.insert([3, 1, 4, 2], arange(400, 4)) == 3
    assert cache.insert([7], arange(500, 1)) == 0
    assert cache.insert([], arange(0, 0)) == 0
    assert cache.total_size() == 8 + 2 + 1 + 1
    # Nothing of the later duplicate inserts replaced the first KV.
    assert cache.match_prefix([*seq, 5, 3]).indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 308, 309]
    check_invariants(cache)


def test_insert_copies_indices() -> None:
    cache, _ = make()
    values = arange(0, 3)
    cache.insert([1, 2, 3], values)
    values.fill_(-1)
    assert cache.match_prefix([1, 2, 3]).indices.tolist() == [0, 1, 2]


# ---- paging ------------------------------------------------------------------------------


def test_page_size_truncates_insert_and_match_to_whole_pages() -> None:
    P = 16
    cache, rec = make(page_size=P)
    toks = [i % 7 for i in range(40)]
    assert cache.insert(toks, arange(0, 40)) == 0
    assert cache.total_size() == 32  # the partial page (8 tokens) is not inserted
    assert cache.all_indices().tolist() == list(range(32))
    assert cache.match_prefix(toks).indices.tolist() == list(range(32))
    assert cache.match_prefix(toks[:31]).indices.tolist() == list(range(16))
    assert cache.match_prefix(toks[:15]).length == 0
    assert cache.insert(toks[:15], arange(100, 15)) == 0  # under a page: nothing to insert
    assert cache.total_size() == 32
    # A divergence inside the second page matches (and splits at) the first page only.
    other = toks[:20] + [99] * 20
    m = cache.match_prefix(other)
    assert m.length == 16 and m.indices.tolist() == list(range(16))
    assert sorted(len(n.key) for n in cache.nodes()) == [16, 16]
    # Inserting it shares one page and adds the new page-aligned tail.
    assert cache.insert(other, arange(200, 40)) == 16
    assert cache.total_size() == 32 + 16
    assert cache.match_prefix(other).indices.tolist() == list(range(16)) + list(range(216, 232))
    # Children of a node are keyed by their whole first page: same first token, different page.
    near = toks[:16] + [toks[16]] + [42] * 15
    assert cache.insert(near, arange(300, 32)) == 16
    assert cache.match_prefix(near).indices.tolist() == list(range(16)) + list(range(316, 332))
    assert cache.total_size() == 64
    stored = rec.of_type(BlockStored)
    assert all(ev.block_size == P for ev in stored)
    check_invariants(cache)


def test_page_size_one_hash_per_page() -> None:
    cache, rec = make(page_size=4)
    cache.insert(list(range(10)), arange(0, 10))
    (ev,) = rec.of_type(BlockStored)
    assert ev.token_ids == list(range(8))
    assert ev.block_size == 4
    assert len(ev.block_hashes) == 2
    assert ev.block_hashes == block_hashes(list(range(8)), None, 4)
    assert ev.parent_block_hash is None


# ---- locks -------------------------------------------------------------------------------


def test_lock_ref_protects_from_eviction() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3, 4, 5], arange(0, 5))
    m = cache.match_prefix([1, 2, 3, 4, 5])
    cache.inc_lock_ref(m.last_node)
    assert (cache.evictable_size, cache.protected_size) == (0, 5)
    assert cache.evict(100) == 0
    assert rec.freed == [] and rec.of_type(BlockRemoved) == []
    assert cache.total_size() == 5
    # A second lock on the same path; one release is not enough.
    cache.inc_lock_ref(m.last_node)
    cache.dec_lock_ref(m.last_node)
    assert (cache.evictable_size, cache.protected_size) == (0, 5)
    assert cache.evict(100) == 0
    cache.dec_lock_ref(m.last_node)
    assert (cache.evictable_size, cache.protected_size) == (5, 0)
    assert cache.evict(100) == 5
    assert rec.freed_list() == [0, 1, 2, 3, 4]
    assert cache.total_size() == 0
    check_invariants(cache)


def test_lock_on_branch_protects_only_its_path() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3, 4], arange(0, 4))
    cache.insert([1, 2, 5, 6], arange(10, 4))
    node = cache.match_prefix([1, 2, 3, 4]).last_node
    cache.inc_lock_ref(node)
    assert (cache.evictable_size, cache.protected_size) == (2, 4)
    assert cache.evict(100) == 2  # only [5, 6]; [1, 2] is the locked path's parent
    assert rec.freed_list() == [12, 13]
    assert node_keys(cache) == [[1, 2], [3, 4]]
    assert (cache.evictable_size, cache.protected_size) == (0, 4)
    cache.dec_lock_ref(node)
    assert (cache.evictable_size, cache.protected_size) == (4, 0)
    check_invariants(cache)


def test_split_of_locked_node_keeps_lock_accounting() -> None:
    cache, _ = make()
    cache.insert([1, 2, 3, 4], arange(0, 4))
    node = cache.match_prefix([1, 2, 3, 4]).last_node
    cache.inc_lock_ref(node)
    cache.match_prefix([1, 2, 9])  # splits the locked node
    assert node_keys(cache) == [[1, 2], [3, 4]]
    assert all(n.lock_ref == 1 for n in cache.nodes())
    assert (cache.evictable_size, cache.protected_size) == (0, 4)
    check_invariants(cache)
    cache.dec_lock_ref(node)  # the lower half still walks through the new upper half
    assert (cache.evictable_size, cache.protected_size) == (4, 0)
    assert all(n.lock_ref == 0 for n in cache.nodes())
    check_invariants(cache)


def test_lock_root_is_noop() -> None:
    cache, _ = make()
    cache.inc_lock_ref(cache.root)
    cache.dec_lock_ref(cache.root)
    assert cache.root.lock_ref == 1
    assert (cache.evictable_size, cache.protected_size) == (0, 0)


def test_dec_lock_ref_below_zero_asserts() -> None:
    cache, _ = make()
    cache.insert([1, 2, 3], arange(0, 3))
    node = cache.match_prefix([1, 2, 3]).last_node
    with pytest.raises(AssertionError):
        cache.dec_lock_ref(node)
    cache.inc_lock_ref(node)
    cache.dec_lock_ref(node)
    with pytest.raises(AssertionError):
        cache.dec_lock_ref(node)


# ---- eviction ----------------------------------------------------------------------------


def test_evict_lru_order_oldest_leaf_first() -> None:
    cache, rec = make()
    cache.insert([1, 1], idx(10, 11))
    cache.insert([2, 2], idx(20, 21))
    cache.insert([3, 3], idx(30, 31))
    cache.match_prefix([1, 1])  # [1, 1] is now the most recently used
    assert cache.evict(1) == 2  # whole leaves go: asks for 1, frees 2
    assert rec.freed_list() == [20, 21]
    assert cache.evict(2) == 2
    assert rec.freed_list() == [20, 21, 30, 31]
    assert cache.evict(0) == 0
    assert cache.evict(-3) == 0
    assert node_keys(cache) == [[1, 1]]
    assert cache.evict(1000) == 2  # frees what it can
    assert rec.freed_list() == [20, 21, 30, 31, 10, 11]
    assert cache.evict(1) == 0
    check_invariants(cache)


def test_evict_insert_refreshes_recency() -> None:
    cache, rec = make()
    cache.insert([1], idx(10))
    cache.insert([2], idx(20))
    assert cache.insert([1], idx(99)) == 1  # a full hit still counts as a use
    cache.evict(1)
    assert rec.freed_list() == [20]


def test_evict_parent_becomes_evictable_after_children() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3], idx(10, 11, 12))
    cache.insert([1, 2, 4], idx(90, 91, 14))  # shares [1, 2]: tree [1, 2] -> {[3], [4]}
    cache.insert([9], idx(50))  # the newest leaf
    assert node_keys(cache) == [[1, 2], [3], [4], [9]]
    assert cache.evict(2) == 2
    assert sorted(rec.freed_list()) == [12, 14]
    # [1, 2] is now a leaf older than [9]: it goes first.
    assert cache.evict(1) == 2
    assert rec.freed_list()[-2:] == [10, 11]
    assert node_keys(cache) == [[9]]
    check_invariants(cache)


def test_evict_exposed_parent_competes_in_lru_order() -> None:
    # The [1, 3] insert touches [1, 2] before splitting it, so both halves are younger than [5];
    # the exposed parent [1] is older than [6].
    cache, rec = make()
    cache.insert([1, 2], idx(10, 11))
    cache.insert([5], idx(50))
    cache.insert([1, 3], idx(90, 13))
    cache.insert([6], idx(60))
    assert node_keys(cache) == [[1], [2], [3], [5], [6]]
    assert cache.evict(1000) == 5
    # [5] (oldest), then [2], then [3], exposing [1] which precedes [6].
    assert rec.freed_list() == [50, 11, 13, 10, 60]
    removed = rec.of_type(BlockRemoved)
    assert len(removed) == 1 and len(removed[0].block_hashes) == 5


def test_freed_indices_are_exactly_the_evicted_ones() -> None:
    rng = random.Random(1234)
    cache, rec = make()
    next_idx = itertools.count()
    for _ in range(200):
        toks = [rng.randrange(4) for _ in range(rng.randint(1, 12))]
        vals = torch.tensor([next(next_idx) for _ in toks], dtype=torch.int64)
        cache.insert(toks, vals)
    before = cache.all_indices().tolist()
    want = cache.total_size() // 2
    freed = cache.evict(want)
    after = cache.all_indices().tolist()
    got = rec.freed_list()
    assert freed == len(got) >= want
    assert len(set(got)) == len(got)
    assert set(got) | set(after) == set(before)
    assert set(got).isdisjoint(after)
    cache.evict(10**9)
    assert sorted(rec.freed_list()) == sorted(before)
    assert cache.total_size() == 0 and cache.nodes() == []


# ---- accounting invariants under random operations --------------------------------------


@pytest.mark.parametrize("page_size", [1, 4])
def test_random_ops_keep_accounting(page_size: int) -> None:
    rng = random.Random(page_size * 7919)
    cache, rec = make(page_size=page_size)
    next_idx = itertools.count()
    live: set[int] = set()  # pool slots the tree owns
    locked: list[TreeNode] = []
    seqs: list[list[int]] = [[]]
    for step in range(1500):
        op = rng.random()
        base = rng.choice(seqs)
        toks = base[: rng.randint(0, len(base))] + [rng.randrange(5) for _ in range(rng.randint(0, 20))]
        if op < 0.4:
            vals = torch.tensor([next(next_idx) for _ in toks], dtype=torch.int64)
            cached = cache.insert(toks, vals)
            n_aligned = len(toks) // page_size * page_size
            assert cached % page_size == 0 and cached <= n_aligned
            # The tree adopted exactly vals[cached:n_aligned]; the caller keeps the rest.
            live.update(vals[cached:n_aligned].tolist())
            seqs.append(toks)
        elif op < 0.7:
            m = cache.match_prefix(toks)
            assert m.length % page_size == 0 and m.length <= len(toks)
            if rng.random() < 0.3:
                cache.inc_lock_ref(m.last_node)
                locked.append(m.last_node)
        elif op < 0.85 and locked:
            cache.dec_lock_ref(locked.pop(rng.randrange(len(locked))))
        else:
            n_before = len(rec.freed)
            freed = cache.evict(rng.randint(1, 30))
            got = torch.cat(rec.freed[n_before:]).tolist() if len(rec.freed) > n_before else []
            assert freed == len(got)
            assert set(got) <= live
            live.difference_update(got)
        assert cache.evictable_size + cache.protected_size == sum(len(n.key) for n in cache.nodes())
        if step % 50 == 0:
            check_invariants(cache)
            assert set(cache.all_indices().tolist()) == live
    for node in locked:
        cache.dec_lock_ref(node)
    check_invariants(cache)
    assert cache.protected_size == 0
    cache.evict(10**9)
    assert cache.total_size() == 0 and cache.evictable_size == 0


# ---- KV events ---------------------------------------------------------------------------


def test_events_block_stored_chains_parent_hashes() -> None:
    cache, rec = make()
    assert isinstance(rec.events[0], AllBlocksCleared)  # published by the constructor's reset
    cache.insert([1, 2, 3], arange(0, 3))
    cache.insert([1, 2, 3, 4, 5], arange(10, 5))
    cache.insert([1, 2, 9], arange(20, 3))  # splits [1, 2, 3]: no event for the split
    cache.insert([1, 2, 9], arange(30, 3))  # fully cached: no event
    stored = rec.of_type(BlockStored)
    assert len(stored) == 3
    a, b, c = stored
    assert a.token_ids == [1, 2, 3] and a.parent_block_hash is None and len(a.block_hashes) == 3
    assert a.block_size == 1
    assert b.token_ids == [4, 5] and b.parent_block_hash == a.block_hashes[-1]
    assert c.token_ids == [9] and c.parent_block_hash == a.block_hashes[1]
    # Hashes are position-aware chains: a page's hash is that of its whole prefix.
    assert a.block_hashes + b.block_hashes == block_hashes([1, 2, 3, 4, 5], None, 1)
    assert c.block_hashes == block_hashes([1, 2, 9], None, 1)[2:]
    # The node that holds each (unsplit) block run carries the same hashes.
    for ev in (b, c):
        toks = ev.token_ids
        node = next(n for n in cache.nodes() if n.key == toks)
        assert node.hashes == ev.block_hashes
        parent = node.parent
        assert parent is not None
        assert ev.parent_block_hash == (parent.hashes[-1] if parent is not cache.root else None)
    # The split halves of [1, 2, 3] keep their hashes.
    upper = cache.root.children[(1,)]
    assert upper.key == [1, 2] and upper.hashes == a.block_hashes[:2]
    assert child_by_key(upper, [3]).hashes == a.block_hashes[2:]


def test_events_parent_hash_is_last_block_of_parent_node() -> None:
    cache, rec = make(page_size=2)
    cache.insert([1, 2, 3, 4, 5, 6], arange(0, 6))
    cache.insert([1, 2, 3, 4, 7, 8, 9, 9], arange(10, 8))  # parent = split node [1, 2, 3, 4]
    first, second = rec.of_type(BlockStored)
    assert second.parent_block_hash == first.block_hashes[1]
    assert second.token_ids == [7, 8, 9, 9] and len(second.block_hashes) == 2
    assert second.block_hashes == block_hashes([1, 2, 3, 4, 7, 8, 9, 9], None, 2)[2:]


def test_events_block_removed_lists_evicted_hashes() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3], arange(0, 3))
    cache.insert([1, 2, 4, 5], arange(10, 4))
    cache.insert([7, 7], arange(20, 2))
    stored = rec.of_type(BlockStored)
    hash_of = {tuple(ev.token_ids): ev.block_hashes for ev in stored}
    cache.evict(1)  # the oldest leaf: [3]
    (rm,) = rec.of_type(BlockRemoved)
    assert rm.block_hashes == hash_of[(1, 2, 3)][2:]
    assert cache.evict(0) == 0 and len(rec.of_type(BlockRemoved)) == 1  # nothing evicted, no event
    cache.evict(10**6)
    removed = [h for ev in rec.of_type(BlockRemoved) for h in ev.block_hashes]
    all_stored = [h for ev in stored for h in ev.block_hashes]
    assert sorted(removed) == sorted(all_stored)
    assert len(set(removed)) == len(removed)


def test_events_removed_per_page() -> None:
    cache, rec = make(page_size=4)
    cache.insert(list(range(12)), arange(0, 12))
    (st,) = rec.of_type(BlockStored)
    assert len(st.block_hashes) == 3
    cache.match_prefix(list(range(4)) + [99] * 4)  # split after the first page
    cache.evict(1)
    (rm,) = rec.of_type(BlockRemoved)
    assert rm.block_hashes == st.block_hashes[1:]


def test_reset_publishes_all_blocks_cleared() -> None:
    cache, rec = make()
    cache.insert([1, 2, 3], arange(0, 3))
    node = cache.match_prefix([1, 2, 3]).last_node
    cache.inc_lock_ref(node)
    rec.events.clear()
    cache.reset()
    assert len(rec.events) == 1 and isinstance(rec.events[0], AllBlocksCleared)
    assert cache.total_size() == 0 and cache.evictable_size == 0 and cache.protected_size == 0
    assert cache.nodes() == [] and cache.match_prefix([1, 2, 3]).length == 0
    assert rec.freed == []  # reset leaves freeing the pool to the caller


# ---- disabled cache ----------------------------------------------------------------------


def test_disabled_cache_caches_nothing() -> None:
    cache, rec = make(disable=True)
    assert cache.insert([1, 2, 3], arange(0, 3)) == 0
    assert cache.insert([1, 2, 3], arange(0, 3)) == 0
    m = cache.match_prefix([1, 2, 3])
    assert m.length == 0 and m.last_node is cache.root
    assert cache.evict(10) == 0
    assert cache.total_size() == 0 and cache.nodes() == []
    assert rec.of_type(BlockStored) == [] and rec.freed == []


# ---- inspection --------------------------------------------------------------------------


def test_nodes_parents_first_and_pretty() -> None:
    cache, _ = make()
    cache.insert([1, 2, 3], arange(0, 3))
    cache.insert([1, 2, 4], arange(3, 3))
    cache.insert([5], arange(6, 1))
    seen: set[int] = {id(cache.root)}
    for n in cache.nodes():
        assert n.parent is not None and id(n.parent) in seen
        seen.add(id(n))
    assert sorted(cache.all_indices().tolist()) == [0, 1, 2, 5, 6]
    cache.inc_lock_ref(cache.match_prefix([5]).last_node)
    text = cache.pretty()
    assert text.splitlines()[0].startswith("[1, 2] (2 tok")
    assert "  [3] (1 tok" in text and "lock=1" in text
    assert "'ab'" in cache.pretty(decode=lambda ids: "ab")
