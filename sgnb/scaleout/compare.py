"""The router's policies compared on a multi-tenant workload, through the real router.

Several tenants each have a long system prompt with few-shot examples (the shared prefix); their
users' questions arrive interleaved: in ``rounds`` (each round, every tenant's next user, tenants
in a fixed order, as a fair-share queue in front of the service sends them) or ``shuffled`` (a
seeded shuffle). Each worker's KV budget holds about half the tenants' prefixes: the regime where
data parallelism multiplies cache capacity only if the router keeps each tenant on one worker.

What to expect with two workers: in rounds with an odd number of tenants, ``round_robin`` sends
each tenant to the workers in turn, every worker sees every tenant and LRU eviction leaves it
almost no prefix hits; shuffled, a worker keeping C of N prefixes hits about C/N of the time, so
with C just over N/2 (what ``cache_aware`` needs) round-robin keeps a bit over half of what
cache-aware caches. ``compare_policies(cluster)`` replays the same workload
under each policy (the router restarted with it, every worker's cache flushed first) and measures,
from the workers' own responses (``meta_info``): the cached-token fraction, the mean time to first
token and the throughput (completion tokens per second of wall time).
"""

from __future__ import annotations

import html
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

ORDER = ("round_robin", "power_of_two", "cache_aware")
TENANTS = (
    ("Lumen Bank", "a retail bank", "accounts, cards and transfers"),
    ("Orchard Grocers", "a grocery chain", "deliveries, fresh produce and refunds"),
    ("Polar Air", "an airline", "bookings, baggage and delays"),
    ("Harbor Clinic", "a family clinic", "appointments, prescriptions and test results"),
    ("Quill Books", "an online bookshop", "orders, e-books and gift cards"),
    ("Vector Cloud", "a cloud host", "servers, billing and outages"),
    ("Maple Insurance", "a car insurer", "claims, policies and renewals"),
    ("Summit Gear", "an outdoor outfitter", "tents, boots and repairs"),
)
RULES = (
    "Greet the customer politely and answer in one or two short sentences.",
    "Never invent prices, dates or account numbers; say you will check instead.",
    "If the customer is upset, apologise once and then focus on the solution.",
    "Refer to the company by its name and keep a warm, professional tone.",
    "Do not give legal, medical or financial advice beyond the company's own services.",
    "When a question is outside your topics, offer to transfer the customer to a human colleague.",
)
EXAMPLES = (
    ("Hello, are you a real person?", "I am the virtual assistant of {name}, happy to help with {topics}."),
    (
        "Can you help me with {topic0}?",
        "Of course. {name} handles {topic0} every day; tell me what you need.",
    ),
    (
        "What are your opening hours?",
        "The {name} team answers every day from eight to eight, and I am here anytime.",
    ),
    ("I want to complain.", "I am sorry to hear that. Tell me what happened and {name} will put it right."),
    (
        "Do you have a phone number?",
        "Yes, the {name} help line is on our website under Contact; I can also help here.",
    ),
)
QUESTIONS = (
    "How do I change my details?",
    "Something went wrong with my last order, what can I do?",
    "Can I get a refund?",
    "Where can I see my history?",
    "Is there a discount for long-time customers?",
    "How long does it usually take?",
)


@dataclass(frozen=True)
class Workload:
    tenants: int = 7
    requests_per_tenant: int = 5
    max_new_tokens: int = 16
    concurrency: int = 4
    order: str = "rounds"  # or "shuffled"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.order not in ("rounds", "shuffled"):
            raise ValueError(f"order must be 'rounds' or 'shuffled', got {self.order!r}")
        if not 1 <= self.tenants <= len(TENANTS):
            raise ValueError(f"tenants must be 1..{len(TENANTS)}, got {self.tenants}")

    def prompts(self) -> list[tuple[int, str]]:
        """``(tenant, prompt)`` in arrival order: every tenant's users, interleaved (see ``order``)."""
        out = [
            (
                t,
                f"{system_prompt(t)}\n\nCustomer: {QUESTIONS[u % len(QUESTIONS)]} (ticket {t}-{u})\nAssistant:",
            )
            for u in range(self.requests_per_tenant)
            for t in range(self.tenants)
        ]
        if self.order == "shuffled":
            random.Random(self.seed).shuffle(out)
        return out


def system_prompt(tenant: int) -> str:
    """Tenant ``tenant``'s shared prefix: its instructions and few-shot examples (about 400 tokens)."""
    name, what, topics = TENANTS[tenant % len(TENANTS)]
    fmt = {"name": name, "topics": topics, "topic0": topics.split(",")[0]}
    lines = [f"You are the customer assistant of {name}, {what}. You help with {topics}."]
    lines += [f"Rule {i + 1} for {name}: {rule}" for i, rule in enumerate(RULES)]
    lines.append(f"Examples of good answers from the {name} assistant:")
    for q, a in EXAMPLES:
        lines.append(f"Customer: {q.format(**fmt)}\nAssistant: {a.format(**fmt)}")
    lines.append(f"Now answer the next {name} customer.")
    return "\n".join(lines)


