"""``sgnb.scaleout(workers=N, policy=...)``: N SGLang workers behind SGLang's real router, on 127.0.0.1.

Data parallelism as SGLang does it: every worker holds the whole model and its own radix cache;
``sglang-router`` (Rust, PyPI ``sglang-router``) spreads requests over them by a policy
(``cache_aware`` sends a request where its prefix is already cached). sgnb adds the views: one
radix tree per worker fed by that worker's own KV events, each request tagged with the worker
whose events show it served it (:mod:`sgnb.scaleout.attribution`), and each worker's own
``/metrics`` for hit rate and load.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from sgnb.core.events import EventHub, RequestFinished
from sgnb.scaleout.attribution import Attributor, BlockIndex
from sgnb.scaleout.metrics import WorkerInfo, info, scrape, totals
from sgnb.scaleout.procs import (
    HOST,
    POLICIES,
    Proc,
    free_port,
    group_pids,
    pids_alive,
    router_command,
    worker_command,
)


class Cluster:
    """N workers and the router. Prefer :func:`sgnb.scaleout`, which builds one and starts it.

    ``url`` is the router's; ``workers`` is a fresh list of :class:`WorkerInfo`; ``runtime``
    connects (once) a remote runtime through the router whose finished requests are tagged with
    their worker; ``mirrors[i]`` is worker i's radix tree (:class:`sgnb.tree.mirror.TreeMirror`)
    rebuilt from its KV events; ``stop()`` ends every process it started and checks by PID.
    """

    def __init__(
        self,
        workers: int = 2,
        policy: str = "cache_aware",
        model: str = "bundled",
        runtime: str | None = "auto",
        *,
        max_total_tokens: int | None = None,
        threads: int | None = None,
        worker_args: list[str] | tuple[str, ...] = (),
        router_args: list[str] | tuple[str, ...] = (),
        timeout: float = 300.0,
        log_dir: str | None = None,
    ) -> None:
        from sgnb.runtimes.factory import choose_runtime

        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; choose from {', '.join(POLICIES)}")
        kind, _ = choose_runtime(runtime)
        if kind == "remote":
            raise ValueError("a cluster starts its own workers: runtime is local, engine or auto")
        if kind == "engine":
            self._check_gpus(workers)
        self.kind, self.model, self.policy, self.n = kind, model, policy, workers
        self.timeout = timeout
        self.router_args = list(router_args)
        args = list(worker_args)
        if kind == "local":
            if threads is None and "--threads" not in args:
                threads = max(1, (os.cpu_count() or 1) // workers)  # workers share the cores
            if threads is not None:
                args += ["--threads", str(threads)]
        if max_total_tokens is not None:
            args += ["--max-total-tokens", str(max_total_tokens)]
        self.worker_args = args
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="sgnb-cluster-"))
        self.procs: list[Proc] = []
        self.router: Proc | None = None
        self.hubs = [EventHub() for _ in range(workers)]
        self.indexes = [BlockIndex() for _ in range(workers)]
        self.mirrors: list[Any] = []
        self._subscribers: list[Any] = []
        self._events_ports: list[int] = []
        self._runtime: Any = None
        self._pids: set[int] = set()
        self._last_metrics: dict[int, dict[str, float]] = {}  # worker -> its last /metrics answer
        self.finished: collections.deque[RequestFinished] = collections.deque(maxlen=1000)
        self.attributor = Attributor(self.indexes, self._tagged)
        self.started = False
        self.stopped = False

    @staticmethod
    def _check_gpus(workers: int) -> None:
        import torch

        have = torch.cuda.device_count()
        if workers > have:
            raise ValueError(f"{workers} GPU workers asked for, {have} GPU(s) here: one worker per GPU")

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start the workers (in parallel), subscribe to their KV events, then the router."""
        if self.started:
            raise RuntimeError("this cluster is already started")
        atexit.register(self.stop)  # a kernel exit must not leave workers behind
        self.started = True
        try:
            for i in range(self.n):
                port, events_port = free_port(), free_port()
                cmd, env = worker_command(self.kind, self.model, port, events_port, i, self.worker_args)
                proc = Proc(
                    f"worker {i}", cmd, f"http://{HOST}:{port}", self.log_dir / f"worker-{i}.log", env
                )
                self.procs.append(proc.start())
                self._events_ports.append(events_port)
            for proc in self.procs:
                proc.wait_healthy(self.timeout)
                self._pids.update(group_pids(proc))
            self._subscribe()
            self._start_router(self.policy)
        except BaseException:
            self.stop()
            raise
        return self

    def _subscribe(self) -> None:
        from sgnb.runtimes.kv_subscriber import KVEventSubscriber
        from sgnb.scaleout.union import UnionStream
        from sgnb.tree.mirror import TreeMirror

        tokenizer = self._tokenizer()
        union = UnionStream(self.n, self._to_session)
        for i, port in enumerate(self._events_ports):
            self.hubs[i].subscribe(self.indexes[i].handle)
            self.hubs[i].subscribe(union.subscriber(i))
            self.mirrors.append(TreeMirror(self.hubs[i], decode=tokenizer))
            self._subscribers.append(KVEventSubscriber(f"tcp://{HOST}:{port}", "kv-events", self.hubs[i]))

    def _tokenizer(self) -> Any:
        try:
            path = requests.get(self.procs[0].url + "/get_model_info", timeout=10).json()["model_path"]
        except (requests.RequestException, ValueError, KeyError):
            return None
        if not Path(path).is_dir():
            return None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    def _start_router(self, policy: str) -> None:
        port = free_port() if self.router is None else int(self.router.url.rsplit(":", 1)[1])
        urls = [p.url for p in self.procs if p.alive()]
        cmd = router_command(port, urls, policy, self.router_args)
        self.router = Proc("router", cmd, f"http://{HOST}:{port}", self.log_dir / "router.log").start()
        self.router.wait_healthy(60)
        self._pids.update(group_pids(self.router))
        deadline = time.monotonic() + 60
        while sum(1 for w in self._router_workers().values() if w) < len(urls):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router did not register the workers:\n{self.router.log_tail()}")
            time.sleep(0.25)
        self.policy = policy

    def set_policy(self, policy: str) -> None:
        """Restart the router (same URL) with another policy; the workers and their caches stay."""
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; choose from {', '.join(POLICIES)}")
        if self.router is not None:
            self.router.stop()
        self._start_router(policy)

    def flush(self) -> None:
        """Empty every live worker's radix cache (``POST /flush_cache`` on each)."""
        for proc in self.procs:
            if proc.alive():
                requests.post(proc.url + "/flush_cache", timeout=30).raise_for_status()

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` (as a crashed machine); the router's health check drops it."""
        self.procs[index].kill()

    def stop(self) -> None:
        """Stop the router and every worker; RuntimeError if any PID it started is still alive."""
        self.stopped = True  # views freeze at their last live figures (sgnb.scaleout.views)
        if self._runtime is not None:
            self._runtime.stop()
        self.attributor.close()
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()
        for mirror in self.mirrors:
            mirror.detach()
        procs = ([self.router] if self.router is not None else []) + self.procs
        for proc in procs:  # signal all first: a kernel cut short mid-stop still ends every one
            self._pids.update(group_pids(proc))
            proc.terminate()
        for proc in procs:
            proc.stop()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        left = pids_alive(sorted(self._pids))
        if left:
            raise RuntimeError(f"processes still alive after stop: {left}")

    def pids(self) -> list[int]:
        """Every PID this cluster started (and their children, as last seen)."""
        for proc in ([self.router] if self.router is not None else []) + self.procs:
            self._pids.update(group_pids(proc))
        return sorted(self._pids)

    # ---- what it reports -------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.router is None:
            raise RuntimeError("the cluster is not started")
        return self.router.url

    def _router_workers(self) -> dict[str, bool]:
        if self.router is None:
            return {}
        try:
            data = requests.get(self.router.url + "/workers", timeout=2).json()
        except (requests.RequestException, ValueError):
            return {}
        return {str(w.get("url")): bool(w.get("is_healthy")) for w in data.get("workers", [])}

    @property
    def workers(self) -> list[WorkerInfo]:
        """Each worker now: state, the router's view, and its own ``/metrics`` (polled on each read).

        The counters include every client's requests (curl, the openai client, other notebooks),
        not only this session's; a worker that does not answer keeps its last figures (``stale``).
        """
        in_router = self._router_workers()
        out = []
        for i, proc in enumerate(self.procs):
            alive = proc.alive()
            m = scrape(proc.url) if alive else None
            if m is not None:
                self._last_metrics[i] = m
            out.append(
                info(
                    i,
                    proc.url,
                    proc.pid,
                    alive,
                    in_router.get(proc.url, False) if in_router else None,
                    m,
                    self._last_metrics.get(i),
                )
            )
        return out

    def totals(self, workers: list[WorkerInfo] | None = None) -> dict[str, Any]:
        """The whole cluster's figures (:func:`sgnb.scaleout.metrics.totals`): requests, tokens,
        hit rate and load summed over the workers, from their own ``/metrics``."""
        return totals(self.workers if workers is None else workers)

    def hit_rate(self, workers: list[WorkerInfo] | None = None) -> float:
        """Cached / prompt tokens over every request the workers served (a dead one's as last seen)."""
        return float(self.totals(workers)["hit_rate"])

    @property
    def runtime(self) -> Any:
        """A :class:`~sgnb.scaleout.runtime.ClusterRuntime` through the router (connected once)."""
        if self._runtime is None:
            from sgnb.scaleout.runtime import ClusterRuntime

            self._runtime = ClusterRuntime(self)
        return self._runtime

    def served_by(self, rid: str) -> int | None:
        """The worker index a request was tagged with (None: unknown or not yet tagged)."""
        return self.attributor.served_by.get(rid)

    def _to_session(self, event: Any) -> None:
        """The union of the workers' KV events, for the runtime's hub (``%sglang tree``)."""
        if self._runtime is not None:
            self._runtime.hub.publish(event)

    def _tagged(self, event: RequestFinished, worker: int | None) -> None:
        self.finished.append(event)
        if worker is not None:
            self.hubs[worker].publish(event)  # the worker's tree counts the hit
        if self._runtime is not None:
            self._runtime.hub.publish(event)

    def view(self) -> Any:
        """Side-by-side views: per-worker trees, hit rates and load (:class:`sgnb.scaleout.views.ClusterView`)."""
        from sgnb.scaleout.views import ClusterView

        return ClusterView(self)

    def __repr__(self) -> str:
        if not self.started:
            return f"<Cluster of {self.n} {self.kind} workers, not started>"
        alive = sum(p.alive() for p in self.procs)
        return f"<Cluster {self.router.url if self.router else '?'} {self.policy}: {alive}/{self.n} workers alive>"


def cluster(
    workers: int = 2,
    policy: str = "cache_aware",
    model: str = "bundled",
    runtime: str | None = "auto",
    **options: Any,
) -> Cluster:
    """Start ``workers`` SGLang workers and SGLang's router (``policy``) on 127.0.0.1; return the handle.

    ``runtime``: ``local`` (``sgnb serve`` workers on the CPU), ``engine`` (``sglang.launch_server``,
    one per GPU; untested here) or ``auto``. Options: ``max_total_tokens`` and ``threads`` per worker,
    ``worker_args`` (more worker flags), ``router_args`` (any ``sglang_router.launch_router`` flag,
    e.g. ``["--cache-threshold", "0.5"]``), ``timeout`` (s per worker start), ``log_dir``.
    ValueError on bad arguments; RuntimeError (with the log's tail) if a process fails to start.
    """
    return Cluster(workers, policy, model, runtime, **options).start()
