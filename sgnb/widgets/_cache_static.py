"""The cache panel's static HTML (exports, nbconvert, GitHub): the table, tiny bars, the workers' figures."""

from __future__ import annotations

import html
from typing import Any


def bars_svg(rows: list[dict[str, Any]], width: int = 480, height: int = 70) -> str:
    """Tiny stacked bars (cached over new) for the static snapshot."""
    if not rows:
        return ""
    top = max(r["prompt_tokens"] for r in rows) or 1
    w = min(width / len(rows), 18.0)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i, r in enumerate(rows):
        x = i * w + 1
        hc = height * r["cached"] / top
        hn = height * r["new"] / top
        parts.append(
            f'<rect x="{x:.1f}" y="{height - hc:.1f}" width="{max(w - 2, 1):.1f}" height="{hc:.1f}" fill="#f28e2b"/>'
            f'<rect x="{x:.1f}" y="{height - hc - hn:.1f}" width="{max(w - 2, 1):.1f}" height="{hn:.1f}" '
            f'fill="#bab0ac"><title>{r["cached"]} cached / {r["new"]} new</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stopped_line(summary: dict[str, Any]) -> str:
    """ " · 1 request stopped after 55 tokens", or for several " · 2 requests stopped (110 tokens
    generated in all)": ``stopped_tokens`` is the sum over the stopped requests (cache_panel.js
    words it the same)."""
    n = int(summary.get("stopped", 0) or 0)
    if not n:
        return ""
    tokens = int(summary.get("stopped_tokens", 0) or 0)
    if n == 1:
        return f" · 1 request stopped after {tokens} token{'' if tokens == 1 else 's'}"
    return f" · {n} requests stopped ({tokens} token{'' if tokens == 1 else 's'} generated in all)"


WORKER_HEADS = ("worker", "state", "requests", "prompt tok", "cached tok", "hit rate", "running", "queued")


def workers_static(workers: list[dict[str, Any]], cell: str) -> str:
    """The workers' own figures (a cluster's panel) as a small HTML table; "" for none."""
    if not workers:
        return ""
    head = "".join(f'<th style="{cell}">{h}</th>' for h in WORKER_HEADS)
    body = "".join(
        f'<tr data-worker="{html.escape(str(w["worker"]))}" data-state="{html.escape(str(w["state"]))}">'
        + "".join(
            f'<td style="{cell}">{html.escape(str(v))}</td>'
            for v in (
                w["worker"],
                w["state"],
                w["requests"],
                w["prompt_tokens"],
                w["cached_tokens"],
                f"{float(w['hit_rate']):.0%}",
                w["running"],
                w["queued"],
            )
        )
        + "</tr>"
        for w in workers
    )
    return (
        "<div style=\"font:12px sans-serif;color:#666\">the workers' own /metrics (every client's requests)</div>"
        f'<table style="border-collapse:collapse" data-sgnb-workers="1"><tr>{head}</tr>{body}</table>'
    )


def render_static(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    title: str,
    worker_column: bool = False,
    workers: list[dict[str, Any]] | None = None,
) -> str:
    cell = "padding:1px 8px;text-align:right;font:12px sans-serif"
    heads = (
        "#",
        *(("worker",) if worker_column else ()),
        "prompt",
        "tokens",
        "cached",
        "new",
        "hit",
        "TTFT ms",
        "ms",
    )
    head = "".join(f'<th style="{cell}{";text-align:left" if h == "prompt" else ""}">{h}</th>' for h in heads)
    body = []
    for i, r in enumerate(rows, 1):
        color = "#c96a00" if r["cached"] else "#666"
        worker = f'<td style="{cell}">{html.escape(str(r.get("worker", "")))}</td>' if worker_column else ""
        body.append(
            f'<tr data-request="{html.escape(r["rid"])}" data-cached="{r["cached"]}">'
            f'<td style="{cell}">{i}</td>{worker}'
            f'<td style="{cell};text-align:left;font-family:monospace">{html.escape(r["prompt"])}</td>'
            f'<td style="{cell}">{r["prompt_tokens"]}</td><td style="{cell};color:{color}">{r["cached"]}</td>'
            f'<td style="{cell}">{r["new"]}</td><td style="{cell};color:{color}">{r["hit"]:.0%}</td>'
            f'<td style="{cell}">{r["ttft_ms"]:.0f}</td><td style="{cell}">{r["latency_ms"]:.0f}</td></tr>'
        )
    return (
        '<div class="sgnb-cache-static" data-sgnb-static="cache" '
        'style="border:1px solid #ddd;border-radius:4px;padding:6px 8px">'
        f'<div style="font:600 13px sans-serif">{html.escape(title)} <span style="font-weight:400;color:#666">'
        f"{summary.get('requests', 0)} requests · {summary.get('cached_tokens', 0)}/"
        f"{summary.get('prompt_tokens', 0)} prompt tokens cached · hit rate {summary.get('hit_rate', 0):.0%}"
        f"{stopped_line(summary)}</span></div>{workers_static(workers or [], cell)}{bars_svg(rows)}"
        f'<table style="border-collapse:collapse"><tr>{head}</tr>{"".join(body)}</table></div>'
    )
