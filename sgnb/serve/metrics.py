"""``/metrics``: Prometheus text with SGLang's metric names (``sglang/srt/observability/metrics_collector.py``).

Counters and histograms are fed per finished request from its ``meta_info``; gauges are read from
the runtime when scraped. Each app has its own registry, so several servers can share a process.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# SGLang's default buckets (metrics_collector.py)
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (*TTFT_BUCKETS[:-1], 400, 600, 1200, 1800, 2400)
TPOT_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
TOKEN_BUCKETS = (1, 10, 100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 8000, 10000, 20000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = {"model_name": model_name}
        names = ["model_name"]
        streaming = [*names, "is_streaming"]
        reg = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=reg)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=reg)

        def histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=reg)

        self.prompt_tokens = counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed.", streaming
        )
        self.generation_tokens = counter(
            "sglang:generation_tokens_total", "Number of generation tokens processed.", streaming
        )
        self.cached_tokens = counter(
            "sglang:cached_tokens_total",
            "Number of cached prompt tokens by source (device/host/storage).",
            [*names, "cache_source"],
        )
        self.requests = counter("sglang:num_requests_total", "Number of requests processed.", streaming)
        self.aborted = counter("sglang:num_aborted_requests_total", "Number of requests aborted.", names)
        self.structured = counter(
            "sglang:num_so_requests_total", "Number of structured output requests processed.", names
        )
        self.ttft = histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            streaming,
            TTFT_BUCKETS,
        )
        self.e2e = histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            streaming,
            E2E_BUCKETS,
        )
        self.tpot = histogram(
            "sglang:request_time_per_output_token_seconds",
            "Per-request TPOT in seconds: (finished_time - first_token_time) / (completion_tokens - 1).",
            streaming,
            TPOT_BUCKETS,
        )
        self.prompt_hist = histogram(
            "sglang:prompt_tokens_histogram", "Histogram of prompt token length.", names, TOKEN_BUCKETS
        )
        self.generation_hist = histogram(
            "sglang:generation_tokens_histogram",
            "Histogram of generation token length.",
            names,
            TOKEN_BUCKETS,
        )
        self.running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.queued = gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.")
        self.hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self.throughput = gauge("sglang:gen_throughput", "The generation throughput (token/s).")
        self.token_usage = gauge("sglang:token_usage", "The token usage.")
        self.used_tokens = gauge("sglang:num_used_tokens", "The number of used tokens.")
        self.kv_available = gauge("sglang:kv_available_tokens", "KV slots free now.")
        self.kv_evictable = gauge("sglang:kv_evictable_tokens", "KV slots held only by the radix cache.")
        self.kv_used = gauge("sglang:kv_used_tokens", "KV slots held by running requests.")
        self.max_tokens = gauge(
            "sglang:max_total_num_tokens", "Maximum total number of tokens in the KV pool."
        )
        self.page_size = gauge("sglang:page_size", "The page size of the KV pool.")
        self.context_len = gauge("sglang:context_len", "The context length of the model.")
        self._prompt_sum = 0
        self._cached_sum = 0
        self._recent: deque[tuple[float, int]] = deque(maxlen=4096)  # (finished at, completion tokens)

    def observe(self, meta: dict[str, Any], streaming: bool, constraint: str | None = None) -> None:
        """One finished request, from its ``meta_info``."""
        labels = {**self.labels, "is_streaming": "true" if streaming else "false"}
        prompt = int(meta.get("prompt_tokens", 0))
        completion = int(meta.get("completion_tokens", 0))
        cached = int(meta.get("cached_tokens", 0))
        e2e = float(meta.get("e2e_latency", 0.0))
        self.requests.labels(**labels).inc()
        self.prompt_tokens.labels(**labels).inc(prompt)
        self.generation_tokens.labels(**labels).inc(completion)
        self.cached_tokens.labels(**self.labels, cache_source="device").inc(cached)
        self.prompt_hist.labels(**self.labels).observe(prompt)
        self.generation_hist.labels(**self.labels).observe(completion)
        self.e2e.labels(**labels).observe(e2e)
        if "ttft" in meta:
            ttft = float(meta["ttft"])
            self.ttft.labels(**labels).observe(ttft)
            if completion > 1:
                self.tpot.labels(**labels).observe((e2e - ttft) / (completion - 1))
        reason = meta.get("finish_reason") or {}
        if isinstance(reason, dict) and reason.get("type") == "abort":
            self.aborted.labels(**self.labels).inc()
        if constraint:
            self.structured.labels(**self.labels).inc()
        self._prompt_sum += prompt
        self._cached_sum += cached
        self._recent.append((time.monotonic(), completion))

    def render(self, state: dict[str, Any], options: dict[str, Any], context_length: int) -> bytes:
        """The exposition text, with gauges set from ``cache_state()`` and the runtime's options."""
        g = self.labels
        capacity = max(1, int(state.get("capacity", 0)))
        self.running.labels(**g).set(state.get("running", 0))
        self.queued.labels(**g).set(state.get("waiting", 0))
        self.hit_rate.labels(**g).set(self._cached_sum / self._prompt_sum if self._prompt_sum else 0.0)
        now = time.monotonic()
        window = [n for t, n in self._recent if now - t <= 10.0]
        self.throughput.labels(**g).set(sum(window) / 10.0)
        used = capacity - int(state.get("free", capacity))
        self.token_usage.labels(**g).set(used / capacity)
        self.used_tokens.labels(**g).set(used)
        self.kv_available.labels(**g).set(state.get("free", 0))
        self.kv_evictable.labels(**g).set(state.get("evictable", 0))
        self.kv_used.labels(**g).set(state.get("protected", 0))
        self.max_tokens.labels(**g).set(state.get("capacity", 0))
        self.page_size.labels(**g).set(options.get("page_size", 1))
        self.context_len.labels(**g).set(context_length)
        return bytes(generate_latest(self.registry))
