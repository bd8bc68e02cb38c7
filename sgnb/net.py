"""Ports and readiness, one copy for every room: ``free_port`` and ``wait_for_server`` (``/health``).

``sgnb wait-for-server``, ``ServerProcess``, the remote runtime, the cluster's workers and router and
the tests all wait the same way: poll ``GET url/health`` (SGLang's ``http_server.health_generate``
route) until it answers 200, and stop at once when the caller's server process has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it; another process may take it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_server(
    url: str,
    timeout: float,
    api_key: str | None = None,
    interval: float = 0.5,
    process: subprocess.Popen[Any] | int | None = None,
    log: str | Path | None = None,
) -> tuple[bool, str]:
    """Poll ``url/health`` until it answers 200: ``(ready, what happened last)``.

    ``process`` (a Popen or a pid) is the server's process, when the caller started it: once it has
    exited, the wait stops at once and says so, with its exit code and the last lines of ``log``
    (SGLang's ``launch_server`` exits when it cannot load its model; nothing will answer after that).
    """
    health = url.rstrip("/") + "/health"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(health, headers=headers), timeout=5) as res:
                if res.status == 200:
                    return True, "HTTP 200"
                last = f"HTTP {res.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if process is not None and (ended := process_exit(process)) is not None:
            pid = process if isinstance(process, int) else process.pid
            return False, f"the server process {pid} {ended}" + log_tail(log)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, last
        time.sleep(min(interval, remaining))


def process_exit(process: subprocess.Popen[Any] | int) -> str | None:
    """None while ``process`` runs; else how it ended ("exited with code 1", "was killed by SIGKILL").

    For a pid that is not our child the exit status is read from ``/proc/PID/stat`` (field 52,
    exit_code) while the process is a zombie; once its parent has reaped it, it is unknown.
    """
    if not isinstance(process, int):
        code = process.poll()
        return None if code is None else _describe(code)
    import psutil

    try:
        proc = psutil.Process(process)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return "exited (exit code unknown: its parent has already collected it)"
    try:
        with open(f"/proc/{process}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        status = int(fields[49])  # field 52; fields[0] is field 3 (state)
    except (OSError, IndexError, ValueError):
        return "exited (exit code unknown)"
    return _describe(os.waitstatus_to_exitcode(status))


def _describe(code: int) -> str:
    if code < 0:
        with_name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"was killed by {with_name} (exit code {code})"
    return f"exited with code {code}"


def log_tail(log: str | Path | None, lines: int = 15) -> str:
    """The last ``lines`` lines of the server's log, as a block to append to a message ("" if none)."""
    if log is None:
        return ""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError as exc:
        return f"; its log {log} cannot be read ({exc.strerror})"
    tail = text.rstrip().splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail) if tail else f"; its log {log} is empty"
