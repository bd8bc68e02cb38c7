"""IPython startup for ``make lab``: every kernel has ``%sglang`` at once, with sgnb imported.

``make lab`` converts the bundled model first and points ``IPYTHONDIR`` at a profile whose
startup folder runs this file. It calls ``load_ipython_extension`` directly rather than
``%load_ext sgnb``: the extension then is not marked loaded, so a notebook's own
``%load_ext sgnb`` (every tutorial has one, so it runs anywhere) loads it again quietly instead
of printing "The sgnb extension is already loaded". Loading twice is harmless (idempotent).
"""

from __future__ import annotations

from IPython import get_ipython

_ip = get_ipython()
if _ip is not None:
    import sgnb

    sgnb.load_ipython_extension(_ip)
