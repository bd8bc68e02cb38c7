"""The benchmark workloads, shared by ``sgnb.bench`` and the vLLM peer script (``sgnb.bench.peer_vllm``).

Standard library only: the peer runs in its own venv (``.venv-peer``, see ``make peer``) without
sglang, so nothing here may import torch, transformers or another sgnb module.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable
from typing import Any

Messages = list[dict[str, str]]

STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening, counting the steps and listening "
    "to the sea. Ships passed far out on the horizon, and the lamp turned slowly above the rocks. "
)
QUESTION = (
    "Tell me more about the keeper: what did he see from the lamp room, which ships passed, how did the "
    "weather change over the evening, and what did he write in his logbook before he slept?"
)
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "story": {"type": "string"}},
    "required": ["name", "age", "story"],
}

DECODE_TOKENS = 128  # new tokens of the decode and constrained measurements (32 with --quick)
DECODE_MESSAGES: Messages = [{"role": "user", "content": "Tell me a long story about a dragon."}]
BATCH_MESSAGES: list[Messages] = [
    [{"role": "user", "content": f"Story {i} about a dragon."}] for i in range(8)
]
JSON_MESSAGES: Messages = [{"role": "user", "content": "Describe a dragon as JSON."}]

PREFIX_TOKENS = 1000
SUFFIX_TOKENS = 20
PREFIX_TEXT = STORY * 40
SUFFIX_TEXT = " Then the storm came and everything changed for the keeper and the ships."

TURNS = 8
TURN_TOKENS = 32


def prefix_prompts(
    encode: Callable[[str], list[int]],
    prefix_tokens: int = PREFIX_TOKENS,
    suffix_tokens: int = SUFFIX_TOKENS,
) -> tuple[list[int], list[int]]:
    """The token ids of the prefix TTFT workload: ``(prefix, prefix + suffix)``."""
    ids = encode(PREFIX_TEXT)[:prefix_tokens]
    suffix = encode(SUFFIX_TEXT)
    return ids, ids + (suffix * 3)[:suffix_tokens]


def chat_start() -> Messages:
    """The first message of the multi-turn replay (the system prompt, ~175 tokens with a question)."""
    return [{"role": "system", "content": "You are a helpful assistant. " + STORY * 3}]


def user_turn(turn: int) -> dict[str, str]:
    return {"role": "user", "content": f"Question {turn + 1}. {QUESTION}"}


# ---- process figures, read from /proc so both venvs measure alike ---------------------------


def seconds_since_exec() -> float:
    """Seconds since this process was started (exec), 10 ms resolution: start-up includes imports."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks since boot
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - started


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError), open(task) as f:
            found.extend(int(c) for c in f.read().split())
    return found


def process_tree(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and all its descendants."""
    todo, seen = [pid or os.getpid()], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def memory_mib(pid: int | None = None) -> dict[str, float]:
    """RSS, peak RSS (VmHWM) and PSS of a process and its descendants (vLLM's engine core is a child)."""
    totals = {"rss_mib": 0.0, "rss_peak_mib": 0.0, "pss_mib": 0.0}
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        totals["rss_mib"] += int(line.split()[1]) / 1024
                    elif line.startswith("VmHWM:"):
                        totals["rss_peak_mib"] += int(line.split()[1]) / 1024
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        totals["pss_mib"] += int(line.split()[1]) / 1024
    totals["processes"] = float(len(process_tree(pid)))
    return {k: round(v, 1) for k, v in totals.items()}


def load_average() -> float:
    return os.getloadavg()[0]
