"""``CachePanel``: one row per finished request - how much of its prompt came from the cache.

Give it a runtime (its hub and tokenizer) or a bare ``EventHub``:

    panel = CachePanel(rt)
    panel                           # rows appear as requests finish
    panel.plot()                    # matplotlib Figure: cached vs new tokens, running hit rate

Rows show the prompt (decoded with the runtime's tokenizer, shortened; a click shows it whole), its
cached and new tokens, hit %, TTFT and latency. A click on a row also selects its request: every
``RadixTreeWidget`` whose mirror saw that request highlights its path (``selected`` -> the tree's
``highlight``), the cached nodes apart from the ones it wrote.

While the cell that made it runs and it follows requests (``sgnb.widgets._stop.enable_stop`` takes the
button away when that cell ends: a ``%sglang stats`` panel left on screen has none) it carries a Stop
button, in JupyterLab and Notebook 7: the kernel's own interrupt (the
server's ``POST /api/kernels/<id>/interrupt``, what Kernel > Interrupt sends) - except while a
``%%sglang`` program runs in an ipykernel with subshells: then the click reaches the program
(``sgnb.widgets._stop``), which aborts its requests and ends normally, keeping the partial text, and
cells queued after it run. sgnb's runtimes abort the request (SGLang's ``finish_reason``
``{"type": "abort"}``) and free its KV; the panel then says how many tokens the stopped requests had
generated.
"""

from __future__ import annotations

import pathlib
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import traitlets as t

from sgnb.widgets._base import SgnbWidget
from sgnb.widgets._cache_static import render_static, stopped_line
from sgnb.widgets._layout import short_text
from sgnb.widgets._stop import enable_stop

_HERE = pathlib.Path(__file__).parent
STATIC_ROWS = 50
FULL_PROMPT_CHARS = 2000


def view_module(name: str, stop: bool = True) -> str:
    """A view's ES module with the views' shared functions (``_view.js``) and, with ``stop``, the Stop
    button's (``_stop.js``) in front."""
    parts = ["_view.js", *(["_stop.js"] if stop else []), name]
    return "\n".join((_HERE / part).read_text() for part in parts)


