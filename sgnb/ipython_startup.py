"""IPython startup for ``make lab``: every kernel loads sgnb, so ``%sglang`` works at once.

``make lab`` converts the bundled model first (so ``%sglang start`` takes about a second) and points
``IPYTHONDIR`` at a profile whose startup folder runs this file.
"""

from __future__ import annotations

from IPython import get_ipython

_ip = get_ipython()
if _ip is not None:
    _ip.run_line_magic("load_ext", "sgnb")
