"""Differential test: sgnb's RadixCache against SGLang's own ``RadixCache`` on random workloads.

SGLang's tree runs on CPU without memory pools (``RadixCache.create_simulated``). Both trees get
the same seeded stream of inserts, matches, lock/unlock pairs and evictions; after every step
the match lengths, the matched KV indices, the already-cached lengths, the evicted slots and the
evictable/protected sizes must agree, and at checkpoints the two trees must have the same shape.
"""

from __future__ import annotations

import itertools
import random
import time
import types
from array import array
from collections.abc import Iterator
from typing import Any

import pytest
import torch

sg_radix = pytest.importorskip("sglang.srt.mem_cache.radix_cache")

from sglang.srt.mem_cache.base_prefix_cache import (  # noqa: E402
    EvictParams,
    InsertParams,
    MatchPrefixParams,
)
from sglang.srt.mem_cache.radix_cache import RadixKey  # noqa: E402

from sgnb.runtimes.local.radix_cache import RadixCache, TreeNode  # noqa: E402

VOCAB = 8
MAX_LEN = 64


class MockAllocator:
    """Stands in for SGLang's token-to-KV pool allocator: records what eviction frees."""

    device = "cpu"

    def __init__(self) -> None:
        self.freed: list[torch.Tensor] = []

    def free_segment(self, indices: torch.Tensor, start_pos: int = 0) -> None:
        self.freed.append(indices.clone())


