"""``RadixTreeWidget``: the radix prefix cache, live, from KV events.

    tree = RadixTreeWidget(rt)      # a runtime (uses rt.hub, rt.tokenizer), a hub, or a TreeMirror
    tree                            # display it; it follows every request from then on

Each row is a radix node: its text, token count, hits, recency; the last request's path is
highlighted, nodes still being written by a running request pulse, evicted ones fade out. Click a
row for its full text and the requests that used it. ``highlight`` (a request id; a click on a
``CachePanel`` row sets it) marks that request's path through the tree: the nodes its prompt entered,
those it found cached apart from those it wrote. Big trees open breadth-first within
``budget`` rows (treescope's balanced expansion): a node whose children do not fit stays closed
("▸ N below", click to open), and long child lists end in a "+N more" row that opens more.
"""

from __future__ import annotations

import html
import json
import pathlib
from typing import Any

import traitlets as t

from sgnb.tree.mirror import TreeMirror, TreeSnapshot
from sgnb.widgets._base import SgnbWidget
from sgnb.widgets._layout import age_label, expand_guide, layout, parse_expansion, short_text

_HERE = pathlib.Path(__file__).parent
STATIC_ROWS = 200  # rows in the static snapshot, to keep saved notebooks small


class RadixTreeWidget(SgnbWidget):
    _esm = _HERE / "tree.js"
    _css = _HERE / "tree.css"

    # the laid-out rows as UTF-8 JSON: a binary buffer, which ipywidgets sends without walking it
    view_json = t.Bytes(b"{}").tag(sync=True)
    expanded = t.List(t.Unicode()).tag(sync=True)
    collapsed = t.List(t.Unicode()).tag(sync=True)
    selected = t.Unicode("").tag(sync=True)
    detail = t.Dict().tag(sync=True)
    highlight = t.Unicode("").tag(sync=True)  # a request id: its path is marked
    budget = t.Int(400).tag(sync=True)
    title = t.Unicode("RadixAttention cache").tag(sync=True)
    render_ms = t.Float(-1.0).tag(sync=True)  # set by the browser after each draw

    def __init__(
        self,
        source: Any = None,
        *,
        budget: int = 400,
        decode: Any = None,
        fade_s: float = 1.5,
        interval: float = 0.1,
        title: str = "RadixAttention cache",
    ) -> None:
        if isinstance(source, TreeMirror):
            self.mirror = source
        else:
            self.mirror = TreeMirror(source, decode=decode, fade_s=fade_s)
        super().__init__(interval=interval, budget=budget, title=title)
        self._off = self.mirror.on_change(self.request_update)
        self.observe(lambda _: self.request_update(), names=["expanded", "collapsed", "budget", "highlight"])
        self.observe(lambda _: self._update_detail(), names=["selected"])
        self._refresh()

    # ---- state ---------------------------------------------------------------------------

    @property
    def view(self) -> dict[str, Any]:
        """What the browser draws: ``rows`` (see ``_layout``), ``stats``, ``version``."""
        return self._view

    def highlight_path(self, snap: TreeSnapshot | None = None) -> dict[str, int]:
        """The highlighted request's path: node id -> how many of its tokens the request found cached.

        The nodes its tokens entered, root first: its prompt, then what it generated and the cache
        kept (``RequestRecord.path`` holds the hash of every page its tokens cover; a node is entered
        when its first page is). The first
        ``cached_tokens`` of the prompt were a prefix hit (SGLang's ``RadixCache.match_prefix`` in
        ``sglang/srt/mem_cache/radix_cache.py``); the rest the request wrote. A node holds both
        when the tree has not branched there since. Empty when nothing is highlighted or the mirror
        no longer knows the request.
        """
        rec = self.mirror.request(self.highlight) if self.highlight else None
        if rec is None:
            return {}
        snap = snap or self.mirror.snapshot()
        out: dict[str, int] = {}
        start = 0
        for h in rec.path:
            node = snap.nodes.get(str(h))
            if node is None:
                continue
            out[node.id] = max(0, min(node.n_tokens, rec.cached_tokens - start))
            start += node.n_tokens
        return out

    def _layout(self, snap: TreeSnapshot, budget: int) -> list[dict[str, Any]]:
        opened, more = parse_expansion(list(self.expanded))
        marked = self.highlight_path(snap)
        # the highlighted path stays visible: the nodes above its last one open (unless the user closed one)
        rows = layout(
            snap, budget, opened | set(list(marked)[:-1]), set(self.collapsed), more, now=self.mirror.now()
        )
        for row in rows:
            hit = marked.get(row["id"])
            if hit is not None:
                row["hl"] = 1
                if hit:
                    row["hlc"] = hit  # cached tokens of this node (all of them: a prefix hit)
        return rows

    def _refresh(self) -> None:
        snap = self.mirror.snapshot()
        rows = self._layout(snap, self.budget)
        view = {"rows": rows, "stats": self._stats(snap), "version": snap.version, "fade": self.mirror.fade_s}
        self._view = view
        self.view_json = json.dumps(view, separators=(",", ":"), ensure_ascii=False).encode()
        if self.selected:
            self._update_detail(snap)
        if any(n.evicted for n in snap.nodes.values()):  # come back when the fade-out is over
            self.request_update(delay=self.mirror.fade_s + 0.05)

    def _stats(self, snap: TreeSnapshot) -> dict[str, Any]:
        live = snap.live()
        reqs = self.mirror.requests()
        prompt = sum(r.prompt_tokens for r in reqs)
        last = snap.last_request
        marked = self.highlight_path(snap)
        rec = self.mirror.request(self.highlight) if marked else None
        return {
            "highlight": None
            if rec is None
            else {
                "rid": rec.rid[:8],
                "prompt_tokens": rec.prompt_tokens,
                "cached_tokens": rec.cached_tokens,
                "nodes": len(marked),
            },
            "nodes": len(live),
            "tokens": sum(n.n_tokens for n in live),
            "evicted": len(snap.nodes) - len(live),
            "requests": len(reqs),
            "hit_rate": sum(r.cached_tokens for r in reqs) / prompt if prompt else 0.0,
            "last": None
            if last is None
            else {"prompt_tokens": last.prompt_tokens, "cached_tokens": last.cached_tokens},
        }

    def _update_detail(self, snap: TreeSnapshot | None = None) -> None:
        snap = snap or self.mirror.snapshot()
        node = snap.nodes.get(self.selected)
        if node is None:
            self.detail = {}
            return
        prefix = 0
        parent = node.parent
        while parent is not None:
            prefix += snap.nodes[parent].n_tokens
            parent = snap.nodes[parent].parent
        requests = []
        for rid in reversed(node.requests[-10:]):
            rec = self.mirror.request(rid)
            if rec is None:
                continue
            requests.append(
                {
                    "rid": rid[:8],
                    "prompt": short_text(self.mirror.decode(rec.prompt_ids), 60),
                    "prompt_tokens": rec.prompt_tokens,
                    "cached_tokens": rec.cached_tokens,
                    "ago": age_label(max(0.0, self.mirror.now() - rec.ts)),
                }
            )
        self.detail = {
            "id": node.id,
            "text": node.text[:4000],
            "ntok": node.n_tokens,
            "prefix": prefix,
            "hits": node.hits,
            "age": age_label(max(0.0, self.mirror.now() - node.last_used)),
            "evicted": node.evicted,
            "in_flight": node.in_flight,
            "requests": requests,
        }

    # ---- representations -----------------------------------------------------------------

    def _summary(self) -> str:
        snap = self.mirror.snapshot()
        live = snap.live()
        stats = self._stats(snap)
        return (
            f"RadixTreeWidget: {len(live)} nodes, {sum(n.n_tokens for n in live)} tokens cached, "
            f"{_plural(stats['requests'], 'request')} (hit rate {stats['hit_rate']:.0%})"
        )

    def _static_html(self) -> str:
        snap = self.mirror.snapshot()
        rows = self._layout(snap, min(self.budget, STATIC_ROWS))
        return render_static(rows, self._stats(snap), self.title)

    def close(self) -> None:
        if hasattr(self, "_off"):
            self._off()
        super().close()


