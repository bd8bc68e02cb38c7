"""One ``Session`` per kernel: the runtime in use, why it was chosen, and what it has served."""

from __future__ import annotations

import atexit
import collections
from typing import Any

from sgnb.core.events import Event, RequestFinished
from sgnb.runtimes.base import Runtime
from sgnb.runtimes.factory import choose_runtime, start_runtime


class SessionError(RuntimeError):
    """The session is not in the state a command needs."""


class NoRuntimeError(SessionError):
    """No runtime is running in this session."""


class AlreadyRunningError(SessionError):
    """A runtime is already running in this session."""


class Session:
    def __init__(self, history: int = 1000) -> None:
        self.runtime: Runtime | None = None
        self.reason = ""
        self.finished: collections.deque[RequestFinished] = collections.deque(maxlen=history)
        self._unsubscribe: Any = None
        self.servers: list[Any] = []
        self.mirror: Any = None

    def start(self, model: str = "bundled", runtime: str | None = "auto", **options: Any) -> Runtime:
        """``sgnb.start(model, runtime, **options)``, then attach it: the session's runtime.

        Attaching subscribes the session's request history, a tree mirror (so a tree opened later
        shows everything from the first request on) and makes it sglang's default backend (plain
        ``@sgl.function`` code runs on it). ``AlreadyRunningError`` while one runs; option errors
        are :func:`sgnb.runtimes.factory.start_runtime`'s, raised before anything loads.
        """
        self.require_stopped()
        kind, reason = choose_runtime(runtime)
        rt = start_runtime(model, runtime if kind == "remote" else kind, **options)
        self._attach(rt, reason)
        return rt

    def connect(self, url: str, **options: Any) -> Runtime:
        return self.start(runtime=url, **options)

    def _attach(self, rt: Runtime, reason: str) -> None:
        import sglang as sgl

        from sgnb.tree.mirror import TreeMirror

        self.runtime, self.reason = rt, reason
        self.finished.clear()
        self._unsubscribe = rt.hub.subscribe(self._observe)
        # Attached before the first request, so a tree opened later still shows everything.
        self.mirror = TreeMirror(rt, decode=rt.tokenizer)
        sgl.set_default_backend(rt.backend)  # plain @sgl.function code runs here too

    def _observe(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self.finished.append(event)

    def require_stopped(self) -> None:
        """Raise ``AlreadyRunningError`` while a runtime runs (checked before a slow start begins)."""
        if self.runtime is not None:
            raise AlreadyRunningError(
                f"a {self.runtime.kind} runtime is already running ({self.runtime.model_name}); stop it first"
            )

    def require(self) -> Runtime:
        if self.runtime is None:
            raise NoRuntimeError(
                "no SGLang runtime is running: %sglang start (or sgnb.get_session().start())"
            )
        return self.runtime

    def stop(self) -> None:
        rt = self.require()
        try:
            rt.stop()
        finally:
            if self._unsubscribe:
                self._unsubscribe()
            if self.mirror is not None:
                self.mirror.detach()
                self.mirror = None
            _clear_default_backend(getattr(rt, "_backend", None))
            self.runtime = None

    def serve(self, flags: list[str], port: int | None = None) -> str:
        """Start ``sgnb serve`` in a child process (its own model copy); return its URL."""
        from sgnb.serve.server import ServerProcess

        server = ServerProcess(*flags, port=port).start()
        self.servers.append(server)
        if len(self.servers) == 1:
            atexit.register(self.stop_servers)  # a kernel restart must not leave servers behind
        return str(server.url)

    def stop_servers(self) -> int:
        stopped = 0
        while self.servers:
            self.servers.pop().stop()
            stopped += 1
        return stopped

    def status(self) -> dict[str, Any]:
        rt = self.require()
        return {**rt.status(), "why": self.reason}


def _clear_default_backend(backend: Any) -> None:
    """Unset sglang's default backend if it is still ours (its home moved between releases)."""
    from sgnb.core.version_check import sglang_global_config

    global_config = sglang_global_config()
    if backend is not None and global_config.default_backend is backend:
        global_config.default_backend = None


_session: Session | None = None


def get_session() -> Session:
    global _session
    if _session is None:
        _session = Session()
    return _session
