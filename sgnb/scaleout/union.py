"""The cluster's cache as one tree: the union of the workers' KV event streams.

``%sglang tree`` on a cluster session draws the session runtime's hub. ``UnionStream`` feeds it
every block that at least one worker holds: a ``BlockStored`` passes through (the tree mirror keys
blocks by hash, so a prefix both workers store is one node), a ``BlockRemoved`` passes only for the
blocks no worker holds any more, and one worker's ``AllBlocksCleared`` becomes the removal of what
only that worker held. The per-worker trees (``cluster.mirrors``) show where each block lives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sgnb.core.events import BlockRemoved


class UnionStream:
    def __init__(self, workers: int, publish: Callable[[Any], None]) -> None:
        self.publish = publish
        self._held: list[set[int]] = [set() for _ in range(workers)]
        self._lock = threading.Lock()

    def subscriber(self, worker: int) -> Callable[[Any], None]:
        """The EventHub subscriber for worker ``worker``'s KV events."""
        return lambda event: self.handle(worker, event)

    def handle(self, worker: int, event: Any) -> None:
        kind = type(event).__name__
        with self._lock:
            if kind == "BlockStored":
                self._held[worker].update(int(h) for h in event.block_hashes)
                out: Any = event
            elif kind == "BlockRemoved":
                mine = self._held[worker]
                hashes = [int(h) for h in event.block_hashes if int(h) in mine]
                mine.difference_update(hashes)
                gone = [h for h in hashes if not any(h in held for held in self._held)]
                out = BlockRemoved(block_hashes=gone, medium=getattr(event, "medium", None)) if gone else None
            elif kind == "AllBlocksCleared":
                mine, self._held[worker] = self._held[worker], set()
                gone = [h for h in mine if not any(h in held for held in self._held)]
                out = BlockRemoved(block_hashes=gone) if gone else None
            else:
                return
        if out is not None:
            self.publish(out)
