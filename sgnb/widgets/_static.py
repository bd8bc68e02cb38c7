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
"""

from __future__ import annotations

from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MARK = "data-sgnb-static"


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
