"""``python -m sgnb.models``: convert the bundled model once, ahead of use, and print its folder.

An entry point only (``make lab`` and the GPU machine's scripts type it); the code is
:mod:`sgnb.core.models`.
"""

if __name__ == "__main__":
    from sgnb.core.models import bundled_model_dir

    print(bundled_model_dir())