def replay(url: str, workload: Workload) -> dict[str, Any]:
    """Send the workload to ``url``/generate; figures from the responses' ``meta_info``.

    Returns ``cached_fraction`` (cached / prompt tokens), ``ttft_s`` (mean of the workers' TTFT),
    ``tok_s`` (completion tokens / wall seconds), ``requests``, ``prompt_tokens``, ``cached_tokens``,
    ``wall_s``. RuntimeError if any request fails (the router retries before it gives up).
    """

    def one(prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": prompt,
            "sampling_params": {"max_new_tokens": workload.max_new_tokens, "temperature": 0},
        }
        res = requests.post(url + "/generate", json=body, timeout=600)
        if res.status_code != 200:
            raise RuntimeError(f"HTTP {res.status_code} from the router: {res.text[:200]}")
        return dict(res.json()["meta_info"])

    started = time.perf_counter()
    with ThreadPoolExecutor(workload.concurrency) as pool:
        metas = list(pool.map(one, [p for _, p in workload.prompts()]))
    wall = time.perf_counter() - started
    prompt = sum(int(m["prompt_tokens"]) for m in metas)
    cached = sum(int(m["cached_tokens"]) for m in metas)
    completion = sum(int(m["completion_tokens"]) for m in metas)
    return {
        "cached_fraction": cached / prompt if prompt else 0.0,
        "ttft_s": sum(float(m.get("ttft", m["e2e_latency"])) for m in metas) / len(metas),
        "tok_s": completion / wall,
        "requests": len(metas),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "wall_s": wall,
    }


def compare_policies(
    cluster: Any, policies: tuple[str, ...] = ORDER, workload: Workload | None = None
) -> dict[str, dict[str, Any]]:
    """Replay ``workload`` under each policy: the router restarted with it, every cache flushed first.

    Each policy's figures (see :func:`replay`) gain ``requests_per_worker``: how many requests each
    worker served, from the workers' own ``/metrics``. The cluster is left on the last policy.
    """
    workload = workload or Workload()
    results: dict[str, dict[str, Any]] = {}
    for policy in policies:
        cluster.set_policy(policy)
        cluster.flush()
        before = [w.requests for w in cluster.workers]
        figures = replay(cluster.url, workload)
        after = [w.requests for w in cluster.workers]
        figures["requests_per_worker"] = [a - b for a, b in zip(after, before, strict=True)]
        results[policy] = figures
    return results


def flat(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{policy}_cached_fraction``, ``{policy}_ttft_s``, ``{policy}_tok_s`` (what the bench prints)."""
    out: dict[str, Any] = {}
    for policy, f in results.items():
        out[f"{policy}_cached_fraction"] = round(f["cached_fraction"], 4)
        out[f"{policy}_ttft_s"] = round(f["ttft_s"], 4)
        out[f"{policy}_tok_s"] = round(f["tok_s"], 2)
        out[f"{policy}_requests_per_worker"] = f["requests_per_worker"]
    if "cache_aware" in results and "round_robin" in results:
        rr = results["round_robin"]["cached_tokens"]
        out["cache_aware_vs_round_robin_cached"] = (
            round(results["cache_aware"]["cached_tokens"] / rr, 2) if rr else None
        )
    return out


def table_html(results: dict[str, dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{100 * f['cached_fraction']:.1f}%</td>"
        f"<td>{f['cached_tokens']}/{f['prompt_tokens']}</td><td>{1000 * f['ttft_s']:.0f}</td>"
        f"<td>{f['tok_s']:.1f}</td><td>{f['requests_per_worker']}</td></tr>"
        for p, f in results.items()
    )
    return (
        "<table class='sgnb-table'><caption style='text-align:left'><b>Router policies, same workload</b>"
        "</caption><tr><th>policy</th><th>cached tokens</th><th>cached/prompt</th><th>mean TTFT ms</th>"
        f"<th>tok/s</th><th>requests per worker</th></tr>{rows}</table>"
    )


def plot(results: dict[str, dict[str, Any]]) -> Any:
    """A matplotlib Figure: cached-token fraction, mean TTFT and throughput per policy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.8), layout="constrained")
    names = list(results)
    colors = ["#bab0ac" if n != "cache_aware" else "#f28e2b" for n in names]
    for ax, key, label, scale in zip(
        fig.subplots(1, 3),
        ("cached_fraction", "ttft_s", "tok_s"),
        ("cached tokens (%)", "mean TTFT (ms)", "throughput (tok/s)"),
        (100, 1000, 1),
        strict=True,
    ):
        ax.bar(names, [scale * results[n][key] for n in names], color=colors)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    return fig
