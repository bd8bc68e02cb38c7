"""Live notebook widgets for SGLang's cache and decoding (anywidget; no JS build).

    from sgnb.widgets import RadixTreeWidget, CachePanel, ConstrainedView, ProgramView, TokenView

Every widget displays live in JupyterLab / Notebook 7 / VS Code / Colab, and carries a static
``text/html`` snapshot and a short ``text/plain`` summary for exports (see ``_static``).
"""

from typing import Any

from sgnb.widgets._base import sync_all
from sgnb.widgets.cache_panel import CachePanel
from sgnb.widgets.constrained import ConstrainedView
from sgnb.widgets.program import ProgramView
from sgnb.widgets.tokens import TokenView
from sgnb.widgets.tree import RadixTreeWidget

__all__ = [
    "CachePanel",
    "ConstrainedView",
    "ProgramView",
    "RadixTreeWidget",
    "TokenView",
    "static_snapshots",
    "sync_all",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: ``python -m sgnb.widgets._static`` imports
    # the package first, and runpy warns when the module it runs was already imported.
    if name == "static_snapshots":
        from sgnb.widgets._static import static_snapshots

        return static_snapshots
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
