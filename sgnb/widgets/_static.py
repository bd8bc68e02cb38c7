"""Static exports of notebooks that hold sgnb widgets.

Every sgnb widget output carries three representations: the live widget view, a static
``text/html`` snapshot (kept current by the post-cell hook) and a ``text/plain`` summary.
Frontends without a widget manager (GitHub, a notebook saved without widget state, which is
JupyterLab's default) show the snapshot.

One case needs help: ``nbconvert --to html`` of a notebook that *stores widget state* (nbclient
and papermill store it by default) picks the widget view over ``text/html`` (nbconvert's
``WidgetsDataTypeFilter``), and anywidget views cannot be rebuilt from saved state in a static
page, so the export shows an empty box. ``static_snapshots`` is an nbconvert preprocessor that
drops the widget view from outputs that carry an sgnb snapshot::

    jupyter nbconvert --to html \\
        --HTMLExporter.preprocessors="['sgnb.widgets.static_snapshots']" executed.ipynb

A notebook meant to be read (the committed tutorials) gets that once, when it is saved:
``prefer_snapshots`` drops the widget views of sgnb outputs and the saved state of the models
no output shows any more, so plain ``nbconvert``, GitHub and any renderer show the snapshots with
no flag (``python -m sgnb.widgets._static NOTEBOOK.ipynb ...`` rewrites notebooks in place).
"""

from __future__ import annotations

import argparse
from typing import Any

from sgnb.widgets._mime import MARK, WIDGET_STATE, WIDGET_VIEW

__all__ = ["MARK", "WIDGET_STATE", "WIDGET_VIEW", "has_snapshot", "prefer_snapshots", "static_snapshots"]


def has_snapshot(output: Any) -> bool:
    html = output.get("data", {}).get("text/html", "")
    return MARK in ("".join(html) if isinstance(html, list) else str(html))


def static_snapshots(nb: Any, resources: Any) -> tuple[Any, Any]:
    """nbconvert preprocessor (a plain callable): sgnb outputs render as their static snapshot."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}) and has_snapshot(output):
                del output["data"][WIDGET_VIEW]
    return nb, resources


def prefer_snapshots(nb: Any) -> Any:
    """Drop sgnb outputs' widget views and the saved state no output refers to any more.

    Other widgets (ipywidgets, tqdm) keep their views and state: only models whose views are
    gone, and the models only those reference (an anywidget's layout), lose their state.
    """
    static_snapshots(nb, {})
    widgets = nb.get("metadata", {}).get("widgets", {})
    state = widgets.get(WIDGET_STATE, {}).get("state")
    if not state:
        return nb
    shown = {
        output["data"][WIDGET_VIEW]["model_id"]
        for cell in nb.get("cells", [])
        for output in cell.get("outputs", [])
        if WIDGET_VIEW in output.get("data", {})
    }
    keep: set[str] = set()
    todo = [m for m in shown if m in state]
    while todo:  # a shown model keeps every model its state refers to ("IPY_MODEL_<id>")
        model = todo.pop()
        if model in keep:
            continue
        keep.add(model)
        text = str(state[model].get("state", {}))
        todo += [m for m in state if f"IPY_MODEL_{m}" in text and m not in keep]
    for model in list(state):
        if model not in keep:
            del state[model]
    if not state:
        del nb["metadata"]["widgets"]
    return nb


def main(argv: list[str] | None = None) -> int:
    """``python -m sgnb.widgets._static NOTEBOOK.ipynb ...``: rewrite notebooks in place."""
    parser = argparse.ArgumentParser(
        prog="python -m sgnb.widgets._static",
        description="Save the sgnb widget outputs of notebooks as their static snapshots, in place "
        "(so GitHub, nbconvert and any renderer show them without widget state).",
        allow_abbrev=False,
    )
    parser.add_argument("paths", nargs="+", metavar="NOTEBOOK.ipynb", help="notebooks to rewrite")
    paths = parser.parse_args(argv).paths
    import nbformat

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(prefer_snapshots(nb), path)
        print(f"{path}: sgnb views saved as their static snapshots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
