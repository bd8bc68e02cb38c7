"""The cluster's figures come from the workers' own ``/metrics``, so every client's requests count.

What is right is SGLang's: the metric names and kinds of ``sglang/srt/observability/
metrics_collector.py`` (``TokenizerMetricsCollector``: ``sglang:num_requests_total``,
``sglang:prompt_tokens_total``, ``sglang:cached_tokens_total``, ...; ``SchedulerMetricsCollector``:
``sglang:num_running_reqs``, ...), which ``sgnb serve`` exposes too, and the per-request
``meta_info`` (``prompt_tokens``, ``cached_tokens``) a worker answers with, which its counters sum.
"""

from __future__ import annotations

import ast
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sgnb.scaleout import Cluster, cluster
from sgnb.scaleout.metrics import READ, parse
from sgnb.scaleout.procs import pids_alive
from sgnb.scaleout.views import ClusterView
from sgnb.serve.metrics import Metrics

pytestmark = pytest.mark.timeout(900)


def sglang_metrics() -> dict[str, str]:
    """Every ``sglang:*`` metric SGLang declares: {name as exposed: Counter | Gauge | Histogram}.

    Read from the source of ``sglang.srt.observability.metrics_collector`` (importing it needs a
    GPU stack). prometheus_client exposes a counter ``X`` (or ``X_total``) as ``X_total``.
    """
    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent / "srt" / "observability" / "metrics_collector.py"
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Call):
            continue
        kind = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for kw in node.keywords:
            if (
                kw.arg == "name"
                and isinstance(kw.value, ast.Constant)
                and str(kw.value.value).startswith("sglang:")
            ):
                name = str(kw.value.value)
                if kind == "Counter" and not name.endswith("_total"):
                    name += "_total"
                out[name] = kind
    return out


def test_sgnb_serve_exposes_sglangs_names_and_kinds() -> None:
    """Every metric ``sgnb serve`` exposes is SGLang's, of the same kind; the cluster reads SGLang's."""
    theirs = sglang_metrics()
    assert theirs["sglang:num_requests_total"] == "Counter"  # the source was read
    for name in READ:
        assert name in theirs, name
    metrics = Metrics("m")
    metrics.observe(
        {"prompt_tokens": 7, "completion_tokens": 3, "cached_tokens": 4, "e2e_latency": 0.1}, False
    )
    text = metrics.render({"capacity": 100, "free": 90, "running": 1}, {}, 2048).decode()
    from prometheus_client.parser import text_string_to_metric_families

    kinds = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram"}
    ours = {}
    for family in text_string_to_metric_families(text):
        if family.type in kinds and not family.name.endswith("_created"):  # client-side timestamps
            ours[family.name + ("_total" if family.type == "counter" else "")] = kinds[family.type]
    assert set(READ) <= set(ours)
    assert {n: theirs.get(n) for n in ours} == ours  # same names, same kinds
    figures = parse(text)  # summed over label sets (is_streaming, cache_source)
    assert figures["sglang:num_requests_total"] == 1
    assert figures["sglang:prompt_tokens_total"] == 7 and figures["sglang:cached_tokens_total"] == 4
    assert figures["sglang:num_running_reqs"] == 1


def test_a_one_runtime_panel_has_no_worker_column() -> None:
    from sgnb.core.events import EventHub
    from sgnb.widgets import CachePanel

    panel = CachePanel(EventHub())
    assert panel.worker_column is False and panel.workers == []
    assert ">worker<" not in panel._static_html()
    panel.close()


@pytest.fixture(scope="module")
def c() -> Iterator[Cluster]:
    handle = cluster(workers=2, policy="round_robin", runtime="local")
    try:
        yield handle
    finally:
        handle.stop()


def post(url: str, prompt: str) -> dict[str, Any]:
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}
    res = requests.post(url + "/generate", json=body, timeout=300)
    assert res.status_code == 200, res.text
    return dict(res.json()["meta_info"])


