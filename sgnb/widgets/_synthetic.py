"""A random radix tree as KV events, for demos, tests and benchmarks of the views."""

from __future__ import annotations

import random
from typing import Any

from sgnb.core.events import BlockStored, block_hashes


def synthetic_events(n_nodes: int, *, seed: int = 0, deepen: float = 0.45) -> list[Any]:
    """``BlockStored`` events for a random radix tree of exactly ``n_nodes`` nodes (n >= 2).

    For demos and benchmarks of the views. Every internal node has at least two children, so the
    mirror's node count is ``n_nodes``; tokens are small ids, one block per token (page size 1).
    """
    assert n_nodes >= 2
    rng = random.Random(seed)
    parent: list[int] = [-1, -1]  # node -> parent index (-1: the root)
    kids: dict[int, list[int]] = {-1: [0, 1]}
    internal = [-1]
    leaves = [0, 1]
    while len(parent) < n_nodes:
        if len(parent) <= n_nodes - 2 and rng.random() < deepen:  # a leaf grows two children
            leaf = leaves.pop(rng.randrange(len(leaves)))
            new = [len(parent), len(parent) + 1]
            parent += [leaf, leaf]
            kids[leaf] = new
            internal.append(leaf)
            leaves += new
        else:  # an internal node gets one more child
            at = rng.choice(internal)
            parent.append(at)
            kids[at].append(len(parent) - 1)
            leaves.append(len(parent) - 1)
    events: list[Any] = []
    last_hash: dict[int, int | None] = {-1: None}
    queue = [-1]
    for node in queue:  # breadth-first: parents are stored before children
        for i, child in enumerate(kids.get(node, [])):
            tokens = [i + 1] + [rng.randrange(1, 200) for _ in range(rng.randint(0, 5))]
            hashes = block_hashes(tokens, last_hash[node], 1)
            events.append(BlockStored(hashes, last_hash[node], tokens, 1))
            last_hash[child] = hashes[-1]
            queue.append(child)
    return events
