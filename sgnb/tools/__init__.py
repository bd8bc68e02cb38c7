"""Tools around sgnb: the ``sgnb`` command line (``cli``), deployment files, benchmark gates, the demo."""
