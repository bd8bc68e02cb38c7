"""What every sgnb widget shares: a throttled refresh, and a mimebundle that degrades well.

``_repr_mimebundle_`` returns the live widget view, a static ``text/html`` snapshot (for
nbconvert, GitHub and any frontend without a widget manager) and a short ``text/plain``
summary with no object address (nbval compares it).

Live updates come from the runtime's thread through a ``Throttle``. After each cell a
``post_run_cell`` hook flushes pending updates on the kernel's main thread, so the widget state
nbclient stores is the final one, and refreshes the static snapshot of every displayed widget
(``update_display`` on the display id it was shown with) when it changed.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, ClassVar

import anywidget

from sgnb.widgets._mime import WIDGET_VIEW
from sgnb.widgets._throttle import Throttle


class SgnbWidget(anywidget.AnyWidget):
    _live: ClassVar[weakref.WeakSet[SgnbWidget]] = weakref.WeakSet()
    _hooked: ClassVar[bool] = False

    def __init__(self, *, interval: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._throttle = Throttle(self._refresh, interval)
        self._displayed = False
        self._static_shown: str | None = None
        SgnbWidget._live.add(self)

    # ---- what subclasses provide ----------------------------------------------------------

    def _refresh(self) -> None:
        """Recompute the synced traits from the source (runs on the throttle's thread)."""

    def _static_html(self) -> str:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    # ---- updates ------------------------------------------------------------------------

    def request_update(self, delay: float = 0.0) -> None:
        self._throttle(delay)

    def sync(self) -> None:
        """Push pending updates now, and refresh the static snapshot of displayed copies."""
        self._throttle.flush()
        if not self._displayed or self.comm is None:
            return
        html = self._static_html()
        if html != self._static_shown:
            from IPython.display import update_display

            self._static_shown = html
            update_display(self._bundle(html), raw=True, display_id=self._display_id)

    def close(self) -> None:
        if hasattr(self, "_throttle"):  # close() also runs from __del__ of a half-built widget
            self._throttle.close()
        SgnbWidget._live.discard(self)
        super().close()

    # ---- display ------------------------------------------------------------------------

    @property
    def _display_id(self) -> str:
        return f"sgnb-{self.model_id}"

    def _bundle(self, html: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": self._summary()}
        data["text/html"] = self._static_html() if html is None else html
        if self.comm is not None:
            data[WIDGET_VIEW] = {"version_major": 2, "version_minor": 0, "model_id": self.model_id}
        return data

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        self._throttle.flush()
        return self._bundle(), {}

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._throttle.flush()
        html = self._static_html()
        self._static_shown = html
        self._displayed = True
        _install_hook()
        display(self._bundle(html), raw=True, display_id=self._display_id)

    def __repr__(self) -> str:
        return self._summary()


def sync_all() -> None:
    """Flush every live sgnb widget (the post-cell hook; call it yourself outside IPython)."""
    for widget in list(SgnbWidget._live):
        with contextlib.suppress(Exception):  # a closed comm or a failing source must not break the cell
            widget.sync()


def _install_hook() -> None:
    if SgnbWidget._hooked:
        return
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    ip = get_ipython()
    if ip is None:
        return
    ip.events.register("post_run_cell", lambda *_: sync_all())
    SgnbWidget._hooked = True
