"""Cluster views: one radix tree per worker side by side, the workers' own figures, tagged requests.

``ClusterView(cluster)`` shows a table (per worker: state, the router's view, requests, cache hit
rate, load; and the whole cluster; from each worker's ``/metrics``, so requests other clients sent
to the router count too), each worker's :class:`~sgnb.widgets.RadixTreeWidget` fed by that
worker's KV events, and a :class:`WorkerCachePanel` whose ``worker`` column names the worker that
served each of the session's requests. Like every sgnb view it carries a static ``text/html`` snapshot for exports.
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from typing import Any

from sgnb.widgets import CachePanel, RadixTreeWidget
from sgnb.widgets._static import WIDGET_VIEW

REFRESH_S = 1.0  # the table and tree titles follow worker state (a killed worker turns dead)


def worker_label(index: int | None) -> str:
    """``w<index>``; ``unknown`` when the workers' reports do not say which one served a request."""
    return "unknown" if index is None else f"w{index}"


_POLLERS: weakref.WeakKeyDictionary[Any, FiguresPoller] = weakref.WeakKeyDictionary()  # cluster -> its poller
_POLLERS_LOCK = threading.Lock()


class FiguresPoller:
    """One thread per cluster that reads every worker's ``/metrics`` each ``every`` seconds and
    gives the rows to each live :class:`WorkerCachePanel` (however many panels, one read per tick).

    It ends when no panel follows any more, when the cluster is stopped (the panels keep their last
    live figures) or when every worker died (after showing them dead); the next panel starts another.
    """

    def __init__(self, cluster: Any, every: float) -> None:
        self.cluster = cluster
        self.every = every
        self.panels: weakref.WeakSet[WorkerCachePanel] = weakref.WeakSet()
        self.thread = threading.Thread(target=self._run, name="sgnb-cluster-figures", daemon=True)
        self.done = False

    @classmethod
    def follow(cls, panel: WorkerCachePanel, every: float = REFRESH_S) -> None:
        with _POLLERS_LOCK:
            poller = _POLLERS.get(panel.cluster)
            if poller is None or poller.done:
                poller = _POLLERS[panel.cluster] = FiguresPoller(panel.cluster, every)
                poller.panels.add(panel)
                poller.thread.start()
            else:
                poller.panels.add(panel)

    @classmethod
    def unfollow(cls, panel: WorkerCachePanel) -> None:
        with _POLLERS_LOCK:
            poller = _POLLERS.get(panel.cluster)
            if poller is not None:
                poller.panels.discard(panel)

    def _end(self) -> None:
        """Under ``_POLLERS_LOCK``: no panel joins this poller any more (``follow`` starts another)."""
        self.done = True
        if _POLLERS.get(self.cluster) is self:
            del _POLLERS[self.cluster]

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            with _POLLERS_LOCK:
                panels = list(self.panels)
                if not panels or self.cluster.stopped:  # stopped on purpose: the last live figures stay
                    self._end()
                    return
            try:
                rows = figures(self.cluster)
                for panel in panels:
                    panel.show_figures(rows)
            except Exception:  # a worker going away mid-read: next tick
                continue
            if not any(p.alive() for p in self.cluster.procs):  # every worker died: shown, then end
                with _POLLERS_LOCK:
                    self._end()
                return


def figures(cluster: Any) -> list[dict[str, Any]]:
    """Each worker's own ``/metrics`` figures as rows (``WorkerInfo.as_row``), then the ``all`` row."""
    workers = cluster.workers
    return [w.as_row() for w in workers] + [cluster.totals(workers)]


