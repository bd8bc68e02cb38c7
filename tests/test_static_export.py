"""Executed notebooks keep showing the widgets where no widget frontend runs.

tests/notebooks/widgets_static.ipynb is executed with nbclient (widget state stored, as papermill
does), then converted with ``jupyter nbconvert --to html``. Each sgnb output carries a static
``text/html`` snapshot; the post-cell hook keeps it at the widget's final state.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent / "notebooks" / "widgets_static.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(600)


def kernelspec(tmp: Path) -> Path:
    """The venv's python as kernel ``sgnb-test``, in a private JUPYTER_PATH."""
    path = tmp / "jpath"
    spec = path / "kernels" / "sgnb-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "sgnb", "language": "python"})
    )
    return path


def nbconvert(path: Path, *args: str) -> str:
    out = path.with_name(path.stem + "-" + str(len(args)) + ".html")
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "nbconvert",
        "--to",
        "html",
        *args,
        "--output",
        out.name,
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=path.parent, timeout=180)
    return out.read_text()


def snapshot_of(html: str, kind: str) -> str:
    """The static rendering of one widget kind inside an exported page ("" if absent)."""
    match = re.search(
        rf'<div class="sgnb-{kind}-static" data-sgnb-static="{kind}".*?</div></div>', html, re.S
    )
    return match.group(0) if match else ""


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("static")
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(kernelspec(tmp)))
    mp.setenv("IPYTHONDIR", str(tmp / "ipython"))
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(
            nb,
            timeout=300,
            kernel_name="sgnb-test",
            store_widget_state=True,
            resources={"metadata": {"path": str(tmp)}},
        )
        client.execute()
    finally:
        mp.undo()
    path = tmp / "executed.ipynb"
    nbformat.write(nb, path)
    return path, nb


def test_executed_notebook_holds_final_snapshots(executed: tuple[Path, Any]) -> None:
    path, nb = executed
    size = path.stat().st_size
    print(f"\nexecuted notebook: {size / 1024:.0f} KB")
    assert size < 2_000_000
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(s["model_name"] == "AnyModel" for s in state.values()), "widget state was stored"
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if "data" in o]
    plain = [o.data["text/plain"] for o in outputs]
    # the tree was displayed before any request; the post-cell hook brought its snapshot up to date
    assert re.fullmatch(
        r"RadixTreeWidget: \d+ nodes, \d+ tokens cached, 3 requests \(hit rate \d+%\)", plain[0]
    )
    assert plain[1].startswith("CachePanel: 3 requests, 3/15 prompt tokens cached")
    assert plain[2].startswith("ConstrainedView(regex): 9 tokens, 2 forced")
    assert plain[3] == "ProgramView: 23 chars, roles ['assistant', 'user'], variables answer='Yes'"
    tree_html = outputs[0].data["text/html"]
    assert "France is Paris" in tree_html and "Italy is Rome" in tree_html
    assert all(WIDGET_VIEW in o.data for o in outputs)


def test_nbconvert_html_shows_the_static_tree(executed: tuple[Path, Any]) -> None:
    path, nb = executed
    # With widget state stored, nbconvert picks the widget view; anywidget views cannot be rebuilt
    # in a static page, so sgnb ships a preprocessor that shows its snapshots instead.
    html = nbconvert(path, "--HTMLExporter.preprocessors=['sgnb.widgets.static_snapshots']")
    tree = snapshot_of(html, "tree")
    assert "France is Paris" in tree and "The capital of" in tree, tree[:500]
    for kind in ("cache", "constrained", "program"):
        assert snapshot_of(html, kind), kind
    # Saved without widget state (JupyterLab's default), plain nbconvert shows the snapshots
    # (in-process here: the same exporter as the command, without its start-up cost).
    from nbconvert import HTMLExporter

    stateless = nbformat.from_dict(json.loads(json.dumps(nb)))
    del stateless.metadata["widgets"]
    assert "France is Paris" in snapshot_of(HTMLExporter().from_notebook_node(stateless)[0], "tree")
    # Plain nbconvert with stored state picks the widget view (nbconvert's WidgetsDataTypeFilter).
    default = HTMLExporter().from_notebook_node(nb)[0]
    print("plain nbconvert, widget state stored: static tree shown:", bool(snapshot_of(default, "tree")))
