"""The one start path: choose a runtime, check its options against the table, build it.

``sgnb.start()`` returns what :func:`start_runtime` builds (a handle of your own; start as many as
you like), the session's ``start()`` (``%sglang start``) builds it the same way and then attaches
the tree mirror and the default DSL backend, and ``sgnb serve`` and the cluster's workers build
their local runtime here.
Both front ends default to ``runtime="auto"``: ``sglang.Engine`` where a CUDA GPU is present,
sgnb's local engine elsewhere, as ``sglang.launch_server`` needs a GPU and sgnb's engine does not.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from sgnb.runtimes import options as start_options
from sgnb.runtimes.base import Runtime

RUNTIMES = start_options.KINDS


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_runtime(runtime: str | None) -> tuple[str, str]:
    """The runtime kind to start, and the reason in words (``%sglang status`` shows it).

    ``runtime``: ``"local"``, ``"engine"``, ``"auto"`` / None, or a server URL (``"remote"``).
    """
    if runtime and runtime != "auto":
        if runtime.startswith(("http://", "https://")):
            return "remote", f"a server URL was given ({runtime})"
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose local, engine, auto or a server URL")
        return runtime, "asked for explicitly"
    if cuda_available():
        return "engine", "a CUDA GPU is present, so the real sglang.Engine runs in-process"
    return "local", "no CUDA GPU here, so sgnb's local reference engine runs on the CPU"


def import_runtime(kind: str) -> None:
    """Import the ``kind`` runtime's heavy modules (torch, transformers, sglang) now.

    ``%sglang start`` calls it first, to time the imports apart from loading the model.
    """
    if kind == "local":
        import sgnb.runtimes.local
    elif kind == "engine":
        import sgnb.runtimes.engine
    else:
        import sgnb.runtimes.remote  # noqa: F401


def start_runtime(model: str = "bundled", runtime: str | None = "auto", **options: Any) -> Runtime:
    """Start a runtime and return it; ``options`` are checked before anything loads.

    ``runtime``: ``"local"`` (sgnb's engine, CPU or GPU), ``"engine"`` (``sglang.Engine`` in-process,
    needs a CUDA GPU), ``"auto"`` (engine where CUDA is present, else local) or a server URL (then
    ``model`` is not used; ``api_key`` and ``timeout`` reach the server). ``options`` are the start
    options of :mod:`sgnb.runtimes.options` (``max_total_tokens``, ``page_size``, ...); one that the
    chosen runtime does not accept is a one-line ValueError, the same one ``%sglang start`` and
    ``sgnb serve`` show.
    """
    kind, _ = choose_runtime(runtime)
    start_options.check(kind, options)
    if kind == "local":
        from sgnb.runtimes.local import LocalRuntime

        return LocalRuntime(model, **options)
    if kind == "engine":
        from sgnb.runtimes.engine import EngineRuntime

        return EngineRuntime(model, **options)
    from sgnb.runtimes.remote import RemoteRuntime

    assert runtime is not None
    return RemoteRuntime(runtime, **options)
