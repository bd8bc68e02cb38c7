"""``python -m sgnb.cli``: the ``sgnb`` command where the console script is not on PATH (the tutorials
and the tests run it so, with the kernel's own Python). An entry point only; the code is
:mod:`sgnb.tools.cli` (``main`` is importable here too, so a console script installed before the
move still starts until ``make setup`` reinstalls it).
"""

import sys

from sgnb.tools.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
