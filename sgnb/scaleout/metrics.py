"""The workers' own figures: each worker's Prometheus ``/metrics``, read and summed.

Every request a worker serves counts in its ``/metrics``, whoever sent it (this session, curl, the
openai client, another notebook through the router), so the cluster's per-worker and overall
figures come from there, not from what the session saw. The names are SGLang's
(``sglang/srt/observability/metrics_collector.py``: ``TokenizerMetricsCollector`` for the
``*_total`` counters, ``SchedulerMetricsCollector`` for the gauges); ``sgnb serve`` exposes the
same names (:mod:`sgnb.serve.metrics`), and SGLang's own server does with ``--enable-metrics``.
The page is parsed with ``prometheus_client``'s text parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

# What the views read, by SGLang's sample names (a counter ``X`` is exposed as ``X_total``).
REQUESTS = "sglang:num_requests_total"
PROMPT_TOKENS = "sglang:prompt_tokens_total"
CACHED_TOKENS = "sglang:cached_tokens_total"
GENERATION_TOKENS = "sglang:generation_tokens_total"
RUNNING = "sglang:num_running_reqs"
QUEUED = "sglang:num_queue_reqs"
READ = (REQUESTS, PROMPT_TOKENS, CACHED_TOKENS, GENERATION_TOKENS, RUNNING, QUEUED)


def parse(text: str) -> dict[str, float]:
    """Prometheus exposition text as ``{sample name: value summed over its label sets}``.

    Labels are summed over: ``is_streaming`` (true/false), ``cache_source`` (device/host/storage),
    and the data-parallel ranks of one SGLang server. ValueError if the text is not exposition text.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def scrape(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """Worker ``url``'s ``/metrics`` (see :func:`parse`); None if it does not answer or is not Prometheus."""
    try:
        res = requests.get(url.rstrip("/") + "/metrics", timeout=timeout)
        res.raise_for_status()
        return parse(res.text)
    except (requests.RequestException, ValueError):
        return None


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as its own reports and the router see it now.

    ``state``: ``"alive"`` (its process runs) or ``"dead"`` (it exited). ``in_router``: the router's
    health view (None when the router does not answer). The counters are the worker's ``/metrics``
    (SGLang's names): requests served (every client's), prompt, cached and generated tokens;
    ``running``/``queued`` requests now. When ``/metrics`` does not answer (a dead worker, or a busy
    one past the timeout) the counters are those of its last answer and ``stale`` is True (running
    and queued then 0): what a worker served before it died still counts.
    """

    index: int
    url: str
    pid: int | None
    state: str
    in_router: bool | None
    requests: int
    prompt_tokens: int
    cached_tokens: int
    running: int
    queued: int
    generation_tokens: int = 0
    stale: bool = False

    @property
    def hit_rate(self) -> float:
        """Cached / prompt tokens over every request this worker served (0.0 before any)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def load(self) -> int:
        """Requests running and queued on this worker now."""
        return self.running + self.queued

    def as_row(self) -> dict[str, Any]:
        """A JSON-able row for the views (the worker's label is ``w<index>``)."""
        return {
            "worker": f"w{self.index}",
            "state": self.state,
            "in_router": self.in_router,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generation_tokens": self.generation_tokens,
            "hit_rate": round(self.hit_rate, 4),
            "running": self.running,
            "queued": self.queued,
            "stale": self.stale,
        }


def info(
    index: int,
    url: str,
    pid: int | None,
    alive: bool,
    in_router: bool | None,
    metrics: dict[str, float] | None,
    last: dict[str, float] | None,
) -> WorkerInfo:
    """A :class:`WorkerInfo` from a scrape (``metrics``, None: no answer) or the last answer (``last``)."""
    state = "alive" if alive else "dead"
    m = metrics if metrics is not None else (last or {})
    now = metrics is not None
    return WorkerInfo(
        index=index,
        url=url,
        pid=pid,
        state=state,
        in_router=in_router,
        requests=int(m.get(REQUESTS, 0)),
        prompt_tokens=int(m.get(PROMPT_TOKENS, 0)),
        cached_tokens=int(m.get(CACHED_TOKENS, 0)),
        running=int(m.get(RUNNING, 0)) if now else 0,
        queued=int(m.get(QUEUED, 0)) if now else 0,
        generation_tokens=int(m.get(GENERATION_TOKENS, 0)),
        stale=not now and bool(last),
    )


def totals(workers: list[WorkerInfo]) -> dict[str, Any]:
    """The whole cluster: every worker's counters summed (a dead one's as last seen), load of the live.

    ``hit_rate`` is cached / prompt tokens over every request the workers served.
    """
    prompt = sum(w.prompt_tokens for w in workers)
    cached = sum(w.cached_tokens for w in workers)
    alive = sum(w.state == "alive" for w in workers)
    return {
        "worker": "all",
        "state": f"{alive}/{len(workers)} alive",
        "in_router": None,
        "requests": sum(w.requests for w in workers),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "generation_tokens": sum(w.generation_tokens for w in workers),
        "hit_rate": round(cached / prompt, 4) if prompt else 0.0,
        "running": sum(w.running for w in workers),
        "queued": sum(w.queued for w in workers),
        "stale": any(w.stale for w in workers),
    }
