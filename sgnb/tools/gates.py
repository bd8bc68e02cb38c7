"""Benchmark gates: compare ``python -m sgnb.bench --json`` figures against a saved baseline.

Each numeric figure is judged by its name:

* time-like (the name ends in ``_s``: ``multiturn_s``, ``prefix_ttft_s``): lower is better; a rise
  of more than ``tolerance`` (relative) is a regression;
* overhead-like (``*overhead*``: ``constrained_overhead``, ``serve_overhead``): already a ratio
  minus 1, so lower is better and a rise of more than ``tolerance`` *absolute* is a regression;
* everything else (throughput ``*_tok_s_*``, ``*_speedup``, ``*_ratio*``, ``*_scaling*``): higher is
  better; a drop of more than ``tolerance`` (relative) is a regression.

Settings such as ``threads`` and strings such as ``model`` are not figures and are skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SETTINGS = {"threads", "rounds", "quick", "model", "dtype", "device", "runtime"}


def load_figures(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one JSON object of figures")
    return data


def kind(name: str) -> str:
    """``time``, ``overhead`` or ``throughput``: how a figure's direction is read."""
    if "overhead" in name:
        return "overhead"
    if name.endswith("_s"):
        return "time"
    return "throughput"


def _is_figure(name: str, value: Any) -> bool:
    return (
        name not in SETTINGS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def compare(
    current: dict[str, Any], baseline: dict[str, Any], tolerance: float, ignore: set[str] | None = None
) -> dict[str, Any]:
    """``{"ok", "tolerance", "figures": [{name, kind, baseline, current, change, status}], ...}``."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance!r}")
    ignore = ignore or set()
    rows: list[dict[str, Any]] = []
    for name, base in baseline.items():
        if name in ignore or not _is_figure(name, base):
            continue
        how = kind(name)
        row: dict[str, Any] = {
            "name": name,
            "kind": how,
            "baseline": float(base),
            "current": None,
            "change": None,
        }
        now = current.get(name)
        if not _is_figure(name, now):
            row["status"] = "missing"
            rows.append(row)
            continue
        assert now is not None
        now, base = float(now), float(base)
        row["current"] = now
        if how == "overhead":
            change = now - base
            worse, better = change > tolerance, change < -tolerance
        else:
            change = (
                (now - base) / abs(base)
                if base
                else (0.0 if now == base else math.copysign(math.inf, now - base))
            )
            if how == "time":
                worse, better = change > tolerance, change < -tolerance
            else:
                worse, better = change < -tolerance, change > tolerance
        row["change"] = change
        row["status"] = "regressed" if worse else "improved" if better else "ok"
        rows.append(row)
    new = sorted(k for k, v in current.items() if k not in baseline and k not in ignore and _is_figure(k, v))
    failed = [r["name"] for r in rows if r["status"] in ("regressed", "missing")]
    return {"ok": not failed, "tolerance": tolerance, "failed": failed, "new": new, "figures": rows}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_report(report: dict[str, Any]) -> str:
    tol = report["tolerance"]
    lines = [f"{'figure':<26} {'kind':<10} {'baseline':>10} {'current':>10} {'change':>9}  status"]
    for row in report["figures"]:
        change = row["change"]
        if change is None:
            shown = "-"
        elif row["kind"] == "overhead":
            shown = f"{change:+.3f}"
        else:
            shown = f"{change * 100:+.1f}%"
        status = row["status"].upper() if row["status"] in ("regressed", "missing") else row["status"]
        lines.append(
            f"{row['name']:<26} {row['kind']:<10} {_fmt(row['baseline']):>10} {_fmt(row['current']):>10} "
            f"{shown:>9}  {status}"
        )
    if report["new"]:
        lines.append(f"new figures (no baseline): {', '.join(report['new'])}")
    if report["ok"]:
        lines.append(f"OK: no figure regressed by more than {tol:g} (relative; absolute for overheads)")
    else:
        lines.append(
            f"REGRESSION: {', '.join(report['failed'])} moved the wrong way by more than {tol:g} "
            "(throughput may drop, times may rise, overheads may rise by at most that much)"
        )
    return "\n".join(lines)
