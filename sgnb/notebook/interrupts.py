"""Ctrl-C (the kernel's interrupt) in any cell that waits on SGLang aborts the runtime's requests at once.

SGLang's frontend generates on worker threads: ``run_batch`` on a ``ThreadPoolExecutor`` (its
``with`` block joins every worker before the interrupt can leave), ``.run()`` on a
``StreamExecutor`` thread. A ``KeyboardInterrupt`` reaches only the kernel's main thread, so those
workers went on generating to ``max_tokens``: an interrupted ``run_batch`` of two 300-token
programs kept the cell busy for another 17 s and every token was generated, while the cell then
said the request was aborted. ``%%sglang`` cells aborted only after the join, too late as well.

Here, while a cell runs, SIGINT first looks at what the main thread was doing: when its stack
passes through ``sglang`` or ``sgnb`` code, a thread aborts the session runtime's requests
(SGLang's ``/abort_request {"abort_all": true}``, ``TokenizerManager.abort_request(abort_all=True)``)
every 50 ms until the cell has ended, so the gens a program starts after the first abort end too;
each aborted gen keeps its text so far, with SGLang's ``finish_reason`` ``{"type": "abort"}``. Then
the interrupt is raised as usual. Interrupts anywhere else are left alone.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

ABORT_EVERY_S = 0.05


def in_sglang(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it runs code of the ``sgnb`` or ``sglang`` packages."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).split(".")[0] in ("sgnb", "sglang"):
            return True
        frame = frame.f_back
    return False


class InterruptAborts:
    """IPython ``pre_run_cell`` / ``post_run_cell`` callbacks that install the SIGINT handler for a cell.

    The handler is set on the main thread only (``signal.signal`` refuses others; a subshell's cell
    keeps what it has) and the previous one is put back when the cell ends.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        self._cell_done = threading.Event()
        self._aborter: threading.Thread | None = None

    def pre_run_cell(self, info: Any = None) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._cell_done = threading.Event()
        self._aborter = None
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        self._installed = True

    def post_run_cell(self, result: Any = None) -> None:
        if threading.current_thread() is not threading.main_thread() or not self._installed:
            return
        self._cell_done.set()
        if signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._installed = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if in_sglang(frame) and self._aborter is None:
            # Not here: the main thread may hold a lock the abort needs; a thread of its own runs it.
            self._aborter = threading.Thread(
                target=abort_until, args=(self._cell_done,), name="sgnb-interrupt-abort", daemon=True
            )
            self._aborter.start()
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt


def abort_until(done: threading.Event) -> None:
    """Abort the session runtime's requests now and every :data:`ABORT_EVERY_S` until ``done``."""
    from sgnb.notebook.session import get_session

    while True:
        runtime = get_session().runtime
        if runtime is not None and hasattr(runtime, "abort_all"):
            try:
                runtime.abort_all()
            except Exception:  # a runtime stopped meanwhile: nothing left to abort
                return
        if done.wait(ABORT_EVERY_S):
            return


def settle(tb: TracebackType | None, timeout: float = 30.0) -> None:
    """After an interrupt in SGLang's frontend: abort until the interrupted programs' workers end.

    ``.run()`` leaves its ``StreamExecutor`` thread running when the main thread is interrupted
    (in ``state["x"]`` or ``state.sync()``): a program of two gens would start its second after
    the first was aborted. The executors are found in the interrupted frames (their ``self``);
    requests are aborted until each worker has ended (at most ``timeout`` s), then until none runs.
    """
    from sglang.lang.interpreter import StreamExecutor

    from sgnb.notebook.program import abort_requests
    from sgnb.notebook.session import get_session

    workers = []
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, StreamExecutor) and getattr(owner, "worker", None) is not None:
            workers.append(owner.worker)
        tb = tb.tb_next
    done = threading.Event()
    aborter = threading.Thread(target=abort_until, args=(done,), name="sgnb-settle-abort", daemon=True)
    aborter.start()
    try:
        for worker in workers:
            worker.join(timeout)
    finally:
        done.set()
        aborter.join()
    abort_requests(get_session().runtime)  # wait until no request runs: its KV freed


def install(shell: Any) -> None:
    """Register the callbacks on ``shell`` once (idempotent across ``%load_ext`` / ``%reload_ext``)."""
    # By the class's name: a reloaded module's class is another object.
    registered = shell.events.callbacks["pre_run_cell"]
    if any(type(getattr(cb, "__self__", None)).__name__ == "InterruptAborts" for cb in registered):
        return
    hooks = InterruptAborts()
    shell.events.register("pre_run_cell", hooks.pre_run_cell)
    shell.events.register("post_run_cell", hooks.post_run_cell)


__all__ = ["InterruptAborts", "abort_until", "in_sglang", "install", "settle"]