class WorkerCachePanel(CachePanel):
    """The session's cache panel on a cluster: a ``worker`` column and the workers' own figures.

    Each row's ``worker`` is ``w0``, ``w1``, ... from ``cluster.served_by(rid)`` (the workers' KV
    events), or ``unknown`` when their events do not say (a full cache hit stores nothing new).
    Above the rows, ``workers`` holds each worker's own ``/metrics`` figures and the cluster's
    (requests, prompt/cached tokens, hit rate, running and queued; every client's requests, not
    only this session's), read every ``poll_s`` seconds (:class:`FiguresPoller`) while the panel
    follows requests; ``figures=False`` leaves them out (a :class:`ClusterView` shows them itself).
    ``history``: requests that finished before the panel (none unless given); other ``kwargs`` as
    :class:`~sgnb.widgets.CachePanel`.
    """

    def __init__(
        self, cluster: Any, *, figures: bool = True, poll_s: float = REFRESH_S, **kwargs: Any
    ) -> None:
        self.cluster = cluster
        kwargs.setdefault("title", "Prefix cache hits, by worker")
        super().__init__(cluster.runtime, **kwargs)
        self.worker_column = True
        if figures:
            self.poll_figures()
            FiguresPoller.follow(self, poll_s)

    def _row(self, ev: Any) -> dict[str, Any]:
        row = super()._row(ev)
        row["worker"] = worker_label(self.cluster.served_by(ev.rid))
        return row

    def poll_figures(self) -> None:
        """Read every worker's ``/metrics`` now into ``workers`` (one row each, then ``all``)."""
        self.show_figures(figures(self.cluster))

    def show_figures(self, rows: list[dict[str, Any]]) -> None:
        if self.cluster.stopped and self.workers:  # stopped while reading: keep the live figures
            return
        self.workers = rows

    def _summary(self) -> str:
        figures = "; ".join(
            f"{w['worker']} {w['state']}: {w['requests']} requests, hit rate {_pct(float(w['hit_rate']))}"
            + (
                f", load {w['running'] + w['queued']}"
                if w["worker"] != "all" and w["state"] == "alive"
                else ""
            )
            for w in self.workers
        )
        return super()._summary() + (f"\nworkers' own /metrics (every client): {figures}" if figures else "")

    def detach(self) -> None:
        """Stop adding requests and reading the figures (both stay as they are)."""
        FiguresPoller.unfollow(self)
        super().detach()


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def workers_table(cluster: Any, workers: list[Any] | None = None) -> str:
    """The workers' figures as an HTML table, every number from the worker's own ``/metrics``
    (so every client's requests count); the last row is the whole cluster (a dead worker's
    counters as last seen, :func:`sgnb.scaleout.metrics.totals`)."""
    workers = cluster.workers if workers is None else workers
    head = (
        "<tr><th>worker</th><th>URL</th><th>PID</th><th>state</th><th>in router</th><th>requests</th>"
        "<th>prompt tok</th><th>cached tok</th><th>hit rate</th><th>running</th><th>queued</th></tr>"
    )
    rows = []
    for w in workers:
        dead = w.state != "alive"
        style = " style='color:#b00;text-decoration:line-through'" if dead else ""
        state = "<b style='color:#b00'>dead</b>" if dead else "alive"
        state += " (last seen)" if w.stale else ""
        router = {True: "yes", False: "dropped", None: "?"}[w.in_router]
        rows.append(
            f"<tr data-worker='{worker_label(w.index)}' data-state='{w.state}'><td{style}>{worker_label(w.index)}</td>"
            f"<td>{html.escape(w.url)}</td><td>{w.pid}</td>"
            f"<td>{state}</td><td>{router}</td><td>{w.requests}</td><td>{w.prompt_tokens}</td>"
            f"<td>{w.cached_tokens}</td><td>{_pct(w.hit_rate)}</td><td>{w.running}</td><td>{w.queued}</td></tr>"
        )
    t = cluster.totals(workers)
    rows.append(
        f"<tr data-worker='all' style='font-weight:600'><td>all</td><td>{html.escape(cluster.url)} (router, "
        f"{html.escape(cluster.policy)})</td><td></td><td>{t['state']}</td><td></td>"
        f"<td>{t['requests']}</td><td>{t['prompt_tokens']}</td><td>{t['cached_tokens']}</td>"
        f"<td>{_pct(t['hit_rate'])}</td><td>{t['running']}</td><td>{t['queued']}</td></tr>"
    )
    return (
        "<table class='sgnb-table' data-sgnb-static='cluster'><caption style='text-align:left'>"
        "<b>SGLang workers behind sglang-router</b> (figures: each worker's own /metrics, "
        "every client's requests)</caption>"
        f"{head}{''.join(rows)}</table>"
    )


