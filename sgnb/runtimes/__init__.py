"""The runtimes sgnb can drive: ``local`` (its own engine), ``engine`` (sglang.Engine), ``remote``."""
