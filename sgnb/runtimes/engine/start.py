"""Starting ``sglang.Engine`` off the main thread so that a failed start is an error, not a dead kernel.

SGLang's scheduler and detokenizer send SIGQUIT to their parent on an exception (``run_scheduler_process``
in ``sglang/srt/managers/scheduler.py``, ``detokenizer_manager.py``; the same in 0.5.17 and 0.5.23), and its
watchdog does when a child dies. SGLang installs a handler for it (one that kills the whole process tree,
itself included) only when the Engine is built on the main thread (``engine.py`` ``_set_envs_and_config``).
sgnb builds the Engine on a loop thread, so the default action of SIGQUIT ended the Jupyter kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# After a child's SIGQUIT, how long the Engine's own start-up error may take to arrive: SGLang's
# _wait_for_scheduler_ready notices a dead scheduler within its 5 s poll.
SIGQUIT_GRACE_S = 30.0


class EngineStartError(RuntimeError, ValueError):
    """``sglang.Engine`` did not start. One line; its processes are gone and a new start can follow.

    Also a ValueError, as sgnb's other start errors, so ``%sglang start`` shows it as one line.
    """


_sigquits: list[float] = []  # when SIGQUITs arrived (monotonic s); the handler only records


def _record_sigquit(signum: int, frame: Any) -> None:
    # Runs on the main thread between bytecodes: only record; the start path turns it into an error.
    _sigquits.append(time.monotonic())


def install_sigquit_handler() -> bool:
    """Record SIGQUIT instead of dying of it; True once installed (signals: main thread only).

    It stays installed: a late SIGQUIT from a failed start's leftovers must not end the kernel.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGQUIT) is not _record_sigquit:
        signal.signal(signal.SIGQUIT, _record_sigquit)
    return True


def _child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def kill_new_children(before: set[int], timeout: float = 10.0) -> list[int]:
    """Stop this process's descendants not in ``before`` (SIGTERM, then SIGKILL): their pids.

    multiprocessing's resource tracker is left alone: it is shared and relaunching it warns.
    """
    import psutil

    procs = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.pid not in before and "resource_tracker" not in " ".join(proc.cmdline()):
                procs.append(proc)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()  # SGLang's children free their shared memory on SIGTERM
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return [p.pid for p in procs]


class StderrTail:
    """Tee this process's fd 2 through a pipe while SGLang's children are spawned; keep the last lines.

    The children inherit the pipe as their stderr for their whole life, so a thread keeps forwarding it
    to the original stderr (the terminal or the kernel's own) until they have all exited. The scheduler's
    start-up error is logged there, not in the exception the parent sees, so ``reason()`` finds it.
    """

    def __init__(self, keep: int = 400) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        threading.Thread(target=self._pump, args=(read,), name="sgnb-engine-stderr", daemon=True).start()

    def _pump(self, read: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read, 65536):
                with contextlib.suppress(OSError):
                    os.write(self._saved, chunk)
                *done, pending = (pending + chunk).split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in done)
        finally:
            os.close(read)
            os.close(self._saved)

    def detach(self) -> None:
        """This process's fd 2 back to where it was; the children keep the pipe."""
        os.dup2(self._saved, 2)

    def reason(self) -> str | None:
        """The last ``SomeError: message`` line logged (a traceback's last line), or None."""
        for line in reversed(self.lines):
            if match := _ERROR_LINE.search(line):
                return match.group(0)[:400]
        return None


_ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception): .+")


def start_on_loop(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], T], what: str = "sglang.Engine"
) -> T:
    """Call ``factory`` (which spawns SGLang's processes) on ``loop``'s thread; wait here.

    On any failure, the processes it spawned are stopped and EngineStartError is raised: one line,
    with the error SGLang's scheduler logged when there is one (else the Engine's own). KeyboardInterrupt
    stays itself. Call it on the main thread, where the SIGQUIT handler can be installed. If a child
    signalled a failure and ``factory`` neither returns nor raises within ``SIGQUIT_GRACE_S``, the start
    is given up.
    """
    install_sigquit_handler()
    before, quits = _child_pids(), len(_sigquits)
    try:
        tail: StderrTail | None = StderrTail()
    except OSError:  # no fd 2 to tee
        tail = None

    async def create() -> T:
        return factory()

    future = asyncio.run_coroutine_threadsafe(create(), loop)
    failed_at: float | None = None
    try:
        while True:
            try:
                return future.result(timeout=0.1)  # short waits: Ctrl-C and SIGQUIT stay noticed
            except concurrent.futures.TimeoutError:
                if future.done():  # the factory itself raised a TimeoutError
                    raise
                if len(_sigquits) > quits:
                    failed_at = failed_at or time.monotonic()
                    if time.monotonic() - failed_at > SIGQUIT_GRACE_S:
                        raise TimeoutError(f"a child process failed and {what} did not return") from None
    except KeyboardInterrupt:
        future.cancel()
        kill_new_children(before)
        raise
    except Exception as exc:
        kill_new_children(before)
        time.sleep(0.2)  # the tee thread's last lines
        # A child that failed (it sent SIGQUIT) logged why; the parent's exception only says it died.
        logged = tail.reason() if tail and len(_sigquits) > quits else None
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EngineStartError(f"{what} failed to start: {logged or first}") from None
    finally:
        if tail:
            tail.detach()


def engine_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for the Engine's thread: uvloop's, as SGLang's own Engine and server run on.

    ``sglang/srt/entrypoints/engine.py`` sets uvloop's policy when it is imported, but ``sglang.Engine``
    is imported lazily, after sgnb has made the loop; a plain asyncio loop then ran SGLang's tokenizer
    manager (issue 13: the in-process Engine was slower than the same SGLang behind HTTP). Falls back to
    asyncio's loop where uvloop is missing.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
