"""sgnb: see SGLang at work in Jupyter.

    %load_ext sgnb
    %sglang start                     # the bundled SmolLM2-135M-Instruct; sglang.Engine on a GPU

or from Python:

    import sgnb
    rt = sgnb.start()                 # model="bundled", runtime="auto", as %sglang start
    rt.generate("What is the capital of France?", max_new_tokens=16, temperature=0)
    state = sgnb.run_program("s += 'Paris is' + sgl.gen('rest', max_tokens=8)", backend=rt.backend)
"""

from __future__ import annotations

import warnings
from typing import Any

from sgnb.core.version_check import SGLANG_PIN, SGNB_VERSION, check_sglang_version

# Importing SGLang's request classes (io_struct, for sgnb serve's checks) loads its quantization layers,
# which warn on any machine without CUDA that AWQ and GGUF need one, with their absolute paths, into the
# notebook's first served request (tutorial 03). sgnb runs neither there; only these two are silenced.
warnings.filterwarnings(
    "ignore", message=r"Only CUDA, .* support (AWQ|GGUF)", category=UserWarning, module=r"sglang\.srt\.layers"
)

__version__ = SGNB_VERSION
__all__ = [
    "SGLANG_PIN",
    "__version__",
    "check_sglang_version",
    "cluster",
    "get_session",
    "load_ipython_extension",
    "run_program",
    "start",
]


def start(model: str = "bundled", runtime: str = "auto", **options: Any) -> Any:
    """Start a runtime and return its handle (yours: start several, stop each).

    ``runtime``: ``"auto"`` (the default, as ``%sglang start``: ``sglang.Engine`` where CUDA is
    present, else local), ``"local"`` (sgnb's own engine, CPU or GPU), ``"engine"``
    (``sglang.Engine`` in-process, needs a CUDA GPU) or a server URL (``"http://127.0.0.1:30000"``).
    ``options``: the start options of :mod:`sgnb.runtimes.options` (``max_total_tokens``, the KV
    budget in tokens; ``page_size``, ``disable_radix_cache``, ``dtype``, ``context_length``,
    ``allow_auto_truncate``; local: ``threads``; engine: ``mem_fraction_static``, ``tp_size`` and
    any ``sglang.Engine`` argument). One the runtime does not take is a one-line ValueError before
    anything loads. ``%sglang start`` is this plus attaching: ``sgnb.get_session().start(...)``.

    The handle has ``generate``, ``score``, ``flush_cache``, ``status``, ``stop``, ``hub`` (events)
    and ``backend`` (an sglang ``BaseBackend``: ``sgl.set_default_backend(rt.backend)``).
    """
    from sgnb.runtimes.factory import start_runtime

    return start_runtime(model, runtime, **options)


def run_program(source: str, **kwargs: Any) -> Any:
    """Run a ``%%sglang`` cell's body as a one-off SGLang program; see :func:`sgnb.notebook.program.run_program`."""
    from sgnb.notebook.program import run_program as run

    return run(source, **kwargs)


def cluster(
    workers: int = 2,
    policy: str = "cache_aware",
    model: str = "bundled",
    runtime: str = "auto",
    **options: Any,
) -> Any:
    """Start ``workers`` SGLang workers behind SGLang's real router (``sglang-router``) on 127.0.0.1.

    Returns a handle with ``.url`` (the router), ``.workers`` (each worker's URL, state and its own
    metrics), ``.runtime`` (a remote runtime through the router), ``.view()`` (a tree per worker)
    and ``.stop()``. See :func:`sgnb.scaleout.cluster` for the options.
    """
    from sgnb.scaleout import cluster as start_cluster

    return start_cluster(workers, policy, model, runtime, **options)


def get_session() -> Any:
    """The kernel's session: the runtime that ``%sglang`` magics use."""
    from sgnb.notebook.session import get_session

    return get_session()


def load_ipython_extension(ipython: Any) -> None:
    from sgnb.notebook.magics import load

    check_sglang_version()
    load(ipython)
