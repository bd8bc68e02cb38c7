"""The Stop button's kernel side: a click that reaches a running ``%%sglang`` cell.

ipykernel handles a widget's messages between cells, so a click would wait for the cell it should
stop (and jupyter-ui-poll 1.1.0 cannot help on ipykernel 7.4: it calls ``kernel.do_one_iteration``,
which 7.4 no longer has, and swallows the AttributeError). ipykernel 7 runs *subshells*: threads
of their own, to which the shell channel thread routes a comm message when the comm's
``_reply_subshell_for(data, default)`` names one (``Kernel.shell_channel_thread_main``). A view
routes only its ``stop`` message there, so the click is handled while the cell runs; its state
messages stay on the main shell.

A running program (``sgnb.run_program``) registers a stopper with :func:`running`; a Stop click
calls every registered stopper (they abort the program's requests: the cell then ends normally
with the partial text). With none running (plain Python calling ``rt.generate``) or no subshell
routing (an ipykernel before 7.4: 7.0-7.3 have subshells but their comms have no
``_reply_subshell_for``, and 6.x has neither), the button interrupts the kernel instead, as
Kernel > Interrupt does.

A view's button shows only while its cell runs: :func:`enable_stop` takes it away (the view's
``stoppable``) when the cell that made the view ends (IPython's ``post_run_cell``), so a stats
panel left on screen offers no Stop for cells it cannot stop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

_lock = threading.Lock()
_stoppers: list[Callable[[], None]] = []
_subshell: list[str] = []  # the kernel's one stop subshell, created on first use


@contextlib.contextmanager
def running(stop: Callable[[], None]) -> Iterator[None]:
    """Register ``stop`` (called from the subshell thread on a click) while the block runs."""
    with _lock:
        _stoppers.append(stop)
    try:
        yield
    finally:
        with _lock:
            if stop in _stoppers:
                _stoppers.remove(stop)


def stop_running() -> int:
    """Call every registered stopper; returns how many (0: nothing to stop this way)."""
    with _lock:
        stoppers = list(_stoppers)
    for stop in stoppers:
        stop()
    return len(stoppers)


def kernel_subshell() -> str | None:
    """The id of a subshell of the running ipykernel (made once), or None without one."""
    app = sys.modules.get("ipykernel.kernelapp")
    if app is None or not app.IPKernelApp.initialized():
        return None
    kernel = app.IPKernelApp.instance().kernel
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return None  # ipykernel 6, or a kernel started without subshells
    if not hasattr(getattr(thread, "manager", None), "_create_subshell") or not hasattr(thread, "io_loop"):
        return None  # an ipykernel whose private subshell API differs from 7.x's
    with _lock:
        if not _subshell:
            # SubshellManager._create_subshell runs on the shell channel thread only.
            made: concurrent.futures.Future[str] = concurrent.futures.Future()

            def create() -> None:
                try:
                    made.set_result(thread.manager._create_subshell())
                except BaseException as exc:  # reported to the caller below
                    made.set_exception(exc)

            thread.io_loop.add_callback(create)
            try:
                _subshell.append(made.result(timeout=10))
            except Exception:
                return None
        return _subshell[0]


def _is_stop(data: Any) -> bool:
    content = data.get("content") if isinstance(data, dict) else None
    return isinstance(content, dict) and content.get("type") == "stop"


def hide_when_cell_ends(widget: Any) -> None:
    """Set ``widget.stoppable = False`` when the running IPython cell ends (``post_run_cell``; once).

    Outside IPython nothing changes (the caller's own ``finish`` / ``detach`` take the button away).
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    ref = weakref.ref(widget)

    def hide(*_: Any) -> None:
        shell.events.unregister("post_run_cell", hide)  # trigger() iterates over a copy
        view = ref()
        if view is not None and getattr(view, "stoppable", False):
            with contextlib.suppress(Exception):  # a closed widget: nothing left to update
                view.stoppable = False

    shell.events.register("post_run_cell", hide)


def enable_stop(widget: Any) -> bool:
    """Let ``widget``'s Stop button reach a running program; returns whether a click can (the
    view's ``stop_route``). Its ``stop`` message goes to the kernel's subshell and is answered with
    ``{"type": "stop-reply", "stopped": n}`` (n = 0: the view interrupts the kernel instead).

    A comm without ``_reply_subshell_for`` (ipykernel < 7.4) gets ``False``: its view interrupts
    the kernel. The button goes when the current cell ends (:func:`hide_when_cell_ends`).
    """
    hide_when_cell_ends(widget)
    comm: Any = getattr(widget, "comm", None)
    sid = kernel_subshell() if comm is not None and hasattr(comm, "_reply_subshell_for") else None
    if sid is not None:
        default_route = comm._reply_subshell_for
        comm._reply_subshell_for = lambda data, default: (
            sid if _is_stop(data) else default_route(data, default)
        )

    def on_msg(_widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "stop":
            widget.send({"type": "stop-reply", "stopped": stop_running()})

    widget.on_msg(on_msg)
    return sid is not None
