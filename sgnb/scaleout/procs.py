"""The processes of a cluster: N SGLang workers and SGLang's own router in front of them.

Workers are ``sgnb serve`` (SGLang's HTTP API over sgnb's local runtime) on a CPU, and
``python -m sglang.launch_server`` on GPUs, one per GPU. The router is the real one,
``python -m sglang_router.launch_router`` (PyPI ``sglang-router``, a Rust binary): sgnb never grows
its own. Every process is started in its own session (process group) so that ``stop`` can end it
and whatever it spawned, and check by PID that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgnb.net import free_port, wait_for_server

HOST = "127.0.0.1"
POLICIES = ("cache_aware", "round_robin", "power_of_two", "random", "manual")
# The router checks each worker's /health every HEALTH_INTERVAL_S and drops it after
# HEALTH_FAILURES misses. SGLang-router's defaults (60 s, 3) suit a datacenter; a notebook wants to
# see a killed worker dropped within seconds. ``router_args`` override both.
HEALTH_INTERVAL_S = 1
HEALTH_FAILURES = 2
# A request whose worker died is retried; cache_aware keeps choosing the dead worker (its prefix is
# there) until the health check or the circuit breaker takes it out. The router's default retry
# window (5 retries from 50 ms, x1.5: about 0.7 s) can end before that and answer 500; these give
# 6 retries from 100 ms, x2 (about 6 s) and open a worker's circuit after 3 failures.
RETRY_ARGS = (
    "--retry-max-retries", "6", "--retry-initial-backoff-ms", "100", "--retry-backoff-multiplier", "2",
    "--cb-failure-threshold", "3",
)  # fmt: skip


def kv_events_config(port: int) -> str:
    """SGLang's ``--kv-events-config`` publishing on loopback (``bind``: the worker binds, we connect)."""
    return json.dumps(
        {"publisher": "zmq", "endpoint": f"tcp://{HOST}:{port}", "topic": "kv-events", "bind": True}
    )


def worker_command(
    kind: str, model: str, port: int, events_port: int, index: int, args: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The command line and extra environment of worker ``index``.

    ``kind`` is ``"local"`` (``sgnb serve``, CPU) or ``"engine"`` (``sglang.launch_server`` on GPU
    ``index``; its metrics are on, as the views read ``/metrics``). The GPU path is written to the
    documented flags of sglang 0.5.23 and is untested here (this machine has no GPU).
    """
    events = kv_events_config(events_port)
    if kind == "engine":
        # sglang 0.5.17 (the GPU bundle) has no "bind" field and ignores it: it connects to a concrete
        # host. A wildcard endpoint binds in every release (the publisher's heuristic); we connect.
        events = json.dumps({"publisher": "zmq", "endpoint": f"tcp://*:{events_port}", "topic": "kv-events"})
        from sgnb.core.models import BUNDLED, bundled_model_dir

        path = str(bundled_model_dir()) if model == BUNDLED else model  # SGLang knows no "bundled"
        from sgnb.serve.launch import ENGINE_DEFAULTS

        # triton attention and the pytorch sampler, as every sgnb Engine: SGLang's default on Hopper is FA3,
        # whose kernels the GPU bundle leaves out (measured: "Can not import FA3 in sgl_kernel").
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", path, *ENGINE_DEFAULTS]
        cmd += ["--host", HOST, "--port", str(port), "--base-gpu-id", str(index)]
        cmd += ["--kv-events-config", events, *args]
        return cmd, {}
    cmd = [
        sys.executable,
        "-m",
        "sgnb.tools.cli",
        "serve",
        "--model",
        model,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    cmd += ["--kv-events-config", events, "--log-level", "warning", *args]
    return cmd, {}


def router_command(port: int, worker_urls: list[str], policy: str, args: list[str]) -> list[str]:
    """``python -m sglang_router.launch_router`` on loopback; ``args`` come last, so they win."""
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", HOST, "--port", str(port)]
    cmd += ["--worker-urls", *worker_urls, "--policy", policy]
    cmd += ["--prometheus-host", HOST, "--prometheus-port", str(free_port())]
    cmd += ["--health-check-interval-secs", str(HEALTH_INTERVAL_S)]
    cmd += ["--health-failure-threshold", str(HEALTH_FAILURES), *RETRY_ARGS, "--log-level", "warn"]
    return [*cmd, *args]


@dataclass
class Proc:
    """One child process, its log file and its URL."""

    name: str
    cmd: list[str]
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: Any = None

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else int(self.popen.pid)

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group: stop() ends what it spawns too
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/health`` until 200 (:func:`sgnb.net.wait_for_server`); RuntimeError with the log's
        tail if the process exits or the time runs out."""
        ready, _ = wait_for_server(self.url, timeout, interval=0.25, process=self.popen)
        if ready:
            return
        if not self.alive():
            code = None if self.popen is None else self.popen.returncode
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
        raise RuntimeError(
            f"{self.name} ({self.url}) was not healthy after {timeout:g} s:\n{self.log_tail()}"
        )

    def terminate(self) -> None:
        """SIGTERM the process group and return at once (``stop`` waits)."""
        if self.alive():
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker dies as a crashed machine would."""
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``; returns once the process is reaped."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal(signal.SIGKILL)  # anything the leader left behind in its group

    def _signal(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies (Linux).

    A kernel killed before its ``atexit`` hooks run (a restart that times out) must not leave
    workers behind. Linux sends the signal when the *thread* that forked exits, so start clusters
    from a thread that lives as long as they should (the kernel's main thread does).
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: atexit and stop() remain
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pids_alive(pids: list[int]) -> list[int]:
    """The PIDs of ``pids`` that still exist and are not zombies."""
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def group_pids(proc: Proc) -> list[int]:
    """The PID of ``proc`` and of every descendant it has now."""
    import psutil

    if proc.pid is None:
        return []
    try:
        parent = psutil.Process(proc.pid)
        return [proc.pid, *(c.pid for c in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return [proc.pid]
