"""``python -m sgnb.bench``: see :mod:`sgnb.bench.run`."""

import sys

from sgnb.bench.run import main

sys.exit(main())
