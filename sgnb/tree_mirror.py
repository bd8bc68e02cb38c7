"""``TreeMirror``: the radix tree, rebuilt from KV events alone.

A runtime publishes ``BlockStored`` / ``BlockRemoved`` / ``AllBlocksCleared`` (SGLang's KV-event
shape, one chained hash per page) and ``RequestFinished``. The mirror keeps one *block* per page
hash and groups blocks into radix *nodes*: a node is a maximal chain of blocks in which every
block but the last has exactly one child (and all share one state, live or evicted). So SGLang's
page-size-1 stream (one ``BlockStored`` per token) and sgnb's one-event-per-node stream give the
same tree. Nodes are kept up to date as events arrive (split, extend, merge), so a snapshot costs
O(nodes), not O(tokens).

Per node it tracks text, token count, hits (finished requests whose prompt enters the node), last
use, in-flight (stored by a request that has not finished yet) and eviction: removed blocks stay
for ``fade_s`` seconds as ghosts, so a view can fade them out, then they are dropped.

It only reads events, so it serves the local runtime and a real ``sglang.Engine`` alike. All
methods are thread-safe: events arrive on the runtime's thread, views read on theirs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

__all__ = ["MirrorNode", "RequestRecord", "TreeMirror", "TreeSnapshot"]

Decode = Callable[[list[int]], str]
PENDING_RETRY_S = 5.0  # how long a finished request waits for KV events that arrive after it


@dataclass(eq=False)
class RequestRecord:
    """A finished request as the mirror saw it; ``path`` is the block hashes its tokens cover."""

    rid: str
    prompt_ids: list[int]
    output_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    ts: float
    path: list[int] = field(default_factory=list)
    pos: int = 0  # tokens walked so far (the walk resumes when late KV events arrive)
    retry_until: float = 0.0


@dataclass
class MirrorNode:
    """One radix node of a snapshot. ``id`` is the hash of its first block, as a string."""

    id: str
    parent: str | None
    children: list[str]
    tokens: list[int]
    text: str
    hits: int
    stored_at: float
    last_used: float
    evicted_at: float | None
    in_flight: bool
    on_last_path: bool
    depth: int
    requests: list[str]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def evicted(self) -> bool:
        return self.evicted_at is not None


@dataclass
class TreeSnapshot:
    nodes: dict[str, MirrorNode]
    roots: list[str]
    version: int
    time: float
    last_request: RequestRecord | None = None

    def live(self) -> list[MirrorNode]:
        return [n for n in self.nodes.values() if not n.evicted]

    def paths(self, include_evicted: bool = False) -> set[tuple[int, ...]]:
        """Token sequences from the root to every leaf (a leaf: no child of the same kind)."""
        out: set[tuple[int, ...]] = set()
        stack: list[tuple[str, tuple[int, ...]]] = [(nid, ()) for nid in self.roots]
        while stack:
            nid, prefix = stack.pop()
            node = self.nodes[nid]
            if node.evicted and not include_evicted:
                continue
            path = prefix + tuple(node.tokens)
            kids = [c for c in node.children if include_evicted or not self.nodes[c].evicted]
            if not kids:
                out.add(path)
            stack.extend((c, path) for c in kids)
        return out


def make_decode(decode: Decode | Any) -> Decode:
    """A tokenizer (``.decode``), a function of token ids, or None (ids joined by spaces)."""
    if decode is None:
        return lambda ids: " ".join(str(t) for t in ids)
    if hasattr(decode, "decode"):
        tok = decode
        return lambda ids: str(tok.decode(ids))
    return decode


@dataclass(eq=False, slots=True)
class _Block:
    hash: int
    tokens: tuple[int, ...]
    stored_at: float
    hits: int = 0
    requests: deque[str] = field(default_factory=lambda: deque(maxlen=32))
    evicted_at: float | None = None
    claimed: bool = False  # some finished request's tokens pass through this block
    media: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class _Node:
    blocks: list[_Block]
    tokens: list[int]
    parent: _Node | None
    children: list[_Node] = field(default_factory=list)
    ghost: bool = False
    ghost_since: float = 0.0
    last_used: float = 0.0


def _local_runtime(source: Any) -> bool:
    """sgnb's LocalRuntime, running, and we are not on its scheduler thread."""
    scheduler = getattr(source, "scheduler", None)
    return (
        scheduler is not None
        and hasattr(getattr(source, "cache", None), "nodes")
        and not getattr(source, "_stopped", True)
        and getattr(scheduler, "_thread", None) is not threading.current_thread()
    )


