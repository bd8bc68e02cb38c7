"""The benchmark workloads, shared by ``sgnb.bench`` and the vLLM peer script (``sgnb.bench.peer_vllm``).

Standard library only: the peer runs in its own venv (``.venv-peer``, see ``make peer``) without
sglang, so nothing here may import torch, transformers or another sgnb module.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


# ---- the measurements both sides share ------------------------------------------------------------


def median(fn: Callable[[], float], reps: int) -> float:
    """The median of ``reps`` runs of ``fn``: these machines are noisy."""
    return statistics.median(fn() for _ in range(reps))


@dataclass
class Timed:
    """One request's timings in seconds from its submission (first token, end), its new tokens and text."""

    ttft: float
    e2e: float
    tokens: int
    text: str


class BenchEngine(Protocol):
    """What the measurements below need of an engine: sgnb's runtimes (``sgnb.bench.RuntimeEngine``)
    and vLLM (``sgnb.bench.peer_vllm.Peer``) offer the same, so each figure is defined once."""

    json_params: dict[str, Any]  # the sampling parameters that constrain the output to JSON_SCHEMA

    def chat(self, messages: Messages) -> Any: ...  # a prompt ``run`` takes (text or token ids)

    def encode(self, text: str) -> list[int]: ...

    def run(self, prompts: Sequence[Any], max_tokens: int, **params: Any) -> tuple[float, list[Timed]]:
        """Greedy requests submitted together: the wall time and each prompt's :class:`Timed`."""
        ...

    def reset_cache(self) -> None: ...


def one(engine: BenchEngine, prompt: Any, n: int, **params: Any) -> Timed:
    return engine.run([prompt], n, **params)[1][0]


def decode_rate(engine: BenchEngine, prompt: Any, n: int = DECODE_TOKENS) -> float:
    """Decode tokens/s of one stream, ignore_eos: tokens after the first over the time after the first."""
    t = one(engine, prompt, n, ignore_eos=True)
    return (t.tokens - 1) / (t.e2e - t.ttft)


def per_token_time(engine: BenchEngine, prompt: Any, n: int, **params: Any) -> float:
    """Seconds per decoded token after the first."""
    t = one(engine, prompt, n, **params)
    return (t.e2e - t.ttft) / max(1, t.tokens - 1)


def concurrent_rate(engine: BenchEngine, prompts: list[Any], n: int = DECODE_TOKENS) -> float:
    """Decode tokens/s of the prompts submitted together, ignore_eos: all new tokens over the wall time."""
    wall, timed = engine.run(prompts, n, ignore_eos=True)
    return sum(t.tokens for t in timed) / wall


def prefix_ttft(
    engine: BenchEngine, prefix_tokens: int = PREFIX_TOKENS, suffix_tokens: int = SUFFIX_TOKENS
) -> tuple[float, float]:
    """TTFT of a 20-token suffix after the 1000-token prefix was generated from (warm), and with the
    cache reset first (cold): ``(cold, warm)`` in seconds."""
    prefix, full = prefix_prompts(engine.encode, prefix_tokens, suffix_tokens)
    engine.reset_cache()
    cold = one(engine, full, 1).ttft
    engine.reset_cache()
    one(engine, prefix, 1)
    warm = one(engine, full, 1).ttft
    return cold, warm


def multiturn(engine: BenchEngine, turns: int = TURNS, new_tokens: int = TURN_TOKENS) -> float:
    """Seconds to replay an 8-turn chat, ignore_eos; each turn re-sends the whole history, as chat
    clients do: the prompt grows from ~180 to ~950 tokens, 32 new tokens a turn. Resets the cache first."""
    engine.reset_cache()
    messages = chat_start()
    start = time.perf_counter()
    for turn in range(turns):
        messages.append(user_turn(turn))
        out = one(engine, engine.chat(messages), new_tokens, ignore_eos=True)
        messages.append({"role": "assistant", "content": out.text})
    return time.perf_counter() - start


def peer_round(engine: BenchEngine, n: int, reps: int) -> dict[str, Any]:
    """One engine's figures in the side-by-side run (defined in ``sgnb.bench.peer_vllm``), each the median
    of ``reps`` runs; ``n`` new tokens per decode. ``first_request_s`` is the warm-up's time; RSS last."""
    ready = time.perf_counter()
    prompt = engine.chat(DECODE_MESSAGES)
    decode_rate(engine, prompt, 8)  # warm-up
    r: dict[str, Any] = {"first_request_s": time.perf_counter() - ready}
    r["decode_tok_s_1"] = median(lambda: decode_rate(engine, prompt, n), reps)
    prompts = [engine.chat(m) for m in BATCH_MESSAGES]
    r["decode_tok_s_8"] = median(lambda: concurrent_rate(engine, prompts, n), reps)
    ttfts = [prefix_ttft(engine) for _ in range(reps)]
    r["prefix_ttft_cold_s"] = statistics.median(c for c, _ in ttfts)
    r["prefix_ttft_s"] = statistics.median(w for _, w in ttfts)
    free = median(lambda: per_token_time(engine, prompt, n, ignore_eos=True), reps)
    json_prompt = engine.chat(JSON_MESSAGES)
    constrained = median(lambda: per_token_time(engine, json_prompt, n, **engine.json_params), reps)
    r["constrained_overhead"] = constrained / free - 1
    r["multiturn_s"] = median(lambda: multiturn(engine), reps)
    r.update(memory_mib())
    return r


def print_figures(figures: dict[str, Any], as_json: bool) -> None:
    """The figures as one JSON line (the last of stdout, flushed: ``sgnb.bench.peer`` reads it) or a table."""
    if as_json:
        print(json.dumps(figures), flush=True)
        return
    for key, value in figures.items():
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
