"""The real ``sglang.Engine`` in-process on a GPU, behind sgnb's runtime API."""

from sgnb.runtimes.engine.runtime import EngineRuntime

__all__ = ["EngineRuntime"]
