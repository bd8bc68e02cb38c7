"""The sglang version pin, checked at start-up (the check SGLang users run in CI)."""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any

SGNB_VERSION = "0.1.0"  # pyproject.toml's version; sgnb.__version__
SGLANG_PIN = "0.5.23"
SGLANG_MIN = (0, 5, 16)


class SGLangVersionError(RuntimeError):
    pass


def installed_sglang() -> str | None:
    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None


def _parse(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_sglang_version(strict: bool = False) -> str:
    """Return the installed sglang version; warn (or raise when ``strict``) if it is not the pin.

    sgnb works with sglang >= 0.5.16 (the GPU bundle carries 0.5.17); the pin is what
    ``make setup`` installs, for reproducible notebooks.
    """
    found = installed_sglang()
    if found is None:
        raise SGLangVersionError(f"sglang is not installed: pip install sglang=={SGLANG_PIN}")
    if _parse(found) < SGLANG_MIN:
        raise SGLangVersionError(
            f"sglang {found} is too old for sgnb (needs >= {'.'.join(map(str, SGLANG_MIN))}); "
            f"pip install sglang=={SGLANG_PIN}"
        )
    if found != SGLANG_PIN:
        message = f"sglang {found} is installed; sgnb pins {SGLANG_PIN} (pip install sglang=={SGLANG_PIN})"
        if strict:
            raise SGLangVersionError(message)
        warnings.warn(message, stacklevel=2)
    return found


def sglang_global_config() -> Any:
    """SGLang's frontend ``global_config`` (default backend, detokenization flags), wherever this
    release keeps it: ``sglang.lang.global_config`` since 0.5.18, ``sglang.global_config`` before
    (0.5.17 is the GPU bundle's release)."""
    try:
        from sglang.lang.global_config import global_config
    except ImportError:  # sglang <= 0.5.17
        from sglang.global_config import global_config  # type: ignore[no-redef,import-not-found,unused-ignore]
    return global_config