@pytest.fixture
def sglang_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give SGLang's tree a strictly increasing clock.

    SGLang stamps nodes with ``time.monotonic()``, whose ties (on a coarse clock) would make its
    LRU order depend on heap layout. A counter keeps its order the real one, minus the ties.
    Only the ``time`` name inside SGLang's radix_cache module is replaced.
    """
    counter = itertools.count()
    fake = types.SimpleNamespace(
        monotonic=lambda: float(next(counter)),
        perf_counter=time.perf_counter,
        time=time.time,
    )
    monkeypatch.setattr(sg_radix, "time", fake)


def sg_key(tokens: list[int]) -> Any:
    return RadixKey(token_ids=array("q", tokens), extra_key=None)


def tree_shape(root: Any) -> set[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Every node below ``root`` (sgnb's ``TreeNode`` or SGLang's) as (tokens from the root through
    it, its KV indices, its lock count)."""
    out: set[tuple[tuple[int, ...], tuple[int, ...], int]] = set()
    stack: list[tuple[Any, tuple[int, ...]]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        for child in node.children.values():
            path = prefix + tuple(int(t) for t in child.key)
            out.add((path, tuple(child.value.tolist()), child.lock_ref))
            stack.append((child, path))
    return out


class Pair:
    """Runs each operation on both trees and checks that they agree."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.freed: list[torch.Tensor] = []
        self.ours = RadixCache(page_size=page_size, free_slots=lambda t: self.freed.append(t.clone()))
        self.alloc = MockAllocator()
        self.theirs = sg_radix.RadixCache.create_simulated(page_size=page_size, mock_allocator=self.alloc)
        self.next_index = itertools.count()
        self.locks: list[tuple[TreeNode, Any]] = []
        self.n_matches = 0
        self.n_hits = 0
        self.n_inserts = 0
        self.n_evicted = 0

    def insert(self, tokens: list[int]) -> None:
        values = torch.tensor([next(self.next_index) for _ in tokens], dtype=torch.int64)
        ours = self.ours.insert(tokens, values)
        theirs = self.theirs.insert(InsertParams(key=sg_key(tokens), value=values)).prefix_len
        assert ours == theirs, f"insert({tokens}): sgnb cached {ours}, SGLang prefix_len {theirs}"
        self.n_inserts += 1

    def match(self, tokens: list[int], lock: bool = False) -> None:
        ours = self.ours.match_prefix(tokens)
        theirs = self.theirs.match_prefix(MatchPrefixParams(key=sg_key(tokens)))
        assert ours.length == theirs.device_prefix_len, (
            f"match({tokens}): sgnb {ours.length}, SGLang device_prefix_len {theirs.device_prefix_len}"
        )
        their_indices = self.theirs.path_device_indices(theirs.last_device_node)
        assert ours.indices.tolist() == their_indices.tolist(), f"match({tokens}): indices differ"
        self.n_matches += 1
        self.n_hits += ours.length > 0
        if lock:
            self.ours.inc_lock_ref(ours.last_node)
            self.theirs.inc_lock_ref(theirs.last_device_node)
            self.locks.append((ours.last_node, theirs.last_device_node))

    def unlock(self, rng: random.Random) -> None:
        if self.locks:
            ours, theirs = self.locks.pop(rng.randrange(len(self.locks)))
            self.ours.dec_lock_ref(ours)
            self.theirs.dec_lock_ref(theirs)

    def evict(self, num_tokens: int) -> None:
        self.freed.clear()
        self.alloc.freed.clear()
        ours = self.ours.evict(num_tokens)
        theirs = self.theirs.evict(EvictParams(num_tokens=num_tokens)).num_tokens_evicted
        assert ours == theirs, f"evict({num_tokens}): sgnb freed {ours}, SGLang {theirs}"
        ours_freed = torch.cat(self.freed).tolist() if self.freed else []
        theirs_freed = torch.cat(self.alloc.freed).tolist() if self.alloc.freed else []
        assert ours_freed == theirs_freed, f"evict({num_tokens}): different slots freed (or order)"
        self.n_evicted += ours

    def check_sizes(self) -> None:
        assert self.ours.evictable_size == self.theirs.evictable_size()
        assert self.ours.protected_size == self.theirs.protected_size()

    def check_trees(self) -> None:
        assert self.ours.total_size() == self.theirs.total_size()
        assert tree_shape(self.ours.root) == tree_shape(self.theirs.root_node), "tree shapes differ"


def token_stream(rng: random.Random) -> Iterator[list[int]]:
    """Sequences of length 1..MAX_LEN with many shared prefixes: an earlier one's prefix + new tokens."""
    seqs: list[list[int]] = [[]]
    while True:
        base = rng.choice(seqs)
        keep = rng.randint(0, min(len(base), MAX_LEN))
        n_new = rng.randint(1 if keep == 0 else 0, MAX_LEN - keep)
        tokens = base[:keep] + [rng.randrange(VOCAB) for _ in range(n_new)]
        if len(seqs) < 400:
            seqs.append(tokens)
        else:
            seqs[rng.randrange(1, len(seqs))] = tokens
        yield tokens


@pytest.mark.usefixtures("sglang_clock")
@pytest.mark.parametrize("page_size", [1, 16])
def test_matches_sglang_insert_and_match(page_size: int) -> None:
    rng = random.Random(20240 + page_size)
    pair = Pair(page_size)
    stream = token_stream(rng)
    n_ops = 5000
    for step in range(n_ops):
        tokens = next(stream)
        if rng.random() < 0.5:
            pair.insert(tokens)
        else:
            pair.match(tokens)
        pair.check_sizes()
        if step % 500 == 0:
            pair.check_trees()
    pair.check_trees()
    assert pair.ours.total_size() > 0
    assert pair.n_hits > pair.n_matches // 4  # the workload really exercises shared prefixes
    assert pair.n_inserts + pair.n_matches == n_ops


@pytest.mark.usefixtures("sglang_clock")
@pytest.mark.parametrize("page_size", [1, 16])
def test_matches_sglang_with_locks_and_eviction(page_size: int) -> None:
    # Both trees evict whole LRU leaves until at least num_tokens are freed, skip locked nodes,
    # and push a parent once its last child goes, so their evictions can be compared exactly:
    # tokens freed, which slots, and in which order.
    rng = random.Random(777 + page_size)
    pair = Pair(page_size)
    stream = token_stream(rng)
    for step in range(5000):
        tokens = next(stream)
        r = rng.random()
        if r < 0.38:
            pair.insert(tokens)
        elif r < 0.76:
            pair.match(tokens)
        elif r < 0.86:
            pair.match(tokens, lock=True)
        elif r < 0.94:
            pair.unlock(rng)
        else:
            pair.evict(rng.randint(1, 4 * MAX_LEN))
        pair.check_sizes()
        if step % 500 == 0:
            pair.check_trees()
    pair.check_trees()
    while pair.locks:
        pair.unlock(rng)
    pair.check_sizes()
    assert pair.ours.protected_size == 0
    pair.evict(10**9)
    pair.check_trees()
    assert pair.ours.total_size() == 0
    assert pair.n_evicted > 0
