"""Plain notebook views: status tables, program states, benchmark figures.

Each has ``_repr_html_`` for notebooks and exports, and a ``__repr__`` with no object
addresses (nbval compares ``text/plain``). The live widgets live in :mod:`sgnb.widgets`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from sgnb.notebook.labels import labelled, short_value, speed

T = TypeVar("T")
LIVE_VIEWS = ("tree", "cache", "constrained", "tokens")
MAX_UPDATES_PER_S = 10


def throttled(items: Iterable[T], per_second: float = MAX_UPDATES_PER_S) -> Iterator[T]:
    """Yield at most ``per_second`` items a second, and always the last one."""
    gap = 1.0 / per_second
    last = 0.0
    pending: list[T] = []
    for item in items:
        now = time.monotonic()
        if now - last >= gap:
            last = now
            pending.clear()
            yield item
        else:
            pending[:] = [item]
    yield from pending


def _table(rows: Iterable[tuple[str, Any]], title: str) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return (
        f"<table class='sgnb-table'><caption style='text-align:left'><b>{title}</b></caption>{body}</table>"
    )


class StatusView:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def _repr_html_(self) -> str:
        return _table((labelled(k, v) for k, v in self.status.items()), "SGLang runtime")

    def __repr__(self) -> str:
        keys = ("runtime", "model", "device", "state", "why")
        return "\n".join(f"{k}: {self.status[k]}" for k in keys if k in self.status)


class BenchView:
    def __init__(self, figures: dict[str, Any]) -> None:
        self.figures = figures

    def _repr_html_(self) -> str:
        return _table(
            (labelled(k, v) for k, v in self.figures.items()),
            "sgnb quick benchmark (this runtime, this machine)",
        )

    def __repr__(self) -> str:
        return "quick benchmark: " + ", ".join(sorted(self.figures))


class ProgramStateView:
    """An SGLang ProgramState with its roles and variables marked; re-rendered as it streams."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.started = time.monotonic()
        self.stopped = False  # set when the cell was interrupted/stopped: no role is generating now

    def _variables(self) -> dict[str, Any]:
        executor = self.state.stream_executor
        return {k: v for k, v in executor.variables.items() if isinstance(v, str)}

    def _mark_variables(self, text: str, names: set[str] | None = None) -> str:
        """Escape ``text`` and mark where each variable's generated text is.

        A variable's text is marked at its last place in ``text`` that no other mark covers: the
        generated text follows the prompt that asked for it, which may contain the same words
        (a question about "negative" reviews, answered "negative").
        """
        spans: list[tuple[int, int, str]] = []
        for name, value in self._variables().items():
            if (names is not None and name not in names) or not value.strip():
                continue
            end = len(text)
            while (pos := text.rfind(value, 0, end)) != -1:
                if all(pos + len(value) <= a or pos >= b for a, b, _ in spans):
                    spans.append((pos, pos + len(value), name))
                    break
                end = pos + len(value) - 1
        out, at = [], 0
        for a, b, name in sorted(spans):
            out.append(html.escape(text[at:a]))
            out.append(
                f"<mark title='{html.escape(name)}' style='background:#fff3b0'>{html.escape(text[a:b])}</mark>"
                f"<sub style='color:#a60'>{html.escape(name)}</sub>"
            )
            at = b
        out.append(html.escape(text[at:]))
        return "".join(out)

    def _message_marks(self, messages: list[dict[str, Any]]) -> list[set[str]]:
        """Which variables each message marks: an assistant message holding its text, else any."""
        marks: list[set[str]] = [set() for _ in messages]
        for name, value in self._variables().items():
            if not value.strip():
                continue
            holders = [i for i, m in enumerate(messages) if value in str(m["content"])]
            answers = [i for i in holders if messages[i]["role"] == "assistant"]
            if answers or holders:
                marks[(answers or holders)[-1]].add(name)
        return marks

    def _repr_html_(self) -> str:
        executor = self.state.stream_executor
        messages = executor.messages_ if executor.messages_ else []
        if messages:
            blocks = "".join(
                f"<div style='margin:2px 0'><span style='font-weight:bold;color:#555'>{html.escape(m['role'])}"
                f"</span><pre style='margin:0;white-space:pre-wrap'>{self._mark_variables(str(m['content']), names)}"
                "</pre></div>"
                for m, names in zip(messages, self._message_marks(messages), strict=True)
            )
            # A role's message exists only once the role ends: the text an assistant role is
            # generating now is shown whole, as it streams, in a block of its own.
            shown = "".join(str(m["content"]) for m in messages)
            pending = [(k, v) for k, v in self._variables().items() if v and v not in shown]
            doing = "stopped while generating" if self.stopped else "generating"
            blocks += "".join(
                f"<div style='margin:2px 0'><span style='font-weight:bold;color:#555'>assistant ({doing} "
                f"{html.escape(name)})</span><pre style='margin:0;white-space:pre-wrap'>{html.escape(value)}</pre>"
                "</div>"
                for name, value in pending
            )
        else:
            blocks = f"<pre style='white-space:pre-wrap'>{self._mark_variables(executor.text_)}</pre>"
        rows = []
        events = getattr(executor, "variable_event", {})
        for name, value in self._variables().items():
            meta = executor.meta_info.get(name) or {}
            done = name in events and events[name].is_set()
            tokens = (
                f"{meta.get('cached_tokens', '')}/{meta.get('prompt_tokens', '')}"
                if "prompt_tokens" in meta or "cached_tokens" in meta
                else ""  # a select's meta_info has no token counts
            )
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(short_value(value))}</td><td>{tokens}</td>"
                f"<td>{html.escape(speed(meta, value, time.monotonic() - self.started, done))}</td></tr>"
            )
        table = (
            "<table><tr><th>variable</th><th>value</th><th>cached/prompt tokens</th><th>speed</th></tr>"
            + "".join(rows)
            + "</table>"
            if rows
            else ""
        )
        note = (
            "<div style='color:#a00;font-weight:bold'>stopped: the program was interrupted; "
            "its text is what was generated before</div>"
            if self.stopped
            else ""
        )
        return f"<div class='sgnb-program'>{note}{blocks}{table}</div>"

    def __repr__(self) -> str:
        variables = self._variables()
        summary = ", ".join(f"{k}={v[:40]!r}" for k, v in variables.items())
        return f"ProgramState({len(self.state.stream_executor.text_)} chars; {summary})"


