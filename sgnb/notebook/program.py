"""Running a ``%%sglang`` cell's body as an SGLang program, from Python as from the cell magic.

A body is the statements of an ``@sgl.function`` without its ``def`` line, ``s`` bound to the
program state::

    state = sgnb.run_program('''
    s += "The capital of France is" + sgl.gen("city", max_tokens=4, temperature=0)
    ''')
    state["city"]

A cell that defines programs itself (``@sgl.function``) is plain Python instead:
:func:`defines_programs` tells the two apart by reading the cell's syntax tree.
"""

from __future__ import annotations

import ast
import linecache
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

from IPython.display import display

from sgnb.notebook.views import ProgramStateView, throttled
from sgnb.widgets._stop import running

BODY_OFFSET = 1  # lines program_source() puts before the body: the def line
PROGRAM_NAME = "__sgnb_program"


class ProgramSyntaxError(ValueError):
    """The body does not parse; the message names the body's line (one line)."""


def _is_sgl_function(node: ast.expr) -> bool:
    """``function``, ``sgl.function`` or ``sglang.function`` (SGLang's program decorator)."""
    if isinstance(node, ast.Name):
        return node.id == "function"
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "function"
        and isinstance(node.value, ast.Name)
        and node.value.id in ("sgl", "sglang")
    )


