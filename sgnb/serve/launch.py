"""SGLang's HTTP API on this machine, as a child process: the server the tutorials start and stop.

``server_command`` is ``python -m sglang.launch_server`` on a GPU (``kind="engine"``) and
``python -m sgnb.cli serve`` (the same HTTP API over sgnb's local runtime) on a CPU; ``start_server``
runs it with its output in a log file and stops it when the interpreter exits, whatever happens.
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sgnb.core.models import resolve_model
from sgnb.runtimes.options import parse_flags, to_flags

HOST = "127.0.0.1"
# triton attention and the pytorch sampler start without a long JIT compile (as sgnb's engine runtime)
ENGINE_DEFAULTS = ("--attention-backend", "triton", "--sampling-backend", "pytorch", "--enable-metrics")


def server_command(
    kind: str, model: str, port: int, flags: str = "", host: str = HOST, log_level: str = "warning"
) -> list[str]:
    """The command line of a server on ``host:port``; ``flags`` are ``%sglang start`` flags.

    ``kind="engine"``: ``sglang.launch_server --model-path <resolved model>`` with ``flags`` as
    SGLang server arguments (``sglang.srt.server_args.ServerArgs.add_cli_args``);
    :func:`sgnb.runtimes.options.parse_flags` checks them for the engine runtime first, so an
    unknown or local-only flag is a ValueError. ``kind="local"``: ``sgnb serve --model <model>``;
    ``flags`` are ignored there (the tutorials pass them for the GPU). ValueError for any other kind.
    """
    if kind == "engine":
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(resolve_model(model))]
        cmd += [*ENGINE_DEFAULTS, *to_flags(parse_flags(flags, kind="engine"))]
    elif kind == "local":
        cmd = [sys.executable, "-m", "sgnb.cli", "serve", "--model", model]
    else:
        raise ValueError(f"kind must be 'local' or 'engine', got {kind!r}")
    return [*cmd, "--host", host, "--port", str(port), "--log-level", log_level]


@dataclass
class ChildServer:
    """A started server: its process, its command line and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    cmd: list[str]
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (``subprocess.Popen.returncode``), else None."""
        return self.proc.returncode

    def poll(self) -> int | None:
        """The exit code, or None while it runs (``subprocess.Popen.poll``)."""
        return self.proc.poll()


def start_server(cmd: list[str]) -> ChildServer:
    """Start ``cmd`` (e.g. :func:`server_command`) with stdout+stderr to a temporary log file.

    It is stopped (:func:`stop_server`) when this interpreter exits; does not wait for /health
    (``sgnb wait-for-server`` or :func:`sgnb.net.wait_for_server` do).
    """
    log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
    with log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = ChildServer(proc, list(cmd), log.name)
    atexit.register(stop_server, server)
    return server


def server_log(server: ChildServer) -> str:
    """Everything the server wrote so far ('' if its log file is gone)."""
    with contextlib.suppress(FileNotFoundError):
        return Path(server.log_path).read_text(errors="replace")
    return ""


def stop_server(server: ChildServer, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for the exit. Safe to call twice."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