def tree_view(session: Any) -> Any:
    """The session's radix tree, from the mirror it has kept since the runtime started."""
    from sgnb.widgets import RadixTreeWidget

    return RadixTreeWidget(session.mirror if session.mirror is not None else session.require())


def _cache_panel(rt: Any, **kwargs: Any) -> Any:
    """The runtime's own cache panel when it has one (a cluster's rows name the worker), else CachePanel."""
    from sgnb.widgets import CachePanel

    make = getattr(rt, "cache_panel", None)
    return make(**kwargs) if make is not None else CachePanel(rt, **kwargs)


def stats_view(session: Any) -> Any:
    """Every request of the session so far, and the ones to come; prompts decoded with its tokenizer."""
    return _cache_panel(session.require(), history=session.finished)


def cell_cache_view(session: Any) -> Any:
    """``--show cache``: this cell's requests only (``finish_views`` stops it at the cell's end)."""
    return _cache_panel(session.require(), title="Prefix cache hits (this cell)")


def tokens_view(session: Any) -> Any:
    """``%sglang tokens``: the token view of the session's last request that generated tokens."""
    from sgnb.widgets import TokenView

    rt = session.require()
    finished = [e for e in session.finished if e.completion_tokens > 0]
    if not finished:
        raise ValueError("no request has generated tokens yet in this session")
    return TokenView.from_finished(finished[-1], rt)


class TokenTracer:
    """``--show tokens``: a live TokenView, with every request of the cell traced (local runtime)."""

    def __init__(self, runtime: Any) -> None:
        from sgnb.core.token_trace import tracing
        from sgnb.widgets import TokenView

        self.view = TokenView(runtime, title="Tokens of this cell")
        self._tracing = tracing(runtime)
        self._tracing.__enter__()

    def finish(self, state: Any = None) -> None:
        self._tracing.__exit__(None, None, None)
        if state is not None:
            self.view.add_program_state(state)


