"""Running the app: ``run_server`` for ``sgnb serve``, ``ServerThread`` for notebooks, tests and benchmarks."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import uvicorn

from sgnb.net import free_port, wait_for_server
from sgnb.serve.app import create_app
from sgnb.serve.context import ServeConfig

logger = logging.getLogger("sgnb.serve")


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,  # open streams get 5 s, then shutdown goes on (and aborts them)
        backlog=2048,
        lifespan="on",
    )


def run_server(
    model: str = "bundled",
    *,
    host: str = "127.0.0.1",
    port: int = 30000,
    api_key: str | None = None,
    kv_events_config: str | None = None,
    served_model_name: str | None = None,
    log_level: str = "info",
    runtime_options: dict[str, Any] | None = None,
) -> None:
    """Load ``model`` in the local runtime and serve it until interrupted (what ``sgnb serve`` runs)."""
    from sgnb.runtimes.factory import start_runtime
    from sgnb.serve.kv_events import parse_config

    parse_config(kv_events_config)  # fail on a bad config before the model loads
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach this port can use it", host)
    started = time.perf_counter()
    runtime = start_runtime(model, "local", **(runtime_options or {}))
    config = ServeConfig(
        api_key=api_key,
        kv_events_config=kv_events_config,
        served_model_name=served_model_name,
        host=host,
        port=port,
        owns_runtime=True,
    )
    app = create_app(runtime, config)
    logger.info("model loaded in %.1f s", time.perf_counter() - started)
    print(f"sgnb serve: {config.served_model_name or model} on http://{host}:{port}", flush=True)
    uvicorn.Server(_uvicorn_config(app, host, port, log_level)).run()


class ServerThread:
    """Serve an app with uvicorn on a background thread (127.0.0.1 and a free port by default)."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
    ):
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(_uvicorn_config(app, self.host, self.port, log_level))
        self._thread = threading.Thread(target=self.server.run, name="sgnb-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``sgnb serve`` in a child process (``python -m sgnb.tools.cli serve ...``), for tests and notebooks."""

    def __init__(self, *args: str, port: int | None = None, host: str = "127.0.0.1", log: Any = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.log = log
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        import subprocess
        import sys

        cmd = [
            sys.executable,
            "-m",
            "sgnb.tools.cli",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        out = self.log if self.log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        ready, last = wait_for_server(self.url, timeout, interval=0.25, process=self.proc)
        if ready:
            return self
        self.stop()
        raise RuntimeError(f"`{' '.join(cmd)}` did not become healthy within {timeout:g} s: {last}")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except Exception:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
