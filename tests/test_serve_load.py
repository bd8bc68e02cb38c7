"""Load: 64 concurrent clients x 20 requests against a real ``sgnb serve`` process on 127.0.0.1.

Requests rotate through native ``/generate`` (plain and streamed) and ``/v1/chat/completions``
(plain and streamed). Every one must succeed and be complete: a finish reason, the tokens asked
for, and for streams the closing ``data: [DONE]``. Throughput and latency percentiles are printed
(``pytest -s`` shows them) and checked against the server's own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sgnb.serve.server import ServerProcess

CLIENTS = 64
REQUESTS_PER_CLIENT = 20
MAX_NEW_TOKENS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Any:
    log = (tmp_path_factory.mktemp("load") / "server.log").open("wb")
    with ServerProcess(
        "--model", "bundled", "--max-total-tokens", "8192", "--log-level", "warning", log=log
    ) as proc:
        yield proc
    log.close()


def _sse(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), text[:200]
    return [e[6:] for e in events]


async def one(client: httpx.AsyncClient, kind: int, prompt: str) -> None:
    """One request of the given kind; raises AssertionError unless the answer is complete."""
    params = {"max_new_tokens": MAX_NEW_TOKENS, "ignore_eos": True, "temperature": 0.7}
    chat = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_NEW_TOKENS,
    }
    chat["ignore_eos"] = True
    if kind == 0:
        res = await client.post("/generate", json={"text": prompt, "sampling_params": params})
        assert res.status_code == 200, res.text
        meta = res.json()["meta_info"]
        assert meta["completion_tokens"] == MAX_NEW_TOKENS and meta["finish_reason"]["type"] == "length"
    elif kind == 1:
        res = await client.post("/generate", json={"text": prompt, "sampling_params": params, "stream": True})
        assert res.status_code == 200, res.text
        events = _sse(res.text)
        assert events[-1] == "[DONE]"
        meta = json.loads(events[-2])["meta_info"]
        assert meta["completion_tokens"] == MAX_NEW_TOKENS and meta["finish_reason"]["type"] == "length"
    elif kind == 2:
        res = await client.post("/v1/chat/completions", json=chat)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == MAX_NEW_TOKENS
    else:
        res = await client.post("/v1/chat/completions", json={**chat, "stream": True})
        assert res.status_code == 200, res.text
        events = _sse(res.text)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


async def drive(url: str) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def user(i: int) -> None:
            for j in range(REQUESTS_PER_CLIENT):
                started = time.perf_counter()
                try:
                    await one(client, (i + j) % 4, f"User {i} asks question {j}: what is {i} plus {j}?")
                except Exception as exc:
                    errors.append(f"client {i} request {j}: {type(exc).__name__}: {exc}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(CLIENTS)))
        return latencies, errors, time.perf_counter() - started


def test_64_clients_x_20_requests(server: Any) -> None:
    latencies, errors, elapsed = asyncio.run(drive(server.url))
    total = CLIENTS * REQUESTS_PER_CLIENT
    qs = statistics.quantiles(latencies, n=100)
    print(
        f"\nload: {total} requests from {CLIENTS} clients in {elapsed:.1f} s: "
        f"{total / elapsed:.1f} req/s, {total * MAX_NEW_TOKENS / elapsed:.0f} generated tok/s, "
        f"latency p50 {qs[49] * 1000:.0f} ms, p99 {qs[98] * 1000:.0f} ms, errors {len(errors)}"
    )
    assert not errors, errors[:5]
    assert len(latencies) == total
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name in ("sglang:num_requests_total", "sglang:generation_tokens_total")
        and s.labels.get("is_streaming") == "false"
    }
    assert samples["sglang:num_requests_total"] == total // 2  # half the requests were not streamed
    assert samples["sglang:generation_tokens_total"] == total // 2 * MAX_NEW_TOKENS
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
