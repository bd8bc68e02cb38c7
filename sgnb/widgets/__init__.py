"""Live notebook widgets for SGLang's cache and decoding (anywidget; no JS build).

    from sgnb.widgets import RadixTreeWidget, CachePanel, ConstrainedView, ProgramView, TokenView

Every widget displays live in JupyterLab / Notebook 7 / VS Code / Colab, and carries a static
``text/html`` snapshot and a short ``text/plain`` summary for exports (see ``_static``).
"""

from sgnb.widgets._base import sync_all
from sgnb.widgets._static import static_snapshots
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
