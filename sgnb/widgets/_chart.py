"""Charts that show as images anywhere: a fresh notebook, nbconvert HTML, papermill, GitHub.

A plain ``matplotlib.figure.Figure`` displays as ``<Figure size 400x320 with 2 Axes>`` until
``%matplotlib inline`` (or ``import matplotlib.pyplot``) registers IPython's figure formatters.
``ChartFigure`` carries its own ``_repr_png_``, so it needs neither; where the formatters are
registered they take precedence (IPython looks a type's printer up first), and it still shows
once. It is built without pyplot, so nothing stays open in pyplot's figure manager.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


class ChartFigure(Figure):
    """A matplotlib ``Figure`` that renders as PNG in any IPython frontend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()
