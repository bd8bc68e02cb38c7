"""``python -m sgnb.bench --peer vllm``: the plumbing, without vLLM (no model, no .venv-peer needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sgnb.bench import peer as bench_peer
from sgnb.bench import run as bench
from sgnb.bench import workloads as bench_workloads

REPO = Path(__file__).resolve().parent.parent


def _imports_of(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["sgnb.bench.workloads", "sgnb.bench.peer_vllm"])
def test_peer_side_modules_import_nothing_heavy(module: str) -> None:
    """The peer venv has neither sglang nor sgnb's dependencies: these must import with stdlib only."""
    loaded = _imports_of(module)
    assert not {"torch", "transformers", "sglang", "vllm", "numpy", "psutil", "xgrammar"} & loaded


def test_bench_uses_the_shared_workloads() -> None:
    assert bench.STORY is bench_workloads.STORY
    assert bench.QUESTION is bench_workloads.QUESTION
    assert bench.JSON_SCHEMA is bench_workloads.JSON_SCHEMA


def test_prefix_prompts_shape() -> None:
    def encode(text: str) -> list[int]:
        return [len(word) for word in text.split()]

    prefix, full = bench_workloads.prefix_prompts(encode, 100, 20)
    assert len(prefix) == 100 and len(full) == 120 and full[:100] == prefix


def test_multiturn_messages() -> None:
    messages = bench_workloads.chat_start()
    assert messages[0]["role"] == "system" and bench_workloads.STORY in messages[0]["content"]
    assert bench_workloads.user_turn(0)["content"].startswith("Question 1. ")


def test_process_figures() -> None:
    assert 0 < bench_workloads.seconds_since_exec() < 24 * 3600 * 365
    mem = bench_workloads.memory_mib()
    assert mem["rss_mib"] > 1 and mem["rss_peak_mib"] >= mem["rss_mib"] * 0.5 and mem["processes"] >= 1
    assert os.getpid() in bench_workloads.process_tree()


def test_missing_peer_venv_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_peer, "PEER_VENV", tmp_path / "no-such-venv")
    assert bench.main(["--peer", "vllm", "--json"]) == 2
    err = capsys.readouterr().err
    assert "make peer" in err and "no-such-venv" in err


def test_peer_run_alternates_and_summarises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    monkeypatch.setattr(bench_peer, "PEER_VENV", venv)
    monkeypatch.setattr("sgnb.core.models.resolve_model", lambda model: tmp_path)
    order: list[str] = []

    def fake(cmd: list[str], env: dict[str, str], log: Any, timeout: float) -> dict[str, Any]:
        engine = "vllm" if "sgnb.bench.peer_vllm" in cmd else "sgnb"
        order.append(engine)
        assert env["VLLM_CPU_KVCACHE_SPACE"]
        slow = 1.0 if engine == "sgnb" else 10.0
        return {
            "engine": engine,
            "startup_s": slow,
            "prefix_ttft_s": 0.1 * slow,
            "multiturn_s": slow,
            "decode_tok_s_1": 30.0,
            "decode_tok_s_8": 100.0 if engine == "sgnb" else 200.0,
            "constrained_overhead": 0.1,
            "rss_mib": 1000.0 * slow,
        }

    monkeypatch.setattr(bench_peer, "_run_json", fake)
    out = bench_peer.peer_run(rounds=2, log_path=str(tmp_path / "log"))
    assert order == ["sgnb", "vllm", "sgnb", "vllm"]
    assert out["ratio"]["startup_s"] == pytest.approx(0.1)
    assert out["targets"]["startup_s"]["met"] is True
    assert out["targets"]["decode_tok_s_8"]["met"] is False  # 0.5x < 0.8x
    assert out["targets"]["rss_mib"]["met"] is True
    assert out["sgnb"]["multiturn_nocache_s"] is None
    json.dumps(out)  # printable
