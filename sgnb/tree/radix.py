"""The mirror's internal radix tree: blocks (one per page hash) grouped into maximal chains.

A ``Node`` is a maximal chain of ``Block`` s in which every block but the last has exactly one
child, all in one state (live or ghost). ``RadixChains`` holds the tree and the surgery that keeps
nodes maximal as blocks come and go: split a node, flip a subtree's state, merge lone parents and
children. It knows nothing of events or requests; ``sgnb.tree.mirror.TreeMirror`` builds on it.
Not thread-safe by itself: the mirror calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Block", "Node", "RadixChains"]


@dataclass(eq=False, slots=True)
class Block:
    hash: int
    tokens: tuple[int, ...]
    stored_at: float
    hits: int = 0
    requests: deque[str] = field(default_factory=lambda: deque(maxlen=32))
    evicted_at: float | None = None
    claimed: bool = False  # some finished request's tokens pass through this block
    media: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class Node:
    blocks: list[Block]
    tokens: list[int]
    parent: Node | None
    children: list[Node] = field(default_factory=list)
    ghost: bool = False
    ghost_since: float = 0.0
    last_used: float = 0.0


class RadixChains:
    """A forest of ``Node`` s under a block-less root, with a block-hash index into it."""

    def __init__(self) -> None:
        self._root = Node([], [], None)
        self._node_of: dict[int, Node] = {}  # block hash -> the node holding it

    def _attach(self, block: Block, parent: int | None, now: float) -> None:
        """Hang a new ``block`` below block hash ``parent`` (None: at the top)."""
        up = self._root if parent is None else self._node_of[parent]
        if parent is not None and up.blocks[-1].hash != parent:
            self._split(up, self._index(up, parent) + 1)
        if up is not self._root and not up.children and not up.ghost:
            up.blocks.append(block)  # the common case: a chain grows at its tail
            up.tokens.extend(block.tokens)
            self._node_of[block.hash] = up
            return
        node = Node([block], list(block.tokens), up, last_used=now)
        up.children.append(node)
        self._node_of[block.hash] = node

    def _index(self, node: Node, h: int) -> int:
        if node.blocks[-1].hash == h:
            return len(node.blocks) - 1
        return next(i for i, b in enumerate(node.blocks) if b.hash == h)

    def _split(self, node: Node, i: int) -> Node:
        """Cut ``node`` before block ``i``; the lower part becomes its only child."""
        assert 0 < i < len(node.blocks)
        offset = sum(len(b.tokens) for b in node.blocks[:i])
        lower = Node(node.blocks[i:], node.tokens[offset:], node, node.children, node.ghost, node.ghost_since)
        lower.last_used = node.last_used
        for child in lower.children:
            child.parent = lower
        for b in lower.blocks:
            self._node_of[b.hash] = lower
        node.blocks, node.tokens, node.children = node.blocks[:i], node.tokens[:offset], [lower]
        return lower

    def _flip(self, node: Node, ghost: bool, now: float) -> None:
        """Set a node and (when it becomes a ghost) everything below it."""
        stack = [node]
        while stack:
            n = stack.pop()
            n.ghost, n.ghost_since = ghost, now
            for b in n.blocks:
                b.evicted_at = now if ghost else None
                if ghost:
                    b.media.clear()
            if ghost:
                stack.extend(c for c in n.children if not c.ghost)

    def _set_state(self, node: Node, indices: set[int], ghost: bool, now: float) -> None:
        """Give the blocks at ``indices`` of ``node`` the new state, splitting where it changes."""
        cuts = [i for i in range(1, len(node.blocks)) if (i in indices) != (i - 1 in indices)]
        pieces = [node]
        for cut in reversed(cuts):
            pieces.insert(1, self._split(node, cut))
        starts = [0, *cuts]
        for piece, start in zip(pieces, starts, strict=True):
            if start in indices:
                self._flip(piece, ghost, now)
        for piece in pieces:
            self._normalize(piece)

    def _normalize(self, node: Node) -> None:
        """Merge ``node`` with a lone parent / lone child of the same state (keeps nodes maximal)."""
        if node.parent is None or not node.blocks:
            return  # the root, or a node already merged away
        while (
            node.parent is not None
            and node.parent is not self._root
            and len(node.parent.children) == 1
            and node.parent.ghost == node.ghost
        ):
            node = node.parent
            self._absorb(node)
        while len(node.children) == 1 and node.children[0].ghost == node.ghost:
            self._absorb(node)

    def _absorb(self, node: Node) -> None:
        (child,) = node.children
        node.blocks += child.blocks
        node.tokens += child.tokens
        node.children = child.children
        node.last_used = max(node.last_used, child.last_used)
        node.ghost_since = max(node.ghost_since, child.ghost_since)
        for c in node.children:
            c.parent = node
        for b in child.blocks:
            self._node_of[b.hash] = node
        child.blocks, child.parent = [], None

    def _walk_nodes(self, top: Node | None = None) -> list[Node]:
        """``top`` and every node below it, pre-order (default: all nodes, the root left out)."""
        out: list[Node] = []
        stack = [top] if top is not None else list(reversed(self._root.children))
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out
