"""Coalesce bursts of calls into at most one run per ``interval`` seconds; the last call always lands.

Runtime threads call ``Throttle.__call__`` on every event; the work (snapshot, layout, pushing
trait updates over the comm) runs on a short-lived timer thread, never on the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    def __init__(self, fn: Callable[[], None], interval: float = 0.1) -> None:
        self.fn = fn
        self.interval = interval
        self.runs = 0
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one run at a time
        self._pending = False
        self._timer: threading.Timer | None = None
        self._last = 0.0
        self._cost = 0.0
        self._closed = False

    def __call__(self, delay: float = 0.0) -> None:
        """Ask for a run: now if the last one is ``interval`` old, else when it will be (trailing)."""
        with self._lock:
            if self._closed or self._pending:
                return
            self._pending = True
            # a slow view (a huge tree) backs off: at most about a third of the time goes to it
            wait = max(delay, self._last + max(self.interval, 3 * self._cost) - time.monotonic(), 0.0)
            self._timer = threading.Timer(wait, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._run_lock:
            with self._lock:
                if not self._pending:  # flush() got there first
                    return
                self._pending = False
                self._last = time.monotonic()
            self._call()

    def _call(self) -> None:
        started = time.monotonic()
        try:
            self.fn()
            self.runs += 1
        except Exception:  # a failing view must not take the runtime thread's timer down
            import traceback

            traceback.print_exc()
        self._cost = time.monotonic() - started

    def flush(self) -> None:
        """Run now on this thread if a run is pending (the post-cell hook uses it)."""
        with self._run_lock:
            with self._lock:
                pending = self._pending
                self._pending = False
                if self._timer is not None:
                    self._timer.cancel()
                self._last = time.monotonic()
            if pending:
                self._call()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pending = False
            if self._timer is not None:
                self._timer.cancel()
