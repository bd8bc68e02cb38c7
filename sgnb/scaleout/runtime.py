"""``ClusterRuntime``: the session's remote runtime, through the router, with tagged requests.

It is a :class:`~sgnb.runtimes.remote.RemoteRuntime` on the router's URL (the router speaks
SGLang's HTTP API), with two differences:

- each finished request is published (``RequestFinished``) only once the cluster's attributor has
  tagged it with the worker whose KV events show it served it (``cluster.served_by(rid)``), so the
  cache panel can say which worker ran what;
- its hub also carries the union of the workers' KV events (:mod:`sgnb.scaleout.union`), so the
  session's tree (``%sglang tree``) is the whole cluster's cache;
- its DSL backend is sgnb's :class:`~sgnb.backend.SgnbBackend` over this runtime (SGLang's
  ``RuntimeEndpoint`` semantics), so DSL programs' requests pass through ``generate`` and are
  tagged too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sgnb.events import finished_from_result
from sgnb.runtimes.remote import RemoteRuntime


class ClusterRuntime(RemoteRuntime):
    def __init__(self, cluster: Any, *, timeout: float = 60.0) -> None:
        super().__init__(cluster.url, timeout=timeout)
        self.cluster = cluster

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from sgnb.backend import SgnbBackend

            self._backend = SgnbBackend(self)
        return self._backend

    def _encode(self, prompt: str) -> list[int]:
        """The prompt's token ids as the workers count them (SGLang encodes with special tokens)."""
        tok = self.tokenizer
        return [] if tok is None else [int(t) for t in tok.encode(prompt)]

    def generate(
        self,
        prompt: str | None = None,
        sampling_params: dict[str, Any] | None = None,
        *,
        input_ids: list[int] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> Any:
        """As :meth:`RemoteRuntime.generate`; the request's ``RequestFinished`` is published once tagged."""
        self._check_running()
        if (prompt is None) == (input_ids is None):
            raise ValueError("pass exactly one of prompt (text) or input_ids")
        body: dict[str, Any] = {"sampling_params": {**(sampling_params or {}), **kwargs}, "stream": stream}
        body["text" if prompt is not None else "input_ids"] = prompt if prompt is not None else input_ids
        ids = list(input_ids) if input_ids is not None else self._encode(str(prompt))
        sent_at, started = time.time(), time.perf_counter()
        if stream:
            return self._tagged_stream(body, ids, sent_at, started)
        out = dict(self._post("/generate", body).json())
        self._submit(out, ids, sent_at, started, body["sampling_params"])
        return out

    def _tagged_stream(
        self, body: dict[str, Any], ids: list[int], sent_at: float, started: float
    ) -> Iterator[dict[str, Any]]:
        last = None
        for last in self._sse("/generate", body):
            yield last
        if last is None:
            raise RuntimeError("the server closed the stream before sending anything")
        self._submit(last, ids, sent_at, started, body["sampling_params"])

    def _submit(
        self, out: dict[str, Any], ids: list[int], sent_at: float, started: float, params: dict[str, Any]
    ) -> None:
        event = finished_from_result(out, ids, time.perf_counter() - started, params)
        if len(ids) != event.prompt_tokens:  # not the workers' tokens: nothing to match them by
            self.cluster.attributor.served_by[event.rid] = None
            self.hub.publish(event)
            return
        self.cluster.attributor.submit(event, sent_at)

    def wait_tagged(self, timeout: float = 10.0) -> bool:
        """Block until every finished request is tagged and published (False after ``timeout``)."""
        return bool(self.cluster.attributor.wait(timeout))

    def status(self) -> dict[str, Any]:
        base = super().status()
        workers = self.cluster.workers
        alive = sum(w.state == "alive" for w in workers)
        return {
            **base,
            "runtime": "remote (cluster)",
            "router_policy": self.cluster.policy,
            "workers": f"{alive}/{len(workers)} alive",
            "cluster_hit_rate": round(self.cluster.hit_rate(workers), 4),
        }

    def __repr__(self) -> str:
        return f"<ClusterRuntime via {self.url} ({self.cluster.policy})>"
