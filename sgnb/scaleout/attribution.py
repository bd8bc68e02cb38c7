"""Which worker served a request, from the workers' own KV events (never guessed).

SGLang's router does not say where it sent a request. Each worker does say what it cached: its KV
events (``BlockStored``: block hashes, the parent block's hash, the tokens). The worker that ran a
request stores the tokens it had to compute, the prompt past its cached prefix and the output,
after the request was sent. So a request is tagged with worker W when W's events stored a block of
the request's own token sequence, past ``cached_tokens``, no earlier than the request was sent,
and no other worker's events did. When no worker's events show it (a full cache hit stores
nothing new) or two do (identical requests at once on two workers), the tag is ``None``: unknown.

Blocks are matched by tokens and parent links, not by recomputing hashes, so this works for
``sgnb serve`` and for SGLang's own servers, whose hash function differs between releases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sgnb.core.events import RequestFinished

ROOT = None
SETTLE_S = 0.05  # after the first worker's evidence, wait this long for a second one
TIMEOUT_S = 3.0  # KV events trail the HTTP response by milliseconds; give up after this


class BlockIndex:
    """The blocks one worker's KV events stored: tokens, parent and when each was stored.

    ``handle`` is an EventHub subscriber. Removed blocks stay (attribution asks what was *stored*
    since a time); the oldest are dropped beyond ``max_blocks``.
    """

    def __init__(self, max_blocks: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self.max_blocks = max_blocks
        self._clock = clock
        self._lock = threading.Lock()
        self._blocks: dict[int, tuple[int | None, tuple[int, ...], float]] = {}
        self._children: dict[int | None, dict[int, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def handle(self, event: Any) -> None:
        if type(event).__name__ != "BlockStored":
            return
        hashes = [int(h) for h in getattr(event, "block_hashes", [])]
        tokens = [int(t[0]) if isinstance(t, list | tuple) else int(t) for t in event.token_ids]
        if not hashes:
            return
        size = max(1, -(-len(tokens) // len(hashes)))  # pages of block_size (the last may be short)
        parent = event.parent_block_hash
        now = self._clock()
        with self._lock:
            for i, h in enumerate(hashes):
                chunk = tuple(tokens[i * size : (i + 1) * size])
                if h in self._blocks:
                    self._blocks.pop(h)  # stored again (after an eviction): newest time, newest slot
                else:
                    kids = self._children.setdefault(parent, {})
                    kids.setdefault(chunk[0] if chunk else -1, []).append(h)
                self._blocks[h] = (parent, chunk, now)
                parent = h
            if len(self._blocks) > self.max_blocks:
                self._prune(len(self._blocks) - self.max_blocks + self.max_blocks // 10)

    def _prune(self, n: int) -> None:
        for h in list(self._blocks)[:n]:
            parent, chunk, _ = self._blocks.pop(h)
            siblings = self._children.get(parent, {}).get(chunk[0] if chunk else -1, [])
            if h in siblings:
                siblings.remove(h)
            self._children.pop(h, None)

    def stored_since(self, tokens: Sequence[int], start: int, since: float) -> bool:
        """Whether a block of ``tokens`` ending past position ``start`` was stored at ``since`` or later."""
        with self._lock:
            parent: int | None = ROOT
            pos = 0
            while pos < len(tokens):
                found = None
                for h in self._children.get(parent, {}).get(int(tokens[pos]), []):
                    entry = self._blocks.get(h)
                    if entry is not None and tuple(tokens[pos : pos + len(entry[1])]) == entry[1]:
                        found = h, entry
                        break
                if found is None:
                    return False
                h, (_, chunk, stored_at) = found
                pos += len(chunk)
                if pos > start and stored_at >= since:
                    return True
                parent = h
            return False


@dataclass
class _Pending:
    event: RequestFinished
    tokens: list[int]
    since: float
    deadline: float
    seen_at: float = 0.0


class Attributor:
    """Tags finished requests with the worker whose KV events show it served them.

    ``submit(event, sent_at)`` queues a ``RequestFinished`` (``prompt_ids`` and ``output_ids``
    filled in); a background thread calls ``on_tagged(event, worker_index_or_None)`` once the
    workers' events decide it, or after ``timeout_s`` with None. ``served_by`` maps rid -> index.
    """

    def __init__(
        self,
        indexes: list[BlockIndex],
        on_tagged: Callable[[RequestFinished, int | None], None],
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.indexes = indexes
        self.on_tagged = on_tagged
        self.timeout_s = timeout_s
        self.served_by: dict[str, int | None] = {}
        self._pending: list[_Pending] = []
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sgnb-cluster-attribution", daemon=True)
        self._thread.start()

    def submit(self, event: RequestFinished, sent_at: float) -> None:
        tokens = list(event.prompt_ids) + list(event.output_ids)
        pending = _Pending(event, tokens, sent_at, time.time() + self.timeout_s)
        with self._lock:
            self._pending.append(pending)
            self._lock.notify_all()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until every submitted request is tagged and ``on_tagged`` has returned for it (True),
        or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.pending()

    def _decide(self, p: _Pending, now: float) -> tuple[bool, int | None]:
        start = int(p.event.cached_tokens)
        hits = [i for i, idx in enumerate(self.indexes) if idx.stored_since(p.tokens, start, p.since)]
        if len(hits) > 1:
            return True, None
        if len(hits) == 1:
            if not p.seen_at:
                p.seen_at = now
            return now - p.seen_at >= SETTLE_S, hits[0]
        return now >= p.deadline, None

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    return
                if not self._pending:
                    self._lock.wait(0.5)
                    continue
                pending = list(self._pending)
            now = time.time()
            done: list[tuple[_Pending, int | None]] = []
            for p in pending:
                finished, worker = self._decide(p, now)
                if finished:
                    done.append((p, worker))
            for p, worker in done:
                self.served_by[p.event.rid] = worker
                try:
                    self.on_tagged(p.event, worker)
                except Exception:  # a view's failure must not stop tagging
                    import logging

                    logging.getLogger(__name__).exception("tagging %s failed", p.event.rid)
                # Pending until published: wait() returning means the session and its views have it.
                with self._lock:
                    self._pending.remove(p)
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout=2)