_ROW = "font:12px/1.5 ui-monospace,Menlo,Consolas,monospace;white-space:pre;"
_CHIP = "display:inline-block;padding:0 4px;margin-left:6px;border-radius:3px;"


def render_static(rows: list[dict[str, Any]], stats: dict[str, Any], title: str) -> str:
    """The tree as plain HTML with inline styles (no script), for exports."""
    out = [
        '<div class="sgnb-tree-static" data-sgnb-static="tree" '
        'style="border:1px solid #ddd;border-radius:4px;padding:6px 8px;max-height:480px;overflow:auto">',
        f'<div style="font:600 13px sans-serif;margin-bottom:4px">{html.escape(title)} '
        f'<span style="font-weight:400;color:#666">{_stats_line(stats)}</span></div>',
    ]
    if not rows:
        out.append('<div style="color:#888;font:12px sans-serif">(empty: no cached prefixes yet)</div>')
    for row in rows:
        guide = f'<span style="color:#aaa">{expand_guide(row["guide"])}</span>'
        if "more" in row:
            out.append(
                f'<div style="{_ROW}color:#777">{guide}+{row["n"]} more '
                f"({row['sub']} nodes, {row['ntok']} tok)</div>"
            )
            continue
        style = _ROW
        if "path" in row:
            style += "background:#e3f0ff;"
        if "hl" in row:
            whole = row.get("hlc") == row["ntok"]
            style += "outline:2px solid #c96a00;" if whole else "outline:2px dashed #c96a00;"
        if "ev" in row:
            style += "opacity:.45;text-decoration:line-through;"
        badges = f'<span style="{_CHIP}background:#eee">{row["ntok"]} tok</span>'
        if row["hits"]:
            badges += f'<span style="{_CHIP}background:#ffe2c2">×{row["hits"]}</span>'
        if row["sub"]:
            badges += f'<span style="{_CHIP}color:#777">▸ {row["sub"]} below</span>'
        out.append(
            f'<div style="{style}" data-node-id="{row["id"]}">{guide}'
            f'<span style="color:#222">{html.escape(row["text"])}</span>{badges}</div>'
        )
    out.append("</div>")
    return "".join(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _stats_line(stats: dict[str, Any]) -> str:
    return (
        f"{_plural(stats['nodes'], 'node')} · {stats['tokens']} tokens · {_plural(stats['requests'], 'request')} · "
        f"hit rate {stats['hit_rate']:.0%}"
    )
