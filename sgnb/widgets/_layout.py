"""Balanced expansion of a big radix tree into at most ``budget`` visible rows (as treescope does).

Levels open breadth-first, so the shallow structure shows before any deep branch: a node's
children appear only if all of them fit in what is left of the budget. Nodes the user opened
show their children regardless (and "+N more" for the rest), nodes the user closed stay closed,
and the last request's path is always visible. What does not fit is summed into aggregate rows.

Each row is a small dict, the wire format of ``tree.js`` and of the static snapshot. Its
``guide`` is the tree drawing in one character per level (``expand_guide`` draws it):
``|`` a line going on, space none, ``+`` a branch, a backtick the last branch.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sgnb.tree.mirror import MirrorNode, TreeSnapshot

MIN_OPEN = 50  # rows an explicitly opened node may show even when the budget is spent
ROOT = ""


def short_text(text: str, limit: int = 40) -> str:
    """One line, at most ``limit`` characters, cut in the middle."""
    flat = text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    if len(flat) <= limit:
        return flat
    head = (limit - 1) * 2 // 3
    return flat[:head] + "…" + flat[len(flat) - (limit - 1 - head) :]


GUIDE = {"|": "│  ", " ": "   ", "+": "├─ ", "`": "└─ "}


def expand_guide(code: str) -> str:
    return "".join(GUIDE[c] for c in code)


def age_label(seconds: float) -> str:
    if seconds < 1:
        return "now"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _subtree_sizes(snap: TreeSnapshot) -> dict[str, int]:
    """Descendant count of every node (iterative post-order)."""
    sizes: dict[str, int] = {}
    order: list[str] = []
    stack = list(snap.roots)
    while stack:
        nid = stack.pop()
        order.append(nid)
        stack.extend(snap.nodes[nid].children)
    for nid in reversed(order):
        sizes[nid] = sum(1 + sizes[c] for c in snap.nodes[nid].children)
    return sizes


def layout(
    snap: TreeSnapshot,
    budget: int,
    expanded: set[str] | None = None,
    collapsed: set[str] | None = None,
    more: dict[str, int] | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Rows (pre-order, with tree guides) for at most about ``budget`` nodes; ages are to ``now``."""
    expanded, collapsed, more = expanded or set(), collapsed or set(), more or {}
    nodes = snap.nodes
    shown: dict[str, list[str]] = {}
    hidden: dict[str, list[str]] = {}
    count = 0
    queue: deque[str] = deque([ROOT])
    while queue:
        pid = queue.popleft()
        kids = snap.roots if pid == ROOT else nodes[pid].children
        if not kids:
            continue
        remaining = budget - count
        explicit = pid == ROOT or pid in expanded
        if pid in collapsed:
            k = 0
        elif explicit:
            k = min(len(kids), max(remaining, MIN_OPEN) + more.get(pid, 0))
        elif len(kids) <= remaining:
            k = len(kids)
        else:
            k = sum(1 for c in kids if nodes[c].on_last_path)
        if k < len(kids):
            # keep the last request's path, then the most recently used; show them in tree order
            ranked = sorted(kids, key=lambda c: (not nodes[c].on_last_path, -nodes[c].last_used))
            keep = set(ranked[:k])
            chosen = [c for c in kids if c in keep]
            hidden[pid] = [c for c in kids if c not in keep]
        else:
            chosen = list(kids)
        shown[pid] = chosen
        count += len(chosen) + (1 if pid in hidden and chosen else 0)
        queue.extend(chosen)
    sizes = _subtree_sizes(snap)
    return _rows(snap, shown, hidden, sizes, snap.time if now is None else now)


def _rows(
    snap: TreeSnapshot,
    shown: dict[str, list[str]],
    hidden: dict[str, list[str]],
    sizes: dict[str, int],
    now: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # (node id, guide prefix for its children, its own guide, depth)
    stack: list[tuple[str, str, str, int]] = []

    def push_children(pid: str, prefix: str, depth: int) -> None:
        kids = shown.get(pid, [])
        agg = hidden.get(pid, []) if kids else []
        entries: list[tuple[str, str, str, int]] = []
        total = len(kids) + (1 if agg else 0)
        for i, cid in enumerate(kids):
            last = i == total - 1
            entries.append((cid, prefix + (" " if last else "|"), prefix + ("`" if last else "+"), depth))
        if agg:
            entries.append(("more:" + pid, "", prefix + "`", depth))
        stack.extend(reversed(entries))

    push_children(ROOT, "", 0)
    while stack:
        nid, child_prefix, guide, depth = stack.pop()
        if nid.startswith("more:"):
            pid = nid[5:]
            agg = hidden[pid]
            rows.append(
                {
                    "more": pid,
                    "id": nid,
                    "depth": depth,
                    "guide": guide,
                    "n": len(agg),
                    "sub": sum(1 + sizes[c] for c in agg),
                    "ntok": sum(snap.nodes[c].n_tokens for c in agg),
                    "hits": sum(snap.nodes[c].hits for c in agg),
                }
            )
            continue
        node = snap.nodes[nid]
        is_open = bool(shown.get(nid))
        rows.append(_node_row(node, guide, depth, is_open, 0 if is_open else sizes[nid], now))
        push_children(nid, child_prefix, depth + 1)
    return rows


def _node_row(
    node: MirrorNode, guide: str, depth: int, is_open: bool, hidden: int, now: float
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": node.id,
        "depth": depth,
        "guide": guide,
        "text": short_text(node.text),
        "ntok": node.n_tokens,
        "hits": node.hits,
        "age": round(max(0.0, now - node.last_used), 2),
        "kids": len(node.children),
        "open": is_open,
        "sub": hidden,
    }
    if node.evicted_at is not None:
        row["ev"] = round(max(0.0, now - node.evicted_at), 2)
    if node.in_flight:
        row["fl"] = 1
    if node.on_last_path:
        row["path"] = 1
    return row


def parse_expansion(items: list[str]) -> tuple[set[str], dict[str, int]]:
    """The ``expanded`` trait: node ids, and ``more:<id>`` once per "+N more" click."""
    opened: set[str] = set()
    more: dict[str, int] = {}
    for item in items:
        if item.startswith("more:"):
            pid = item[5:]
            more[pid] = more.get(pid, 0) + MIN_OPEN * 4
            if pid:
                opened.add(pid)
        else:
            opened.add(item)
    return opened, more