def test_requests_sent_straight_to_the_router_count(c: Cluster) -> None:
    """Requests another client sends to the router (not through the session) appear per worker,
    and the totals equal what the workers answered (the sum of their ``meta_info``)."""
    before = c.workers
    assert [w.state for w in before] == ["alive", "alive"]
    prefix = "You are a terse assistant for a shipping company. Answer in one word. "
    metas = [post(c.url, prefix + f"Question {i}: which port is busiest?") for i in range(6)]
    after = c.workers
    served = [a.requests - b.requests for a, b in zip(after, before, strict=True)]
    assert sum(served) == 6 and all(n >= 1 for n in served)  # round_robin used both workers
    prompt = sum(a.prompt_tokens - b.prompt_tokens for a, b in zip(after, before, strict=True))
    cached = sum(a.cached_tokens - b.cached_tokens for a, b in zip(after, before, strict=True))
    assert prompt == sum(int(m["prompt_tokens"]) for m in metas)
    assert cached == sum(int(m["cached_tokens"]) for m in metas) > 0  # the shared prefix hit
    totals = c.totals(after)
    assert totals["requests"] == sum(w.requests for w in after)
    assert totals["prompt_tokens"] == sum(w.prompt_tokens for w in after)
    assert totals["hit_rate"] == round(totals["cached_tokens"] / totals["prompt_tokens"], 4)
    assert all(w.running == 0 and w.queued == 0 and not w.stale for w in after)

    # The session's panel: none of these requests is a row (the session did not send them), but
    # the workers' figures above the rows include them.
    panel = c.runtime.cache_panel()
    try:
        assert panel.worker_column is True and panel.rows == []
        by = {w["worker"]: w for w in panel.workers}
        assert set(by) == {"w0", "w1", "all"}
        assert by["all"]["requests"] == totals["requests"] >= 6
        assert [by[f"w{i}"]["requests"] for i in range(2)] == [w.requests for w in after]
        assert f"all 2/2 alive: {totals['requests']} requests" in repr(panel)  # the text form too
        # one request through the session: a row, tagged by the worker whose KV events show it
        c.runtime.generate(
            prefix + "Question 9: which port is oldest?", {"max_new_tokens": 4, "temperature": 0}
        )
        assert c.runtime.wait_tagged(20)
        panel._throttle.flush()
        assert len(panel.rows) == 1
        assert panel.rows[0]["worker"] in ("w0", "w1", "unknown")
        assert panel.rows[0]["worker"] == (
            "unknown"
            if c.served_by(panel.rows[0]["request"]) is None
            else f"w{c.served_by(panel.rows[0]['request'])}"
        )
        assert not panel.rows[0]["prompt"].startswith("w")  # a column, not a prefix
        html = panel._static_html()
        assert ">worker</th>" in html and "data-sgnb-workers" in html
    finally:
        panel.close()


def test_panels_follow_outside_requests_with_one_poller(c: Cluster) -> None:
    """Open panels follow the workers' figures live (another client's request shows up), all read
    by one poller per cluster, which ends once no panel follows."""
    from sgnb.scaleout.views import _POLLERS

    a, b = c.runtime.cache_panel(), c.runtime.cache_panel()
    poller = _POLLERS[c]
    assert set(poller.panels) == {a, b}
    before = a.workers[-1]["requests"]
    post(c.url, "Another client: name a sea.")
    deadline = time.monotonic() + 30
    while not (a.workers[-1]["requests"] == b.workers[-1]["requests"] == before + 1):
        assert time.monotonic() < deadline, (a.workers, b.workers)
        time.sleep(0.2)
    a.close()
    b.close()
    poller.thread.join(30)
    assert not poller.thread.is_alive() and c not in _POLLERS


def test_a_killed_worker_shows_dead_and_keeps_what_it_served(c: Cluster) -> None:
    before = c.workers
    c.kill_worker(1)
    after = c.workers
    assert after[1].state == "dead" and after[1].stale
    assert after[1].requests == before[1].requests > 0  # its last report still counts
    assert after[1].running == 0
    assert after[0].state == "alive"
    assert c.totals(after)["state"] == "1/2 alive"
    assert c.totals(after)["requests"] == before[0].requests + before[1].requests
    view = ClusterView(c)
    try:
        html = view.static_html()
        assert "data-state='dead'" in html and "DEAD" in html
        assert f"{before[0].requests + before[1].requests} requests served" in repr(view)
    finally:
        view.close()
    panel = c.runtime.cache_panel()
    try:
        assert {w["worker"]: w["state"] for w in panel.workers} == {
            "w0": "alive",
            "w1": "dead",
            "all": "1/2 alive",
        }
    finally:
        panel.close()


def test_stop_leaves_no_process_behind_and_panels_keep_the_live_figures(c: Cluster) -> None:
    panel = c.runtime.cache_panel()
    live = list(panel.workers)
    pids = c.pids()
    c.stop()
    assert pids_alive(pids) == []
    panel.poll_figures()  # what its polling thread would do next: a stopped cluster changes nothing
    assert panel.workers == live and live[-1]["state"] == "1/2 alive"
    panel.close()