class TreeMirror:
    """Rebuilds the radix tree from KV events. ``TreeMirror(hub_or_runtime, decode=tokenizer)``.

    Given sgnb's own LocalRuntime it first loads what is already cached (read on the scheduler
    thread, so no event is missed or seen twice); from a bare hub it sees what happens next.
    """

    def __init__(
        self,
        source: Any = None,
        *,
        decode: Decode | Any = None,
        fade_s: float = 1.5,
        in_flight_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        max_requests: int = 2000,
    ) -> None:
        self.fade_s = fade_s
        self.in_flight_timeout_s = in_flight_timeout_s
        self._clock = clock
        self._lock = threading.RLock()
        self._root = _Node([], [], None)
        self._node_of: dict[int, _Node] = {}  # block hash -> the node holding it
        self._requests: deque[RequestRecord] = deque(maxlen=max_requests)
        self._by_rid: dict[str, RequestRecord] = {}
        self._pending: list[RequestRecord] = []
        self._last: RequestRecord | None = None
        self._version = 0
        self._listeners: list[Callable[[], None]] = []
        self._text_cache: dict[tuple[int, int], str] = {}
        self._snap: TreeSnapshot | None = None
        self._unsubscribe: Callable[[], None] | None = None
        hub = getattr(source, "hub", source)
        if decode is None and source is not None:
            decode = getattr(source, "tokenizer", None)
        self._decode = make_decode(decode)
        if _local_runtime(source):
            source.scheduler.call(lambda: self._seed_and_attach(source))
        elif hub is not None:
            self.attach(hub)

    # ---- wiring --------------------------------------------------------------------------

    def attach(self, hub: Any) -> Callable[[], None]:
        """Subscribe to ``hub`` (anything with ``subscribe(fn) -> unsubscribe``)."""
        self.detach()
        self._unsubscribe = hub.subscribe(self.handle)
        return self.detach

    def _seed_and_attach(self, rt: Any) -> None:
        """On sgnb's scheduler thread (nothing publishes meanwhile): what is cached, then follow."""
        with self._lock:
            now = self._clock()
            for node in rt.cache.nodes():  # parents first
                parent = node.parent
                stored = SimpleNamespace(
                    block_hashes=list(node.hashes),
                    parent_block_hash=parent.hashes[-1] if parent is not None and parent.hashes else None,
                    token_ids=list(node.key),
                    block_size=rt.cache.page_size,
                )
                self._store(stored, now)
            self._changed()
        self.attach(rt.hub)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_change(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` (on the publisher's thread) after every event that changed the tree."""
        with self._lock:
            self._listeners.append(fn)

        def off() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return off

    @property
    def version(self) -> int:
        return self._version

    def now(self) -> float:
        """The mirror's clock (``time.time`` unless one was given)."""
        return self._clock()

    def decode(self, ids: Iterable[int]) -> str:
        return self._decode(list(ids))

    # ---- events --------------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        """Apply one event (sgnb's or SGLang's, by class name; a ``KVEventBatch`` is unpacked)."""
        batch = getattr(event, "events", None)
        if isinstance(batch, list):
            for ev in batch:
                self.handle(ev)
            return
        kind = type(event).__name__
        with self._lock:
            now = self._clock()
            if kind == "BlockStored":
                self._store(event, now)
            elif kind == "BlockRemoved":
                self._remove(event, now)
            elif kind == "AllBlocksCleared":
                self._clear(now)
            elif kind == "RequestFinished":
                self._finish(event, now)
            else:
                return
            self._changed()
            listeners = list(self._listeners)
        for fn in listeners:
            fn()

    def replay(self, events: Iterable[Any]) -> None:
        for ev in events:
            self.handle(ev)

    def _changed(self) -> None:
        self._version += 1
        self._snap = None

    def _store(self, ev: Any, now: float) -> None:
        hashes = [int(h) for h in getattr(ev, "block_hashes", [])]
        raw = getattr(ev, "token_ids", [])
        tokens = [int(t[0]) if isinstance(t, (tuple, list)) else int(t) for t in raw]  # bigram pages: first
        if not hashes:
            return
        size = int(getattr(ev, "block_size", 0) or 0)
        if len(hashes) == 1:
            chunks = [tokens]
        else:
            if size * (len(hashes) - 1) >= len(tokens) or size * len(hashes) < len(tokens):
                size = -(-len(tokens) // len(hashes))  # not page-shaped: split evenly
            chunks = [tokens[i * size : (i + 1) * size] for i in range(len(hashes))]
        medium = str(getattr(ev, "medium", None) or "GPU")
        parent = getattr(ev, "parent_block_hash", None)
        parent = int(parent) if parent is not None and int(parent) in self._node_of else None
        for h, chunk in zip(hashes, chunks, strict=True):
            node = self._node_of.get(h)
            if node is None:
                block = _Block(h, tuple(chunk), now)
                self._attach(block, parent, now)
            else:
                i = self._index(node, h)
                block = node.blocks[i]
                if node.ghost:  # stored again while fading out: back to life
                    block.evicted_at, block.stored_at, block.claimed = None, now, False
                    self._set_state(node, {i}, False, now)
            block.media.add(medium)
            self._node_of[h].last_used = now
            parent = h
        if self._pending:
            self._pending = [r for r in self._pending if r.retry_until > now]
            for rec in list(self._pending):
                self._walk(rec, now)

    def _attach(self, block: _Block, parent: int | None, now: float) -> None:
        up = self._root if parent is None else self._node_of[parent]
        if parent is not None and up.blocks[-1].hash != parent:
            self._split(up, self._index(up, parent) + 1)
        if up is not self._root and not up.children and not up.ghost:
            up.blocks.append(block)  # the common case: a chain grows at its tail
            up.tokens.extend(block.tokens)
            self._node_of[block.hash] = up
            return
        node = _Node([block], list(block.tokens), up, last_used=now)
        up.children.append(node)
        self._node_of[block.hash] = node

    def _remove(self, ev: Any, now: float) -> None:
        medium = str(getattr(ev, "medium", None) or "GPU")
        first: dict[int, tuple[int, int]] = {}  # id(node) -> (first index evicted, its block hash)
        where: dict[int, dict[int, int]] = {}  # id(node) -> block hash -> index (one scan per node)
        for h in map(int, getattr(ev, "block_hashes", [])):
            node = self._node_of.get(h)
            if node is None or node.ghost:
                continue
            if id(node) not in where:
                where[id(node)] = {b.hash: i for i, b in enumerate(node.blocks)}
            i = where[id(node)][h]
            node.blocks[i].media.discard(medium)
            if not node.blocks[i].media and (id(node) not in first or i < first[id(node)][0]):
                first[id(node)] = (i, h)
        for _, h in first.values():  # a removed block takes what hangs below it along
            node = self._node_of[h]  # looked up again: evicting one node can merge or split others
            if not node.ghost:
                self._set_state(node, set(range(self._index(node, h), len(node.blocks))), True, now)

    def _clear(self, now: float) -> None:
        for node in self._walk_nodes():
            if not node.ghost:
                self._flip(node, True, now)
        for node in self._walk_nodes():
            self._normalize(node)
        self._pending.clear()

    # ---- node surgery ----------------------------------------------------------------------

    def _index(self, node: _Node, h: int) -> int:
        if node.blocks[-1].hash == h:
            return len(node.blocks) - 1
        return next(i for i, b in enumerate(node.blocks) if b.hash == h)

    def _split(self, node: _Node, i: int) -> _Node:
        """Cut ``node`` before block ``i``; the lower part becomes its only child."""
        assert 0 < i < len(node.blocks)
        offset = sum(len(b.tokens) for b in node.blocks[:i])
        lower = _Node(
            node.blocks[i:], node.tokens[offset:], node, node.children, node.ghost, node.ghost_since
        )
        lower.last_used = node.last_used
        for child in lower.children:
            child.parent = lower
        for b in lower.blocks:
            self._node_of[b.hash] = lower
        node.blocks, node.tokens, node.children = node.blocks[:i], node.tokens[:offset], [lower]
        return lower

    def _flip(self, node: _Node, ghost: bool, now: float) -> None:
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

    def _set_state(self, node: _Node, indices: set[int], ghost: bool, now: float) -> None:
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

    def _normalize(self, node: _Node) -> None:
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

    def _absorb(self, node: _Node) -> None:
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

    def _walk_nodes(self, top: _Node | None = None) -> list[_Node]:
        """``top`` and every node below it, pre-order (default: all nodes, the root left out)."""
        out: list[_Node] = []
        stack = [top] if top is not None else list(reversed(self._root.children))
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    def _gc(self, now: float) -> None:
        """Drop ghosts whose fade-out is over, with their ghost subtrees."""
        for node in self._walk_nodes():
            if node.parent is None or not node.ghost or now - node.ghost_since < self.fade_s:
                continue
            if any(not n.ghost for n in self._walk_nodes(node)):
                continue  # something below was stored again
            parent = node.parent
            for n in self._walk_nodes(node):
                n.parent = None  # detached: later visits in this loop skip it
                for b in n.blocks:
                    self._node_of.pop(b.hash, None)
            parent.children.remove(node)
            self._normalize(parent)
            self._changed()

    # ---- requests ------------------------------------------------------------------------

    def _finish(self, ev: Any, now: float) -> None:
        rec = RequestRecord(
            rid=str(getattr(ev, "rid", "")),
            prompt_ids=[int(t) for t in getattr(ev, "prompt_ids", []) or []],
            output_ids=[int(t) for t in getattr(ev, "output_ids", []) or []],
            prompt_tokens=int(getattr(ev, "prompt_tokens", 0) or 0),
            cached_tokens=int(getattr(ev, "cached_tokens", 0) or 0),
            ts=float(getattr(ev, "ts", now) or now),
        )
        if len(self._requests) == self._requests.maxlen:
            self._by_rid.pop(self._requests[0].rid, None)
        self._requests.append(rec)
        self._by_rid[rec.rid] = rec
        self._last = rec
        self._walk(rec, now)
        if rec.pos < len(rec.prompt_ids) - 1:  # KV events may lag behind (ZMQ): retry on later stores
            rec.retry_until = now + PENDING_RETRY_S
            self._pending = [*self._pending[-15:], rec]

    def _walk(self, rec: RequestRecord, now: float) -> None:
        """Follow ``rec``'s tokens down the tree from where the last walk stopped."""
        tokens = rec.prompt_ids + rec.output_ids[:-1]
        pos = rec.pos
        node, i = self._root, 0
        if rec.path:
            node_or_none = self._node_of.get(rec.path[-1])
            if node_or_none is None or node_or_none.ghost:
                return
            node, i = node_or_none, self._index(node_or_none, rec.path[-1]) + 1
        while pos < len(tokens):
            if i < len(node.blocks):
                block: _Block | None = node.blocks[i]
                if block is not None and tuple(tokens[pos : pos + len(block.tokens)]) != block.tokens:
                    block = None
            else:
                block = None
                for child in node.children:
                    b = child.blocks[0]
                    if not child.ghost and tuple(tokens[pos : pos + len(b.tokens)]) == b.tokens:
                        node, i, block = child, 0, b
                        break
            if block is None:
                break
            if pos < len(rec.prompt_ids):
                block.hits += 1
                block.requests.append(rec.rid)
            block.claimed = True
            node.last_used = now
            rec.path.append(block.hash)
            pos += len(block.tokens)
            i += 1
        rec.pos = pos
        if pos >= len(rec.prompt_ids) - 1 and rec in self._pending:
            self._pending.remove(rec)

    # ---- reading -------------------------------------------------------------------------

    def snapshot(self) -> TreeSnapshot:
        """The current tree as radix nodes (cached until the next change)."""
        with self._lock:
            now = self._clock()
            self._gc(now)
            if self._snap is None:
                self._snap = self._build(now)
            return self._snap

    def _build(self, now: float) -> TreeSnapshot:
        nodes: dict[str, MirrorNode] = {}
        on_path = set(self._last.path) if self._last else set()
        if len(self._text_cache) > 200_000:
            self._text_cache.clear()
        stack: list[tuple[_Node, str | None, int]] = [(n, None, 0) for n in reversed(self._root.children)]
        while stack:
            node, parent_id, depth = stack.pop()
            first, last = node.blocks[0], node.blocks[-1]
            nid = str(first.hash)
            key = (first.hash, len(node.tokens))
            text = self._text_cache.get(key)
            if text is None:
                text = self._text_cache[key] = self._decode(list(node.tokens))
            nodes[nid] = MirrorNode(
                id=nid,
                parent=parent_id,
                children=[str(c.blocks[0].hash) for c in node.children],
                tokens=list(node.tokens),
                text=text,
                hits=first.hits,
                stored_at=first.stored_at,
                last_used=node.last_used,
                evicted_at=node.ghost_since if node.ghost else None,
                in_flight=not node.ghost
                and not last.claimed
                and now - last.stored_at < self.in_flight_timeout_s,
                on_last_path=first.hash in on_path,
                depth=depth,
                requests=list(first.requests),
            )
            stack += [(c, nid, depth + 1) for c in reversed(node.children)]
        roots = [str(n.blocks[0].hash) for n in self._root.children]
        return TreeSnapshot(nodes, roots, self._version, now, self._last)

    def paths(self, include_evicted: bool = False) -> set[tuple[int, ...]]:
        return self.snapshot().paths(include_evicted)

    def node_count(self, include_evicted: bool = False) -> int:
        snap = self.snapshot()
        return len(snap.nodes) if include_evicted else len(snap.live())

    def block_count(self) -> int:
        with self._lock:
            return sum(len(n.blocks) for n in self._walk_nodes() if not n.ghost)

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def request(self, rid: str) -> RequestRecord | None:
        with self._lock:
            return self._by_rid.get(rid)

    def __repr__(self) -> str:
        live = self.snapshot().live()
        return f"TreeMirror({len(live)} nodes, {sum(n.n_tokens for n in live)} tokens)"
