"""The token view's model: one row per request, its tokens as typed chips, and the static HTML.

A chip is a small dict (the wire format of ``tokens.js`` and of the static snapshot):

* ``t``: the token's text; ``k``: its kind, one of :data:`KINDS`;
* output chips also ``p`` (probability), ``r`` (rank in the sampled distribution, 1 = best, 0 = not in
  the top-k shown), ``ms`` (latency), ``top`` (``[[text, p], ...]``), and on constrained steps ``n``
  (tokens the grammar allowed) and ``unc`` (``[[text, p, allowed], ...]``: the model's own top-k
  before the mask; ``allowed`` 0 means the grammar masked it out).

Kinds: *cached* prompt tokens came from the radix cache (the first ``cached_tokens``, which the
runtime reports from its tree match); *prefilled* ones were computed for this request; *generated*
tokens were sampled freely; *forced*: the grammar allowed exactly one token; *constrained*: sampled
from a distribution the grammar masked.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sgnb.widgets.program import choices_html

KINDS = ("cached", "prefilled", "generated", "forced", "constrained")
KIND_COLORS = {
    "cached": "#fbd3a6",
    "prefilled": "#e4e0dd",
    "generated": "#d4e4f7",
    "forced": "#d9cdf5",
    "constrained": "#c8ebd3",
}
KIND_HELP = {
    "cached": "prompt token served from the radix cache (KV reused, not recomputed)",
    "prefilled": "prompt token computed for this request (prefill)",
    "generated": "sampled freely",
    "forced": "the grammar allowed exactly one token: no choice",
    "constrained": "sampled from the distribution the grammar masked",
}
MASKED_LOGPROB = -1e30  # SGLang clamps a masked token's -inf to float32's lowest value (-3.4e38)
STATIC_CHIPS = 3000  # per row in the static snapshot, to keep saved notebooks small

Decode = Callable[[int], str]


@dataclass
class Row:
    """One request (or one sample of an ``n > 1`` request) as the view has seen it so far."""

    rid: str
    prompt_ids: list[int] = field(default_factory=list)
    cached: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    constraint: str | None = None
    source: str | None = None
    done: bool = False
    finish: str = ""
    has_probs: bool = True  # False for a request that returned no logprobs

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        out["cached"] = self.cached
        out["prefilled"] = len(self.prompt_ids) - self.cached
        for step in self.steps:
            out[step_kind(step)] += 1
        return out


def step_kind(step: dict[str, Any]) -> str:
    n = step.get("n")
    if n is None:
        return "generated"
    return "forced" if n == 1 else "constrained"


def _p(logprob: Any) -> float:
    """A probability with six significant digits (the wire carries no more)."""
    return float(f"{math.exp(float(logprob)):.6g}")


def output_chip(step: dict[str, Any], decode: Decode) -> dict[str, Any]:
    chip: dict[str, Any] = {"t": decode(int(step["id"])), "k": step_kind(step)}
    if "ms" in step:
        chip["ms"] = round(float(step["ms"]), 1)
    if step.get("lp") is not None:
        chip["p"] = _p(step["lp"])
        # masked tokens fill a top-k wider than the allowed set, at float32's lowest logprob: hide them
        top = [(v, t) for v, t in step.get("top") or [] if float(v) > MASKED_LOGPROB]
        chip["top"] = [[decode(int(t)), _p(v)] for v, t in top]
        ids = [int(t) for _, t in top]
        chip["r"] = ids.index(int(step["id"])) + 1 if int(step["id"]) in ids else 0
    if step.get("n") is not None:
        chip["n"] = int(step["n"])
    if step.get("unc"):
        chip["unc"] = [[decode(int(t)), _p(v), int(a)] for v, t, a in step["unc"]]
    return chip


def row_view(row: Row, decode: Decode, same_prompt: bool) -> dict[str, Any]:
    """A row as the browser draws it; ``same_prompt`` rows (n > 1 samples) skip the prompt chips."""
    prompt = (
        []
        if same_prompt
        else [
            {"t": decode(t), "k": "cached" if i < row.cached else "prefilled"}
            for i, t in enumerate(row.prompt_ids)
        ]
    )
    counts = row.counts()
    return {
        "rid": row.rid[:8],
        "prompt": prompt,
        "same": same_prompt,
        "out": [output_chip(s, decode) for s in row.steps],
        "done": row.done,
        "finish": row.finish,
        "constraint": row.constraint or "",
        "counts": counts,
        "probs": row.has_probs,
    }


def chip_title(chip: dict[str, Any]) -> str:
    """The numbers of one chip in one line (the static snapshot's ``title`` attribute)."""
    parts = [f"{chip['k']}: {KIND_HELP[chip['k']]}"]
    if "p" in chip:
        rank = f"rank {chip['r']}" if chip.get("r") else "rank >top-k"
        parts.append(f"p={chip['p']:.4f} ({rank})")
    if "ms" in chip:
        parts.append(f"{chip['ms']:.0f} ms")
    if "n" in chip:
        parts.append(f"{chip['n']} tokens allowed")
    if chip.get("top"):
        parts.append("top: " + ", ".join(f"{t!r} {p:.3f}" for t, p in chip["top"]))
    masked = [(t, p) for t, p, a in chip.get("unc", []) if not a]
    if masked:
        parts.append("model wanted (masked out): " + ", ".join(f"{t!r} {p:.3f}" for t, p in masked))
    return " · ".join(parts)


def prob_color(p: float) -> str:
    """White (p=0) to blue (p=1)."""
    p = min(1.0, max(0.0, p))
    r, g, b = (round(255 + (c - 255) * p) for c in (37, 99, 180))
    return f"rgb({r},{g},{b})"


def latency_color(ms: float, max_ms: float) -> str:
    """White to orange-red on a log scale up to the row set's slowest step."""
    x = math.log1p(max(0.0, ms)) / math.log1p(max(max_ms, 1.0))
    x = min(1.0, max(0.0, x))
    r, g, b = (round(255 + (c - 255) * x) for c in (222, 93, 38))
    return f"rgb({r},{g},{b})"


def chip_background(chip: dict[str, Any], color_by: str, max_ms: float) -> str:
    if color_by == "prob" and "p" in chip:
        return prob_color(float(chip["p"]))
    if color_by == "latency" and "ms" in chip:
        return latency_color(float(chip["ms"]), max_ms)
    return KIND_COLORS[chip["k"]]


def _text(t: str) -> str:
    shown = t.replace("\n", "⏎").replace("\t", "⇥")
    return html.escape(shown) if shown.strip() or not shown else html.escape(shown.replace(" ", "·"))


def render_static(
    rows: list[dict[str, Any]], choices: dict[str, list[dict[str, Any]]], title: str, color_by: str
) -> str:
    """All rows as plain HTML with inline styles and a ``title`` per chip (no script), for exports."""
    max_ms = max((c.get("ms", 0.0) for r in rows for c in r["out"]), default=1.0)
    out = [
        '<div class="sgnb-tokens-static" data-sgnb-static="tokens" '
        'style="border:1px solid #ddd;border-radius:4px;padding:6px 8px;font:12px sans-serif">',
        f"<div><b>{html.escape(title)}</b> <span style='color:#666'>colour: {html.escape(color_by)}</span></div>",
        "<div style='margin:2px 0'>"
        + "".join(
            f"<span style='background:{KIND_COLORS[k]};padding:0 4px;border-radius:3px;margin-right:4px' "
            f"title='{html.escape(KIND_HELP[k])}'>{k}</span>"
            for k in KINDS
        )
        + "</div>",
    ]
    if not rows and not choices:
        out.append("<div style='color:#888'>(no traced requests yet)</div>")
    for row in rows:
        counts = row["counts"]
        head = (
            f"request {html.escape(row['rid'])}"
            + (f" · {html.escape(row['constraint'])}" if row["constraint"] else "")
            + f" · prompt {counts['cached'] + counts['prefilled']} ({counts['cached']} cached)"
            + f" · output {len(row['out'])} ({counts['forced']} forced, {counts['constrained']} constrained)"
            + ("" if row["done"] else " · running")
        )
        chips = []
        for chip in (row["prompt"] + row["out"])[:STATIC_CHIPS]:
            style = f"background:{chip_background(chip, color_by, max_ms)};"
            if "p" in chip and color_by != "prob":
                style += f"border-bottom:2px solid {prob_color(float(chip['p']))};"
            chips.append(
                f'<span data-kind="{chip["k"]}" title="{html.escape(chip_title(chip))}" '
                f'style="{style}border-radius:2px;padding:0 1px;margin:1px 1px;display:inline-block;'
                f'white-space:pre">{_text(chip["t"])}</span>'
            )
        same = "<span style='color:#888'>(same prompt as above) </span>" if row["same"] else ""
        out.append(
            f"<div style='margin-top:4px;color:#555'>{head}</div>"
            f"<div style='font-family:monospace;line-height:1.9'>{same}{''.join(chips)}</div>"
        )
    return "".join(out) + choices_html(choices) + "</div>"