class ConstrainedCollector:
    """``--show constrained``: the cell's first constrained request paints live, token by token (its
    steps come from the trace hook, so the cell's requests are traced); the others show when it ends."""

    def __init__(self, runtime: Any, limit: int = 8) -> None:
        from sgnb.core.events import RequestFinished
        from sgnb.core.token_trace import tracing
        from sgnb.widgets import ConstrainedView

        self.runtime, self.limit = runtime, limit
        self.finished: list[Any] = []
        self.view = ConstrainedView.follow(runtime)
        self._tracing = tracing(runtime)
        self._tracing.__enter__()
        self._unsubscribe = runtime.hub.subscribe(
            lambda e: (
                self.finished.append(e) if isinstance(e, RequestFinished) and e.constraint_source else None
            )
        )

    def finish(self) -> None:
        from IPython.display import display

        from sgnb.widgets import ConstrainedView

        self._unsubscribe()
        self._tracing.__exit__(None, None, None)
        self.view.stop_following("no constrained request ran in this cell")
        tok = self.runtime.tokenizer
        for event in [e for e in self.finished if e.rid != self.view.rid][: self.limit - 1]:
            text = tok.decode(event.output_ids, skip_special_tokens=True) if tok is not None else ""
            result = {"text": text, "output_ids": event.output_ids, "meta_info": {}}
            display(ConstrainedView(result, self.runtime, event.constraint, event.constraint_source or ""))


def live_views(session: Any, shows: list[str]) -> list[Any]:
    """Display the requested live views before a program runs; they update from events.

    ``constrained`` paints the cell's first constrained request as it is sampled, and shows the
    others, replayed through their grammar, when the cell ends (``finish_views``).
    """
    from IPython.display import display

    out: list[Any] = []
    for name in shows:
        if name == "tree":
            out.append(tree_view(session))
        elif name == "cache":
            out.append(cell_cache_view(session))
        elif name == "constrained":
            out.append(ConstrainedCollector(session.require()))
        elif name == "tokens":
            out.append(TokenTracer(session.require()))
    for view in out:
        display(view.view if isinstance(view, TokenTracer | ConstrainedCollector) else view)
    return out


def finish_views(views: list[Any], state: Any = None) -> None:
    """End the cell's views; ``state`` (the program state, if the cell ran one) adds its selects."""
    from sgnb.widgets import CachePanel

    for view in reversed(views):  # tracing() contexts nest: the last entered exits first
        if isinstance(view, CachePanel):
            view.detach()  # later cells' requests are not this cell's
        elif isinstance(view, ConstrainedCollector):
            view.finish()
        elif isinstance(view, TokenTracer):
            view.finish(state)


class ProgressLine:
    """A one-line progress bar shown while a magic works, removed (emptied) when it is done.

    ``update(done, total, what)`` redraws it in place (``update_display``), so a cell keeps one
    output for it; ``stage(what)`` shows an indeterminate bar with the step and, with
    ``ticking=True``, the seconds so far (redrawn twice a second from a helper thread);
    ``remove()`` leaves an empty output, not a finished bar above the result.
    """

    def __init__(self, title: str, ticking: bool = False) -> None:
        import threading

        from IPython.display import display

        self.title = title
        self.started = time.monotonic()
        self._what, self._done, self._total = "starting", 0, 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.handle = display(self._bundle(), raw=True, display_id=True)
        self._thread = threading.Thread(target=self._tick, daemon=True) if ticking else None
        if self._thread is not None:
            self._thread.start()

    def _bundle(self) -> dict[str, str]:
        with self._lock:
            done, total, what = self._done, self._total, self._what
        elapsed = time.monotonic() - self.started
        count = f"{done}/{total} " if total else ""
        text = f"{self.title}: {count}{what} ({elapsed:.0f} s)"
        bar = f"<progress value='{done}' max='{total}'></progress>" if total else "<progress></progress>"
        return {
            "text/plain": text,
            "text/html": f"<div class='sgnb-progress'>{bar} {html.escape(text)}</div>",
        }

    def _draw(self) -> None:
        if self.handle is not None and not self._stop.is_set():
            self.handle.update(self._bundle(), raw=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def update(self, done: int, total: int, what: str) -> None:
        with self._lock:
            self._done, self._total, self._what = done, total, what
        self._draw()

    def stage(self, what: str) -> None:
        self.update(0, 0, what)

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.handle is not None:
            self.handle.update({"text/plain": "", "text/html": ""}, raw=True)
