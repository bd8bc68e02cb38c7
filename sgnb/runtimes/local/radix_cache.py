"""RadixAttention's prefix cache: a radix tree over token ids whose nodes own KV-cache slots.

Read this file top to bottom; it is the heart of SGLang's cache, in sgnb's words.

* Every request's tokens are a path from the root. A node holds a run of tokens (``key``)
  and, for each token, the index of its key/value vectors in the KV pool (``value``).
  Two prompts sharing a prefix share the nodes of that prefix, and so share its KV.
* ``match_prefix`` walks down the tree and returns the pool indices of the longest cached
  prefix; the model then computes only the rest. When a match ends inside a node, the
  node is split so the boundary is exact (the split copies no KV: it slices index lists).
* ``insert`` adds a finished request's tokens and KV indices. It returns how much was
  already there, so the caller can free the duplicate slots it computed meanwhile.
* A request in flight holds a *lock ref* on its path (``inc_lock_ref`` / ``dec_lock_ref``),
  so eviction never frees KV that a running forward pass reads.
* ``evict`` frees least-recently-used unlocked leaves until enough slots are free.
* With ``page_size > 1`` keys are cut to whole pages and children are keyed by their first
  page, as in SGLang's paged mode.

The same operations, with the same results on match lengths, as
``sglang.srt.mem_cache.radix_cache.RadixCache`` (tests/test_radix_differential.py checks it).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from sgnb.core.events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent, block_hashes

_clock = itertools.count()  # a logical clock: monotonic, and never ties (time.monotonic can)
_node_ids = itertools.count()


@dataclass(eq=False)
class TreeNode:
    key: list[int] = field(default_factory=list)
    value: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    parent: TreeNode | None = None
    children: dict[tuple[int, ...], TreeNode] = field(default_factory=dict)
    lock_ref: int = 0
    hit_count: int = 0
    last_access: int = field(default_factory=lambda: next(_clock))
    hashes: list[int] = field(default_factory=list)  # one per page, for KV events
    id: int = field(default_factory=lambda: next(_node_ids))

    def is_leaf(self) -> bool:
        return not self.children

    def touch(self) -> None:
        self.last_access = next(_clock)


class MatchResult(NamedTuple):
    indices: torch.Tensor  # pool indices of the matched prefix, in order
    last_node: TreeNode  # lock this node to protect the whole matched path

    @property
    def length(self) -> int:
        return int(self.indices.numel())


class RadixCache:
    def __init__(
        self,
        page_size: int = 1,
        free_slots: Callable[[torch.Tensor], None] | None = None,
        on_event: Callable[[KVEvent], None] | None = None,
        disable: bool = False,
    ) -> None:
        assert page_size >= 1
        self.page_size = page_size
        self.disable = disable
        self._free_slots = free_slots or (lambda _: None)
        self._on_event = on_event or (lambda _: None)
        self.reset()

    # ---- bookkeeping -------------------------------------------------------------------

    def reset(self) -> None:
        """Drop the whole tree (the caller frees the pool). Publishes ``AllBlocksCleared``."""
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0  # tokens in unlocked nodes
        self.protected_size = 0  # tokens in nodes locked by requests in flight
        self._on_event(AllBlocksCleared())

    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    def _page_aligned(self, n: int) -> int:
        return n // self.page_size * self.page_size

    def _child_key(self, tokens: Sequence[int]) -> tuple[int, ...]:
        return tuple(tokens[: self.page_size])

    def _match_len(self, a: Sequence[int], b: Sequence[int]) -> int:
        """Common prefix length of ``a`` and ``b`` in whole pages."""
        n = 0
        limit = min(len(a), len(b))
        step = self.page_size
        while n + step <= limit and list(a[n : n + step]) == list(b[n : n + step]):
            n += step
        return n

    # ---- match -------------------------------------------------------------------------

    def match_prefix(self, tokens: Sequence[int]) -> MatchResult:
        tokens = list(tokens[: self._page_aligned(len(tokens))])
        if self.disable or not tokens:
            return MatchResult(torch.empty(0, dtype=torch.int64), self.root)
        path = list(self._walk(tokens))
        indices = torch.cat([n.value for n in path]) if path else torch.empty(0, dtype=torch.int64)
        return MatchResult(indices, path[-1] if path else self.root)

    def _walk(self, tokens: list[int]) -> Iterator[TreeNode]:
        """The nodes that hold a prefix of ``tokens``, root first (not yielded), each touched: the walk
        of SGLang's ``_match_prefix_helper`` / ``_insert_helper``. A node ``tokens`` leave part-way is
        split there (``_split_node``) and the walk ends at its upper half."""
        node = self.root
        node.touch()
        while tokens and self._child_key(tokens) in node.children:
            node = node.children[self._child_key(tokens)]
            node.touch()
            n = self._match_len(node.key, tokens)
            if n < len(node.key):
                yield self._split(node, n)
                return
            yield node
            tokens = tokens[n:]

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Cut ``child`` after ``n`` tokens; the new upper half takes its place in the tree."""
        assert child.parent is not None and 0 < n < len(child.key)
        pages = n // self.page_size
        upper = TreeNode(
            key=child.key[:n],
            value=child.value[:n],
            parent=child.parent,
            lock_ref=child.lock_ref,
            hit_count=child.hit_count,
            last_access=child.last_access,
            hashes=child.hashes[:pages],
        )
        child.parent.children[self._child_key(upper.key)] = upper
        child.key, child.value, child.hashes = child.key[n:], child.value[n:], child.hashes[pages:]
        child.parent = upper
        upper.children[self._child_key(child.key)] = child
        return upper

    # ---- insert ------------------------------------------------------------------------

    def insert(self, tokens: Sequence[int], indices: torch.Tensor) -> int:
        """Insert ``tokens`` with their KV ``indices``; return how many were cached already.

        The caller owns ``indices[:returned]`` as duplicates of what the tree holds and frees
        them (SGLang's ``cache_finished_req`` does the same). Tokens past the last whole page
        are not inserted: their slots stay with the caller too.
        """
        if self.disable:
            return 0
        n_aligned = self._page_aligned(len(tokens))
        tokens, indices = list(tokens[:n_aligned]), indices[:n_aligned]
        node, matched = self.root, 0
        for node in self._walk(tokens):
            node.hit_count += 1
            matched += len(node.key)
        tokens, indices = tokens[matched:], indices[matched:]
        if tokens:
            parent_hash = node.hashes[-1] if node.hashes else None
            leaf = TreeNode(
                key=tokens,
                value=indices.clone(),
                parent=node,
                hit_count=1,
                hashes=block_hashes(tokens, parent_hash, self.page_size),
            )
            node.children[self._child_key(tokens)] = leaf
            self.evictable_size += len(tokens)
            self._publish_stored(leaf, parent_hash)
        return matched

    def _publish_stored(self, node: TreeNode, parent_hash: int | None) -> None:
        # One event per node, listing every page (SGLang coalesces per-page events this way).
        self._on_event(
            BlockStored(
                block_hashes=list(node.hashes),
                parent_block_hash=parent_hash,
                token_ids=list(node.key),
                block_size=self.page_size,
            )
        )

    # ---- locks -------------------------------------------------------------------------

    def inc_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            assert node.parent is not None
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            assert node.parent is not None and node.lock_ref > 0, "lock ref underflow"
            if node.lock_ref == 1:
                self.evictable_size += len(node.key)
                self.protected_size -= len(node.key)
            node.lock_ref -= 1
            node = node.parent

    # ---- eviction ----------------------------------------------------------------------

    def evict(self, num_tokens: int) -> int:
        """Free at least ``num_tokens`` slots from LRU unlocked leaves, if there are that many.

        Returns the number freed. Freeing a leaf may expose its parent as a new leaf, which
        joins the heap in its own LRU turn.
        """
        if self.disable or num_tokens <= 0:
            return 0
        # The unlocked leaves: SGLang's RadixCache.evictable_leaves, found here when needed.
        heap = [(n.last_access, n.id, n) for n in self.nodes() if n.is_leaf() and n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        removed: list[int] = []
        while freed < num_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            self._free_slots(leaf.value)
            freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            removed.extend(leaf.hashes)
            del parent.children[self._child_key(leaf.key)]
            if parent is not self.root and parent.is_leaf() and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, parent.id, parent))
        if removed:
            self._on_event(BlockRemoved(block_hashes=removed))
        return freed

    # ---- inspection --------------------------------------------------------------------

    def nodes(self) -> list[TreeNode]:
        """Every node but the root, parents before children."""
        out: list[TreeNode] = []
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out

    def stored_events(self) -> list[KVEvent]:
        """The tree as the ``BlockStored`` events that would build it, parents first (a late
        subscriber's replay: the same blocks and hashes the live events carried)."""
        return [
            BlockStored(
                block_hashes=list(node.hashes),
                parent_block_hash=node.parent.hashes[-1]
                if node.parent is not None and node.parent.hashes
                else None,
                token_ids=list(node.key),
                block_size=self.page_size,
            )
            for node in self.nodes()
            if node.hashes
        ]

    def all_indices(self) -> torch.Tensor:
        parts = [n.value for n in self.nodes()]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def pretty(self, decode: Callable[[list[int]], str] | None = None) -> str:
        lines: list[str] = []

        def walk(node: TreeNode, depth: int) -> None:
            for child in sorted(node.children.values(), key=lambda c: c.key):
                label = repr(decode(child.key)) if decode else str(child.key[:8])
                lock = f" lock={child.lock_ref}" if child.lock_ref else ""
                lines.append(f"{'  ' * depth}{label} ({len(child.key)} tok, hits={child.hit_count}{lock})")
                walk(child, depth + 1)

        walk(self.root, 0)
        return "\n".join(lines)
