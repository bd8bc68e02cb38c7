"""``%sglang cluster``: start, a DSL cell, stats, tree, status, stop, in a real IPython shell.

One worker keeps it short: the router in front of it is still SGLang's real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from sgnb.notebook.cluster_magic import current
from sgnb.notebook.session import get_session
from sgnb.scaleout.procs import pids_alive

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    from IPython.testing.globalipapp import get_ipython, start_ipython

    shell = start_ipython() or get_ipython()
    assert shell is not None
    shell.run_line_magic("load_ext", "sgnb")
    yield shell
    if current() is not None:
        shell.run_line_magic("sglang", "cluster stop")


def usage_error(ip: InteractiveShell, line: str) -> str:
    result = ip.run_cell(line)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert "\n" not in str(result.error_in_exec).strip()
    return str(result.error_in_exec)


def value(ip: InteractiveShell, line: str) -> Any:
    result = ip.run_cell(line)
    assert result.error_in_exec is None, result.error_in_exec
    return result.result


def test_bad_input_is_one_line(ip: InteractiveShell) -> None:
    assert "no cluster is running" in usage_error(ip, "%sglang cluster status")
    assert "invalid choice" in usage_error(ip, "%sglang cluster frobnicate")
    assert "invalid choice" in usage_error(ip, "%sglang cluster start --policy fastest")
    assert "workers must be a positive integer" in usage_error(ip, "%sglang cluster start --workers 0")


def test_start_run_inspect_stop(ip: InteractiveShell) -> None:
    """``%sglang stats`` on a cluster session counts every request the session sent, once, by worker.

    Every path from the session to the router: a DSL cell (``gen`` streamed, ``select`` scored as
    ``RuntimeEndpoint.select`` does, sglang/lang/backend/runtime_endpoint.py), ``rt.generate``
    whole and streamed. The right count is the worker's own: SGLang's ``sglang:num_requests_total``
    (sglang/srt/observability/metrics_collector.py), read from its ``/metrics``.
    """
    view = value(ip, "%sglang cluster start --workers 1 --policy round_robin")
    assert "1/1 workers alive" in repr(view)
    cluster = current()
    rt = cluster.runtime
    assert get_session().runtime is rt  # the session goes through the router
    assert "already running" in usage_error(ip, "%sglang cluster start --workers 1")
    before = cluster.workers[0].requests
    program = (
        "%%sglang -o state\n"
        's += sgl.user("What is the capital of France?")\n'
        's += sgl.assistant(sgl.gen("answer", max_tokens=12, temperature=0))\n'
        's += sgl.user("Is that right? Answer yes or no.")\n'
        's += sgl.assistant(sgl.select("ok", choices=["yes", "no"]))'
    )
    assert ip.run_cell(program).error_in_exec is None
    assert "Paris" in ip.user_ns["state"]["answer"]
    rt.generate("The capital of Italy is", {"max_new_tokens": 4, "temperature": 0})
    chunks = list(
        rt.generate("The capital of Spain is", {"max_new_tokens": 4, "temperature": 0}, stream=True)
    )
    assert len(chunks) >= 1
    assert rt.wait_tagged(10)
    served = cluster.workers[0].requests - before
    assert served >= 5  # gen, two scored choices, two generate calls
    stats = value(ip, "%sglang stats")
    assert f"{served} requests" in repr(stats)  # each request once: as many as the worker served
    rids = [row["rid"] for row in stats.rows]
    assert len(set(rids)) == len(rids) == served
    assert [row["worker"] for row in stats.rows] == ["w0"] * served  # one worker: it served each
    assert stats.worker_column and ">worker</th>" in stats._static_html()  # a column of its own
    by = {w["worker"]: w for w in stats.workers}  # the worker's own /metrics, above the rows
    assert by["w0"]["requests"] == by["all"]["requests"] == cluster.workers[0].requests
    assert [cluster.served_by(ev.rid) for ev in cluster.finished] == [0] * served
    tree = value(ip, "%sglang tree")  # the union of the workers' trees
    assert tree.mirror.node_count() >= 1
    status = value(ip, "%sglang cluster status")
    assert "w0" in status.static_html()
    status.close()
    pids = cluster.pids()
    assert value(ip, "%sglang cluster stop") is None
    assert current() is None and get_session().runtime is None
    assert pids_alive(pids) == []