def tree_title(w: Any) -> str:
    if w.state != "alive":
        return f"{worker_label(w.index)} · DEAD (pid {w.pid}) · served {w.requests} requests"
    return f"{worker_label(w.index)} · {w.requests} requests · hit rate {_pct(w.hit_rate)} · load {w.load}"


class ClusterView:
    """Per-worker trees side by side, the workers table and (``panel=True``) the tagged cache panel."""

    def __init__(self, cluster: Any, *, panel: bool = True, budget: int = 120) -> None:
        self.cluster = cluster
        workers = cluster.workers
        self.trees = [
            RadixTreeWidget(m, budget=budget, title=tree_title(w))
            for m, w in zip(cluster.mirrors, workers, strict=True)
        ]
        self.panel = (
            WorkerCachePanel(cluster, history=cluster.finished, figures=False)
            if panel and cluster.started
            else None
        )
        self._workers = workers
        self._box: Any = None
        self._header: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Re-read every worker's state and figures; update the table and the tree titles."""
        self._workers = self.cluster.workers
        for tree, w in zip(self.trees, self._workers, strict=True):
            tree.title = tree_title(w)
            tree.request_update()
            tree._throttle.flush()
        if self._header is not None:
            self._header.value = workers_table(self.cluster, self._workers)

    def _follow(self) -> None:
        while not self._stop.wait(REFRESH_S):
            if not any(p.alive() for p in self.cluster.procs):
                break
            try:
                self.refresh()
            except Exception:  # a worker going away mid-read: try again next tick
                continue

    def widget(self) -> Any:
        """The live ipywidgets box (built once; a thread refreshes it every second)."""
        if self._box is None:
            import ipywidgets as w

            self._header = w.HTML(workers_table(self.cluster, self._workers))
            row = w.HBox(self.trees, layout=w.Layout(width="100%", align_items="flex-start"))
            for tree in self.trees:
                tree.layout = w.Layout(flex="1 1 0", min_width="0")
            parts: list[Any] = [self._header, row, *([self.panel] if self.panel is not None else [])]
            self._box = w.VBox(parts)
            self._thread = threading.Thread(target=self._follow, name="sgnb-cluster-view", daemon=True)
            self._thread.start()
        return self._box

    def static_html(self) -> str:
        cells = "".join(
            f"<div style='flex:1 1 0;min-width:0'>{tree._static_html()}</div>" for tree in self.trees
        )
        panel = self.panel._static_html() if self.panel is not None else ""
        return (
            f"<div data-sgnb-static='cluster'>{workers_table(self.cluster, self._workers)}"
            f"<div style='display:flex;gap:8px;align-items:flex-start'>{cells}</div>{panel}</div>"
        )

    def summary(self) -> str:
        alive = sum(w.state == "alive" for w in self._workers)
        trees = ", ".join(
            f"{worker_label(w.index)}: {t.mirror.node_count()} nodes"
            for w, t in zip(self._workers, self.trees, strict=True)
        )
        t = self.cluster.totals(self._workers)  # the workers' own /metrics: every client's requests
        return (
            f"ClusterView: {alive}/{len(self._workers)} workers alive ({trees}); "
            f"{t['requests']} requests served, hit rate {_pct(t['hit_rate'])}, load {t['running'] + t['queued']}"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        self.refresh()
        data: dict[str, Any] = {"text/plain": self.summary(), "text/html": self.static_html()}
        box = self.widget()
        if getattr(box, "comm", None) is not None:
            data[WIDGET_VIEW] = {"version_major": 2, "version_minor": 0, "model_id": box.model_id}
        return data

    def close(self) -> None:
        self._stop.set()
        for tree in self.trees:
            tree.close()
        if self.panel is not None:
            self.panel.close()

    def __repr__(self) -> str:
        return self.summary()
