"""sgnb: see SGLang at work in Jupyter.

    import sgnb
    rt = sgnb.start()                      # the bundled SmolLM2-135M-Instruct, local runtime
    rt.generate("What is the capital of France?", max_new_tokens=16, temperature=0)
"""

from __future__ import annotations

from typing import Any

from sgnb.version_check import SGLANG_PIN, check_sglang_version

__version__ = "0.1.0"
__all__ = ["SGLANG_PIN", "__version__", "check_sglang_version", "start"]

RUNTIMES = ("local",)


def start(model: str = "bundled", runtime: str = "local", **options: Any) -> Any:
    """Start a runtime and return its handle: ``generate``, ``score``, ``flush_cache``, ``stop``.

    ``runtime="local"`` is sgnb's own engine (CPU or GPU, PyTorch). Options: ``max_total_tokens``
    (the KV budget in tokens), ``page_size``, ``disable_radix_cache``, ``dtype``, ``threads``,
    ``context_length``.
    """
    if runtime == "local":
        from sgnb.runtimes.local import LocalRuntime

        return LocalRuntime(model, **options)
    raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