def defines_programs(source: str) -> bool:
    """True if ``source`` defines SGLang programs: a def decorated with ``@sgl.function`` (or
    ``@sgl.function(...)``, ``@function``) or a call ``sgl.function(f)``, anywhere in the cell.

    Such a cell runs as plain Python; any other is a program body. Source that does not parse is a
    body (its syntax error is then reported against the body's lines). Strings and comments that
    merely mention ``@sgl.function`` do not count.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _is_sgl_function(target):
                    return True
        elif isinstance(node, ast.Call) and _is_sgl_function(node.func):
            return True
    return False


def program_source(body: str) -> str:
    """The Python source that :func:`run_program` compiles: ``body`` inside a ``def``."""
    return f"def {PROGRAM_NAME}(s):\n" + textwrap.indent(body if body.strip() else "pass", "    ")


def _runtime_of(backend: Any) -> Any:
    if backend is None:
        from sgnb.core.version_check import sglang_global_config

        backend = sglang_global_config().default_backend
    return getattr(backend, "runtime", None)


def abort_requests(runtime: Any, timeout: float = 10.0) -> None:
    """Abort ``runtime``'s requests (an interrupted program's) and wait until none runs.

    Mirrors SGLang's ``/abort_request {"abort_all": true}``; afterwards no KV slot stays locked.
    """
    if runtime is None or not hasattr(runtime, "abort_all"):
        return
    runtime.abort_all()
    if not hasattr(runtime, "cache_state"):
        return
    deadline = time.monotonic() + timeout
    while runtime.cache_state().get("running", 0) and time.monotonic() < deadline:
        time.sleep(0.02)  # the scheduler frees an aborted request at its next step


def stopped_note(state: Any) -> str:
    """The one line a stopped program prints: each variable that SGLang aborted and its tokens.

    ``■ stopped after 55 tokens (story kept the text so far)`` for one; for several, per variable:
    ``■ stopped: story after 55 tokens, title after 3 tokens (each kept the text so far)``.
    An aborted gen ends with ``meta_info["finish_reason"]`` ``{"type": "abort", ...}`` (SGLang's
    ``FINISH_ABORT.to_json``) and keeps the text generated so far.
    """
    aborted: list[tuple[str, int]] = []
    for name, meta in dict(getattr(state.stream_executor, "meta_info", {}) or {}).items():
        reason = meta.get("finish_reason") if isinstance(meta, dict) else None
        if isinstance(reason, dict) and reason.get("type") == "abort":
            aborted.append((name, int(meta.get("completion_tokens", 0) or 0)))

    def after(tokens: int) -> str:
        return f"after {tokens} token{'' if tokens == 1 else 's'}"

    if not aborted:
        return "■ stopped (no request was generating)"
    if len(aborted) == 1:
        name, tokens = aborted[0]
        return f"■ stopped {after(tokens)} ({name} kept the text so far)"
    each = ", ".join(f"{name} {after(tokens)}" for name, tokens in aborted)
    return f"■ stopped: {each} (each kept the text so far)"


def _finish(on_update: Any) -> None:
    """Tell a live view (``LiveState.finish``) that its program has ended."""
    finish = getattr(on_update, "finish", None)
    if finish is not None:
        finish()


def run_program(
    source: str,
    namespace: dict[str, Any] | None = None,
    *,
    backend: Any = None,
    stream: bool = True,
    temperature: float | None = None,
    max_tokens: int | None = None,
    on_update: Callable[[Any], None] | None = None,
    filename: str | None = None,
) -> Any:
    """Run ``source`` (a program body, ``s`` bound) as a one-off ``@sgl.function``; return its state.

    ``namespace``: the globals the body sees (a notebook's user namespace; ``sgl`` is added if
    missing). ``backend``: an sglang backend (``rt.backend``); None uses sglang's default backend,
    which ``%sglang start`` sets. ``temperature`` / ``max_tokens``: defaults for the body's
    ``sgl.gen`` calls (``SglFunction.run``'s ``temperature`` / ``max_new_tokens``). ``stream``:
    run it on SGLang's stream executor and call ``on_update(state)`` as text arrives (at most
    10 times a second); ``on_update`` is also called once when the state exists and once at the end,
    then its ``finish()`` if it has one (:class:`LiveState`'s: the Stop button goes), on errors too.
    ``filename``: the name the body's code is compiled under (a notebook cell's, for tracebacks).

    Returns sglang's ``ProgramState`` (``state["var"]``, ``state.text()``). Raises
    ``ProgramSyntaxError`` (a ValueError) when the body does not parse, and the body's own error
    (``sgl.gen(regexx=...)``'s TypeError, an invalid regex's ``re.error``) as itself, once the
    program has ended. On KeyboardInterrupt the runtime's requests are aborted and it is re-raised.
    A Stop click of a live view (``sgnb.widgets._stop``) while it runs aborts its requests instead:
    it then ends normally, its variables hold the partial text (SGLang's ``finish_reason``
    ``{"type": "abort"}``) and it prints :func:`stopped_note`.
    """
    import sglang as sgl

    code_text = program_source(source)
    if filename is None:
        filename = f"<sgnb-program-{time.monotonic_ns()}>"
        lines = code_text.splitlines(keepends=True)
        linecache.cache[filename] = (len(code_text), None, lines, filename)  # traceback lines
    try:
        code = compile(code_text, filename, "exec")
    except SyntaxError as exc:
        line = (exc.lineno or 1) - BODY_OFFSET
        raise ProgramSyntaxError(f"syntax error in the program cell, line {line}: {exc.msg}") from None
    namespace = {} if namespace is None else namespace
    namespace.setdefault("sgl", sgl)
    exec(code, namespace)
    body = namespace.pop(PROGRAM_NAME)
    failures: list[BaseException] = []

    def __sgnb_program(s: Any) -> None:
        # A streamed program runs on a thread of SGLang's, which only prints what the body
        # raises; keep it to raise here, on the caller's thread.
        try:
            body(s)
        except Exception as exc:
            failures.append(exc)

    defaults: dict[str, Any] = {}
    if temperature is not None:
        defaults["temperature"] = temperature
    if max_tokens is not None:
        defaults["max_new_tokens"] = max_tokens
    runtime = _runtime_of(backend)
    stopped = threading.Event()

    def stop() -> None:  # a Stop click (sgnb.widgets._stop), on the kernel's subshell thread
        stopped.set()
        if runtime is not None and hasattr(runtime, "abort_all"):
            runtime.abort_all()

    try:
        with running(stop):
            state = sgl.function(__sgnb_program).run(stream=stream, backend=backend, **defaults)
            if on_update is not None:
                on_update(state)
                if stream:
                    for _ in throttled(state.text_iter()):
                        on_update(state)
                        if stopped.is_set():  # a gen the body starts after the click: aborted too
                            stop()
            # The executor's worker sets error_ and ends only after the body has ended and its queue
            # drained (interpreter.StreamExecutor._thread_worker_func); sync() alone can return before.
            state.sync()
            worker = state.stream_executor.worker
            while worker.is_alive():
                worker.join(0.05)
                if stopped.is_set():
                    stop()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            abort_requests(runtime)
        _finish(on_update)  # the live view's Stop button goes with the program
        raise
    if stopped.is_set():
        abort_requests(runtime)  # wait until the aborted requests have left (their KV freed)
        print(stopped_note(state))
        if isinstance(on_update, LiveState):
            on_update.stop()  # the view says it was stopped, as after an interrupt
    if on_update is not None:
        on_update(state)
        _finish(on_update)
    error = failures[0] if failures else state.error()
    if error is not None:
        raise error
    return state


class LiveState:
    """An ``on_update`` for :func:`sgnb.notebook.program.run_program`: shows the state live.

    The view is a :class:`sgnb.widgets.program.ProgramLiveView` (the state rendered by
    :class:`ProgramStateView`) with a Stop button while the program runs; :func:`run_program`
    calls :meth:`finish` when it ends, which takes the button away.
    """

    def __init__(self) -> None:
        self.view: ProgramStateView | None = None
        self.widget: Any = None

    def __call__(self, state: Any) -> None:
        if self.view is None:
            from sgnb.widgets.program import ProgramLiveView

            self.view = ProgramStateView(state)
            self.widget = ProgramLiveView(self.view._repr_html_, self.view.__repr__)
            display(self.widget)
        else:
            self.widget.request_update()

    def finish(self) -> None:
        """The program has ended (or failed): show its last state, without the Stop button."""
        if self.widget is not None:
            self.widget.finish()

    def stop(self, timeout: float = 10.0) -> None:
        """Show the state as stopped (after an interrupt or Stop), not as still generating.

        First waits (at most ``timeout`` s) for SGLang's executor thread to take the aborted
        request's last chunk: it carries the last token's text and ``meta_info`` with
        ``completion_tokens`` = every token generated (SGLang's FINISH_ABORT output), so the
        state table agrees with the token view and stats instead of lagging one chunk behind.
        """
        if self.view is not None:
            executor = self.view.state.stream_executor
            waiter = threading.Thread(target=executor.sync, daemon=True)
            waiter.start()
            waiter.join(timeout)
            self.view.stopped = True
            self.finish()
