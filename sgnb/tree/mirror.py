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

It only reads sgnb's own events (:mod:`sgnb.core.events`; SGLang's are converted once, by
:func:`sgnb.runtimes.kv_subscriber.convert`), so it serves the local runtime, a real
``sglang.Engine`` and a server alike. Opened late on a runtime, it asks the runtime to replay its
tree as events (:class:`sgnb.core.events.TreeSource`) and then follows. All methods are thread-safe:
events arrive on the runtime's thread, views read on theirs.

This module turns events and finished requests into tree changes and snapshots. The tree itself
(blocks, nodes, split / merge surgery) is in ``sgnb.tree.radix``; the snapshot types it hands out
(``TreeSnapshot``, ``MirrorNode``, ``RequestRecord``) are in ``sgnb.tree.snapshot``, re-exported here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sgnb.core.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    EventHub,
    Listeners,
    RequestFinished,
    TokenStep,
    TreeSource,
    page_chunks,
)
from sgnb.tree.radix import Block, Node, RadixChains
from sgnb.tree.snapshot import Decode, MirrorNode, RequestRecord, TreeSnapshot, make_decode

__all__ = ["MirrorNode", "RequestRecord", "TreeMirror", "TreeSnapshot"]

PENDING_RETRY_S = 5.0  # how long a finished request waits for KV events that arrive after it


class TreeMirror(RadixChains):
    """Rebuilds the radix tree from KV events. ``TreeMirror(runtime_or_hub, decode=tokenizer)``.

    Given a runtime (a :class:`sgnb.core.events.TreeSource`) it first replays what the runtime holds
    now, then follows its hub, with no event missed or seen twice; from a bare hub it sees what
    happens next.
    """

    def __init__(
        self,
        source: TreeSource | EventHub | None = None,
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
        super().__init__()
        self._requests: deque[RequestRecord] = deque(maxlen=max_requests)
        self._by_rid: dict[str, RequestRecord] = {}
        self._pending: list[RequestRecord] = []
        self._last: RequestRecord | None = None
        self._version = 0
        self._changes: Listeners[None] = Listeners()
        self._text_cache: dict[tuple[int, int], str] = {}
        self._snap: TreeSnapshot | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if decode is None and source is not None:
            decode = getattr(source, "tokenizer", None)
        self._decode = make_decode(decode)
        if isinstance(source, TreeSource):
            self._unsubscribe = source.follow(self.handle)
        elif source is not None:
            self.attach(getattr(source, "hub", source))

    # ---- wiring --------------------------------------------------------------------------

    def attach(self, hub: Any) -> Callable[[], None]:
        """Subscribe to ``hub`` (anything with ``subscribe(fn) -> unsubscribe``)."""
        self.detach()
        self._unsubscribe = hub.subscribe(self.handle)
        return self.detach

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_change(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` (on the publisher's thread) after every event that changed the tree."""
        return self._changes.subscribe(lambda _: fn())

    @property
    def version(self) -> int:
        return self._version

    def now(self) -> float:
        """The mirror's clock (``time.time`` unless one was given)."""
        return self._clock()

    def decode(self, ids: Iterable[int]) -> str:
        return self._decode(list(ids))

    # ---- events --------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Apply one sgnb event; TypeError for anything else (SGLang's own events included: convert
        them first with :func:`sgnb.runtimes.kv_subscriber.convert`)."""
        if isinstance(event, TokenStep):
            return  # the token view's feed: nothing for the tree
        with self._lock:
            now = self._clock()
            if isinstance(event, BlockStored):
                self._store(event, now)
            elif isinstance(event, BlockRemoved):
                self._remove(event, now)
            elif isinstance(event, AllBlocksCleared):
                self._clear(now)
            elif isinstance(event, RequestFinished):
                self._finish(event, now)
            else:
                raise TypeError(
                    f"TreeMirror takes sgnb events (sgnb.core.events), not {type(event).__name__}"
                )
            self._changed()
        self._changes.call(None)

    def replay(self, events: Iterable[Event]) -> None:
        for ev in events:
            self.handle(ev)

    def _changed(self) -> None:
        self._version += 1
        self._snap = None

    def _store(self, ev: BlockStored, now: float) -> None:
        medium = ev.medium or "GPU"
        parent = ev.parent_block_hash
        parent = int(parent) if parent is not None and int(parent) in self._node_of else None
        for h, chunk in page_chunks(ev):
            node = self._node_of.get(h)
            if node is None:
                block = Block(h, tuple(chunk), now)
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

    def _remove(self, ev: BlockRemoved, now: float) -> None:
        medium = ev.medium or "GPU"
        first: dict[int, tuple[int, int]] = {}  # id(node) -> (first index evicted, its block hash)
        where: dict[int, dict[int, int]] = {}  # id(node) -> block hash -> index (one scan per node)
        for h in map(int, ev.block_hashes):
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

    def _finish(self, ev: RequestFinished, now: float) -> None:
        rec = RequestRecord(
            rid=str(ev.rid),
            prompt_ids=[int(t) for t in ev.prompt_ids],
            output_ids=[int(t) for t in ev.output_ids],
            prompt_tokens=int(ev.prompt_tokens or 0),
            cached_tokens=int(ev.cached_tokens or 0),
            ts=float(ev.ts or now),
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
                block: Block | None = node.blocks[i]
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
        stack: list[tuple[Node, str | None, int]] = [(n, None, 0) for n in reversed(self._root.children)]
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