class CachePanel(SgnbWidget):
    _esm = view_module("cache_panel.js")

    rows = t.List(t.Dict()).tag(sync=True)
    summary = t.Dict().tag(sync=True)
    title = t.Unicode("Prefix cache hits").tag(sync=True)
    selected = t.Unicode("").tag(sync=True)  # the request id of the clicked row ("" for none)
    kernel_id = t.Unicode("").tag(sync=True)  # what the Stop button interrupts ("": no button)
    stoppable = t.Bool(False).tag(sync=True)  # the panel follows requests: the Stop button shows
    stop_route = t.Bool(False).tag(sync=True)  # a Stop click reaches a running program (sgnb.widgets._stop)
    # A cluster's panel (sgnb.scaleout.views.WorkerCachePanel): a "worker" column (each row's
    # ``worker``: "w0", "w1", "unknown") and the workers' own figures (``workers``: one dict per
    # worker, then the "all" row; see sgnb.scaleout.metrics.WorkerInfo.as_row). Off for one runtime.
    worker_column = t.Bool(False).tag(sync=True)
    workers = t.List(t.Dict()).tag(sync=True)

    def __init__(
        self,
        source: Any = None,
        *,
        decode: Any = None,
        max_rows: int = 200,
        interval: float = 0.1,
        title: str = "Prefix cache hits",
        history: Iterable[Any] | Callable[[], Iterable[Any]] = (),
    ) -> None:
        """``source``: a runtime (its ``hub`` and ``tokenizer``) or an ``EventHub``.

        ``history``: requests that finished before the panel (a session's ``finished`` deque, or a
        function returning them). It is read *after* the panel subscribes, like a runtime's
        ``follow`` (:class:`sgnb.core.events.TreeSource`): a request that finishes meanwhile (a
        cluster tags and publishes on a background thread) is in the history, or comes live, or
        both - then it is shown once (by ``rid``).
        """
        super().__init__(interval=interval, title=title)
        hub = getattr(source, "hub", source)
        tok: Any = decode if decode is not None else getattr(source, "tokenizer", None)
        self._decode: Any = (lambda ids: str(tok.decode(ids))) if hasattr(tok, "decode") else tok
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._events: list[Any] = []
        self._texts: dict[str, str] = {}
        self._totals = [0, 0, 0]  # requests, prompt tokens, cached tokens (never truncated)
        self._stopped = [0, 0]  # aborted requests, the tokens they had generated
        # Subscribe first, then read the history: live events wait in _early until it is replayed.
        self._early: list[Any] | None = []
        self._replayed: set[Any] = set()  # the history's keys: a live copy of one is skipped
        self._unsubscribe = hub.subscribe(self.observe_event) if hub is not None else None
        for event in list(history() if callable(history) else history):
            self._replayed.add(_key(event))
            self._add(event)
        with self._lock:
            early, self._early = self._early, None
        for event in early:
            self._add_live(event)
        self.kernel_id = jupyter_kernel_id()
        self.stoppable = self._unsubscribe is not None
        self.stop_route = enable_stop(self)
        self.observe(self._select, names=["selected"])
        self._refresh()

    def _select(self, change: dict[str, Any]) -> None:
        """Highlight the selected request's path in every live tree whose mirror saw it."""
        from sgnb.widgets.tree import RadixTreeWidget

        old, new = str(change["old"]), str(change["new"])
        for widget in list(SgnbWidget._live):
            if not isinstance(widget, RadixTreeWidget):
                continue
            if new and widget.mirror.request(new) is not None:
                widget.highlight = new
            elif old and widget.highlight == old:
                widget.highlight = ""

    def observe_event(self, event: Any) -> None:
        """Hub subscriber: keeps ``RequestFinished`` events (cheap; runs on the runtime thread)."""
        if type(event).__name__ != "RequestFinished":
            return
        with self._lock:
            if self._early is not None:  # the history is being replayed: after it
                self._early.append(event)
                return
        self._add_live(event)

    def _add_live(self, event: Any) -> None:
        with self._lock:
            key = _key(event)
            if key in self._replayed:  # finished while the panel subscribed: already a history row
                self._replayed.discard(key)
                return
        self._add(event)

    def _add(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)
            self._totals[0] += 1
            self._totals[1] += int(event.prompt_tokens)
            self._totals[2] += int(event.cached_tokens)
            if _finish(event) == "abort":
                self._stopped[0] += 1
                self._stopped[1] += int(event.completion_tokens)
            del self._events[: max(0, len(self._events) - self.max_rows)]
        self.request_update()

    # ---- state ---------------------------------------------------------------------------

    def _row(self, ev: Any) -> dict[str, Any]:
        full = self._texts.get(ev.rid)
        if full is None:
            ids = list(getattr(ev, "prompt_ids", []) or [])
            full = self._decode(ids) if self._decode and ids else f"({ev.prompt_tokens} tokens)"
            self._texts[ev.rid] = full
        text = short_text(full, 60)
        prompt, cached = int(ev.prompt_tokens), int(ev.cached_tokens)
        return {
            "rid": str(ev.rid)[:8],
            "request": str(ev.rid),
            "prompt": text,
            "prompt_full": full[-FULL_PROMPT_CHARS:],  # shown on click (the end: where prompts differ)
            "prompt_tokens": prompt,
            "cached": cached,
            "new": prompt - cached,
            "hit": round(cached / prompt, 4) if prompt else 0.0,
            "completion": int(ev.completion_tokens),
            "ttft_ms": round(1000 * float(ev.ttft), 1),
            "latency_ms": round(1000 * float(ev.e2e_latency), 1),
            "constraint": ev.constraint or "",
            "finish": _finish(ev),
        }

    def _refresh(self) -> None:
        with self._lock:
            events = list(self._events)
            n, prompt, cached = self._totals
            stopped, stopped_tokens = self._stopped
        rows = [self._row(ev) for ev in events]
        if len(self._texts) > 4 * self.max_rows:
            keep = {str(ev.rid) for ev in events}
            self._texts = {k: v for k, v in self._texts.items() if k in keep}
        self.rows = rows
        self.summary = {
            "requests": n,
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "hit_rate": round(cached / prompt, 4) if prompt else 0.0,
            "stopped": stopped,
            "stopped_tokens": stopped_tokens,
        }

    # ---- outputs -------------------------------------------------------------------------

    def plot(self, ax: Any = None) -> Any:
        """A matplotlib Figure: stacked cached/new prompt tokens per request and the running hit rate.

        It displays as a PNG in a fresh notebook (no ``%matplotlib inline`` needed), in nbconvert
        HTML and under papermill (``sgnb.widgets._chart.ChartFigure``).
        """
        from sgnb.widgets._chart import ChartFigure

        self._throttle.flush()
        rows = list(self.rows)
        if ax is None:
            fig = ChartFigure(figsize=(max(4.0, min(12.0, 0.35 * len(rows) + 2)), 3.2), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        xs = list(range(1, len(rows) + 1))
        cached = [r["cached"] for r in rows]
        new = [r["new"] for r in rows]
        ax.bar(xs, cached, color="#f28e2b", label="cached (reused KV)")
        ax.bar(xs, new, bottom=cached, color="#bab0ac", label="new (prefilled)")
        ax.set_xlabel("request")
        ax.set_ylabel("prompt tokens")
        ax.set_title(self.title)
        rate = ax.twinx()
        running, seen_p, seen_c = [], 0, 0
        for r in rows:
            seen_p += r["prompt_tokens"]
            seen_c += r["cached"]
            running.append(100 * seen_c / seen_p if seen_p else 0.0)
        rate.plot(xs, running, color="#4e79a7", marker="o", markersize=3, label="running hit rate")
        rate.set_ylim(0, 100)
        rate.set_ylabel("hit rate %")
        handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
        if rows:
            ax.legend(handles=handles, loc="upper left", fontsize=8)
        return fig

    def _summary(self) -> str:
        s = self.summary
        return (
            f"CachePanel: {s.get('requests', 0)} request{'' if s.get('requests') == 1 else 's'}, "
            f"{s.get('cached_tokens', 0)}/"
            f"{s.get('prompt_tokens', 0)} prompt tokens cached (hit rate {s.get('hit_rate', 0.0):.0%})"
            f"{stopped_line(s).replace(' · ', '; ')}"
        )

    def _static_html(self) -> str:
        rows = list(self.rows)[-STATIC_ROWS:]
        return render_static(rows, dict(self.summary), self.title, self.worker_column, list(self.workers))

    def detach(self) -> None:
        """Stop adding requests (the rows so far stay, and the view stays live for them)."""
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
            self.stoppable = False

    def close(self) -> None:
        self.detach()
        super().close()


def _key(event: Any) -> Any:
    """A finished request's identity: its ``rid`` (the event object itself when it has none)."""
    return str(event.rid) if getattr(event, "rid", "") else id(event)


def _finish(event: Any) -> str:
    """The type of SGLang's ``finish_reason`` ("stop", "length", "abort"; "" when missing)."""
    reason = getattr(event, "finish_reason", None)
    return str(reason.get("type", "")) if isinstance(reason, dict) else ""


def jupyter_kernel_id() -> str:
    """The id the Jupyter server knows this kernel by ("" outside a server-started kernel).

    jupyter_client's ``MultiKernelManager`` names a kernel's connection file ``kernel-<id>.json``.
    """
    # Only a kernel that is running: importing ipykernel elsewhere would swap the comm manager
    # of widgets made before (the ``comm`` package's hooks).
    app = sys.modules.get("ipykernel.kernelapp")
    if app is None or not app.IPKernelApp.initialized():
        return ""
    stem = pathlib.Path(str(app.IPKernelApp.instance().connection_file)).stem
    return stem.removeprefix("kernel-") if stem.startswith("kernel-") else ""
