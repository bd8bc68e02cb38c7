"""``pytest -m gpu`` collects on the GPU image, which lacks the CPU-only test dependencies.

On the GPU machine (see docs/gpu-verification.md) pytest collects every test module before ``-m gpu``
deselects; one module-level import of a package the image does not have stops the whole run (issue 13:
``tests/test_deploy.py`` and ``dockerfile_parse``). Here those packages are made unimportable and the
collection must still succeed. The list is what this project's test extras and tools bring that the GPU
image and its bundle (``../shared/gpu/build_bundle.sh``) do not.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

NOT_ON_THE_GPU_IMAGE = ["dockerfile_parse", "playwright", "sglang_router", "jupytext", "vllm", "nbval"]

COLLECT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    import pytest

    BLOCKED = set(sys.argv[1].split(","))


    class NotOnTheGpuImage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image)")
            return None


    sys.meta_path.insert(0, NotOnTheGpuImage())
    sys.exit(pytest.main(["--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-p", "no:nbval",
                          "-o", "addopts=", sys.argv[2]]))
    """
)


def test_gpu_tests_collect_without_the_cpu_only_test_dependencies() -> None:
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", COLLECT, ",".join(NOT_ON_THE_GPU_IMAGE), str(tests)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tests.parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "test_gpu_engine.py" in done.stdout  # the GPU tests themselves were collected


def test_sglang_global_config_only_through_version_check() -> None:
    """sglang 0.5.17 (the GPU bundle) keeps ``global_config`` in ``sglang.global_config``; a direct
    ``from sglang.lang.global_config import`` broke every engine path there (measured 2026-11-30)."""
    import pathlib

    root = pathlib.Path(__file__).parent.parent / "sgnb"
    direct = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "version_check.py" and "sglang.lang.global_config import" in path.read_text()
    ]
    assert not direct, f"use sgnb.core.version_check.sglang_global_config() in {direct}"
