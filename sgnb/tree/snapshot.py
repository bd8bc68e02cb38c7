"""What a ``TreeMirror`` hands out: snapshot nodes, finished-request records, the token decoder.

These are plain data: views (``sgnb.widgets``) read a ``TreeSnapshot`` and never touch the mirror's
internal tree. ``sgnb.tree.mirror`` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Decode", "MirrorNode", "RequestRecord", "TreeSnapshot", "make_decode"]

Decode = Callable[[list[int]], str]


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
