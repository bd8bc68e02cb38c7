"""Which runtime to start, and starting it: ``choose_runtime`` (``auto`` picks by CUDA) and
``start_runtime`` (what ``sgnb.start``, the session, ``sgnb serve``, the cluster and the bench call)."""

from __future__ import annotations

import importlib.util
from typing import Any

from sgnb.runtimes.base import Runtime

RUNTIMES = ("local", "engine", "remote")


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_runtime(runtime: str | None) -> tuple[str, str]:
    """The runtime to start, and the reason in words (``%sglang status`` shows it)."""
    if runtime and runtime != "auto":
        if runtime.startswith(("http://", "https://")):
            return "remote", f"a server URL was given ({runtime})"
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose local, engine, auto or a server URL")
        return runtime, "asked for explicitly"
    if cuda_available():
        return "engine", "a CUDA GPU is present, so the real sglang.Engine runs in-process"
    return "local", "no CUDA GPU here, so sgnb's local reference engine runs on the CPU"


def start_runtime(model: str = "bundled", runtime: str | None = "local", **options: Any) -> Runtime:
    kind, _ = choose_runtime(runtime)
    if kind == "local":
        from sgnb.runtimes.local import LocalRuntime  # imported on demand: torch, sglang load slowly

        return LocalRuntime(model, **options)
    if kind == "engine":
        from sgnb.runtimes.engine import EngineRuntime

        return EngineRuntime(model, **options)
    from sgnb.runtimes.remote import RemoteRuntime

    assert runtime is not None
    return RemoteRuntime(runtime, **options)
