"""The tutorial notebooks as tests.

Each tutorial is a jupytext percent source ``notebooks/NN-name.py`` paired with the executed
``NN-name.ipynb`` (``make tutorials`` syncs and executes them); the two must agree cell for cell.
For each of ``notebooks/NN-*.ipynb``:

1. papermill executes it into a temporary folder, in a kernel that runs this interpreter (a
   kernelspec in a temporary ``JUPYTER_PATH``; nothing is installed into global Jupyter folders).
   Every ``assert`` in a notebook is a check, so the run itself is the test. Its time is recorded
   and the executed notebook, widget state included, must stay under 2 MB.
2. nbval (``--nbval-lax``) re-executes the *committed* notebook and compares the outputs of the
   cells marked ``# NBVAL_CHECK_OUTPUT`` (greedy, deterministic ones) with the committed outputs.
   docs/tutorials.md says why lax mode.

``SGNB_TUTORIAL_PARAMETERS='{"RUNTIME": "engine", ...}'`` passes papermill parameters (on a GPU
machine); the committed outputs are from the CPU defaults, so nbval is skipped then.
Per-notebook times go to ``test-artifacts/tutorial-times.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.ipynb"))
SANITIZE = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
TIMES = ROOT / "test-artifacts" / "tutorial-times.json"
KERNEL = "sgnb-venv"
MAX_BYTES = 2 * 2**20
# Seconds per notebook and per step (papermill, then nbval), generous for a shared 2-core machine.
TIMEOUTS = {"00": 240, "05": 120, "08": 720}  # 08 starts two workers and the router
DEFAULT_TIMEOUT = 480
PARAMETERS: dict[str, Any] = json.loads(os.environ.get("SGNB_TUTORIAL_PARAMETERS") or "{}")
REQUIRED_PARAMETERS = ("RUNTIME", "MODEL", "ENGINE_ARGS", "QUALITY_CHECKS")


def timeout_of(notebook: Path) -> int:
    return TIMEOUTS.get(notebook.name[:2], DEFAULT_TIMEOUT)


def cases() -> list[Any]:
    return [
        pytest.param(nb, id=nb.stem, marks=pytest.mark.timeout(2 * timeout_of(nb) + 60)) for nb in NOTEBOOKS
    ]


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JUPYTER_PATH holding one kernelspec, ``sgnb-venv``, that runs this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "sgnb (this venv)",
                "language": "python",
                "metadata": {"debugger": False},
            }
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield str(root)


def record_time(name: str, step: str, seconds: float) -> None:
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    data.setdefault(name, {})[step] = round(seconds, 1)
    TIMES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_there_are_nine_tutorials() -> None:
    assert [nb.name[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(9)]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_shape(notebook: Path) -> None:
    """First code cell tagged ``parameters`` with the common parameters; some outputs are checked."""
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in REQUIRED_PARAMETERS:
        assert re.search(rf"^{name}\b(: *\w+)? *=", code[0].source, re.M), name
    assert all(c.execution_count for c in code), (
        f"{notebook.name} is not executed: make tutorials NB={notebook.name[:2]}"
    )
    assert any(c.source.startswith("# NBVAL_CHECK_OUTPUT") for c in code)
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)
    assert notebook.stat().st_size < MAX_BYTES


def test_every_tutorial_has_its_source() -> None:
    """Each ``NN-name.ipynb`` has its readable source ``NN-name.py`` and no source lacks its notebook."""
    sources = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]-*.py"))
    assert [nb.with_suffix(".py") for nb in NOTEBOOKS] == sources


def cells_of(notebook: Any) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source(notebook: Path) -> None:
    """The committed notebook is its jupytext source (``jupytext --to ipynb NN-name.py``): the same cells,
    sources, tags (``parameters``) and kernelspec; its cells carry no metadata beyond tags, which the
    source (``cell_metadata_filter = "tags,-all"`` in notebooks/jupytext.toml) would lose."""
    import jupytext

    source = jupytext.read(notebook.with_suffix(".py"))
    committed = nbformat.read(notebook, as_version=4)
    fix = f"{notebook.name} is out of date: make tutorials NB={notebook.name[:2]}"
    assert cells_of(committed) == cells_of(source), fix
    assert committed.metadata["kernelspec"] == source.metadata["kernelspec"], fix
    assert all(set(c.metadata) <= {"tags"} for c in committed.cells)


@pytest.mark.parametrize("notebook", cases())
def test_tutorial(notebook: Path, jupyter_path: str, tmp_path: Path) -> None:
    import papermill

    timeout = timeout_of(notebook)
    out = tmp_path / notebook.name
    started = time.perf_counter()
    papermill.execute_notebook(
        str(notebook),
        str(out),
        parameters=PARAMETERS,
        kernel_name=KERNEL,
        cwd=str(NOTEBOOKS_DIR),
        execution_timeout=timeout,
        progress_bar=False,
    )
    record_time(notebook.stem, "papermill_s", time.perf_counter() - started)
    size = out.stat().st_size
    assert size < MAX_BYTES, f"{notebook.name} executed is {size / 2**20:.1f} MB"

    if PARAMETERS:
        pytest.skip("nbval compares with the committed CPU outputs; skipped with non-default parameters")
    started = time.perf_counter()
    nbval = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-kernel-name",
            KERNEL,
            "--nbval-sanitize-with",
            str(SANITIZE),
            "--nbval-cell-timeout",
            str(timeout),
            "-p",
            "no:cacheprovider",
            "-q",
            str(notebook),
        ],
        cwd=ROOT,
        env={**os.environ, "JUPYTER_PATH": jupyter_path},
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    record_time(notebook.stem, "nbval_s", time.perf_counter() - started)
    assert nbval.returncode == 0, nbval.stdout[-6000:] + nbval.stderr[-2000:]
