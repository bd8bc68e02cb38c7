"""``ClusterRuntime``: the session's remote runtime, through the router, with tagged requests.

It is a :class:`~sgnb.runtimes.remote.RemoteRuntime` on the router's URL (the router speaks
SGLang's HTTP API), with two differences:

- each finished request is published (``RequestFinished``) only once the cluster's attributor has
  tagged it with the worker whose KV events show it served it (``cluster.served_by(rid)``), so the
  cache panel can say which worker ran what;
- its hub also carries the union of the workers' KV events (:mod:`sgnb.scaleout.union`), so the
  session's tree (``%sglang tree``) is the whole cluster's cache;
- its DSL backend is sgnb's :class:`~sgnb.runtimes.backend.SgnbBackend` over this runtime (SGLang's
  ``RuntimeEndpoint`` semantics), so DSL programs' requests (``gen``, streamed or not, and
  ``select``'s scoring) pass through this runtime and are tagged too.

Requests sent to the router by other clients (curl, the openai client) do not pass through here,
so they are no rows of the session's panel; they do count in the workers' own figures (each
worker's ``/metrics``: the panel's workers table, ``%sglang cluster status``, :meth:`status`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests

from sgnb.core.events import finished_from_result
from sgnb.runtimes.remote import RemoteRuntime
from sgnb.runtimes.remote.runtime import outputs_of


class ClusterRuntime(RemoteRuntime):
    def __init__(self, cluster: Any, *, timeout: float = 60.0) -> None:
        super().__init__(cluster.url, timeout=timeout)
        self.cluster = cluster
        # the router refuses a batch of texts: send those one request per prompt from the start
        # (sgnb.runtimes.remote.batches; RemoteRuntime.request)
        self.splits_batches = True

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from sgnb.runtimes.backend import SgnbBackend

            self._backend = SgnbBackend(self)
        return self._backend

    # Every request this runtime sends reaches the router through ``_post`` (whole answers) or
    # ``_sse`` (streams): ``generate`` either way, ``score`` (DSL ``select``, ``cache_prefix``).
    # Both submit the request for tagging there, once; ``_finished`` (RemoteRuntime's untagged
    # publish) is therefore off, or a request would count twice in ``%sglang stats``.

    def _finished(self, *args: Any, **kwargs: Any) -> None:
        """Published by ``_submit`` once tagged, not here."""

    def _post(self, path: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        sent_at, started = time.time(), time.perf_counter()
        res = super()._post(path, body, stream)
        if path == "/generate" and not stream:
            data = res.json()
            outs = data if isinstance(data, list) else [data]  # a list: n > 1 samples or a batch
            for index, out in enumerate(outs):
                ids = self._prompt_of(body, index, len(outs))
                self._submit(dict(out), ids, sent_at, started, body.get("sampling_params") or {})
        return res

    def _sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        sent_at, started = time.time(), time.perf_counter()
        last: dict[int, dict[str, Any]] = {}  # each output's last chunk (n > 1 or a batch: by index)
        for chunk in super()._sse(path, body):
            if "meta_info" in chunk:
                last[int(chunk.get("index", 0))] = chunk
            yield chunk
        if path == "/generate":
            outputs = outputs_of(body)
            for index in sorted(last):
                ids = self._prompt_of(body, index, outputs)
                self._submit(last[index], ids, sent_at, started, body.get("sampling_params") or {})

    def _submit(
        self, out: dict[str, Any], ids: list[int], sent_at: float, started: float, params: dict[str, Any]
    ) -> None:
        event = finished_from_result(out, ids, time.perf_counter() - started, params)
        if len(ids) != event.prompt_tokens:  # not the workers' tokens: nothing to match them by
            self.cluster.attributor.served_by[event.rid] = None
            self.cluster._tagged(event, None)
            return
        self.cluster.attributor.submit(event, sent_at)

    def cache_panel(self, **kwargs: Any) -> Any:
        """The cache panel for this session (``%sglang stats``, ``--show cache``): rows tagged by worker.

        ``kwargs`` as :class:`~sgnb.widgets.CachePanel` (``history``, ``title``, ...).
        """
        from sgnb.scaleout.views import WorkerCachePanel

        return WorkerCachePanel(self.cluster, **kwargs)

    def wait_tagged(self, timeout: float = 10.0) -> bool:
        """Block until every finished request is tagged and published (False after ``timeout``)."""
        return bool(self.cluster.attributor.wait(timeout))

    def status(self) -> dict[str, Any]:
        base = super().status()
        workers = self.cluster.workers
        totals = self.cluster.totals(workers)
        return {
            **base,
            "runtime": "remote (cluster)",
            "router_policy": self.cluster.policy,
            "workers": totals["state"],
            "cluster_requests": totals["requests"],  # every client's, from the workers' /metrics
            "cluster_hit_rate": totals["hit_rate"],
        }

    def __repr__(self) -> str:
        return f"<ClusterRuntime via {self.url} ({self.cluster.policy})>"
