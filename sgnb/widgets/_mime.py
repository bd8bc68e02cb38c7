"""The MIME types and marker sgnb widget outputs carry (no imports: the package and the
``python -m sgnb.widgets._static`` command both read them, so the package never imports
``_static`` and runpy does not warn that it was imported before it ran)."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MARK = "data-sgnb-static"  # in every sgnb static text/html snapshot
