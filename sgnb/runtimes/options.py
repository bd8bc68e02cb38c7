"""The start options of sgnb's runtimes: one table, from which every front end is derived.

``%sglang start`` / ``%sglang serve`` (their ``magic_arguments``, so ``%sglang?``), ``sgnb serve``
(argparse, so ``sgnb serve --help``), ``sgnb.start()`` and the runtimes' own constructors all read
:data:`OPTIONS`: a flag's name, type, help and the runtimes that accept it are written once, here.

Each option maps to the field of SGLang's ``ServerArgs`` of the same meaning
(``sglang/srt/arg_groups/fields/*.py``, collected by ``sglang/srt/server_args.py``); ``threads`` is
sgnb's own (torch's CPU threads; SGLang has no CPU runtime). The engine runtime also accepts any
other ``ServerArgs`` field (``--engine-arg KEY=VALUE``), which ``sglang.Engine`` receives as is.

Errors are one line (a ``ValueError``), the same text whichever front end the option came through.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("local", "engine", "remote")
BOTH = ("local", "engine")


@dataclass(frozen=True)
class StartOption:
    """One start option. ``default`` None means "the runtime's own default" (given in ``help``)."""

    name: str  # the Python keyword: sgnb.start(max_total_tokens=...)
    type: type  # int, float, str or bool (a bool is a flag that takes no value)
    help: str
    runtimes: tuple[str, ...]  # the runtime kinds that accept it
    server_arg: str | None  # the sglang ServerArgs field it maps to (None: sgnb's own)
    minimum: float | None = None  # the smallest value accepted (int and float options)
    maximum: float | None = None
    choices: tuple[str, ...] | None = None  # the values accepted (str options)
    default: Any = None

    @property
    def flag(self) -> str:
        """``--max-total-tokens``: SGLang's flag spelling (``ServerArgs.add_cli_args``)."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise a one-line ValueError if ``value`` is not of this option's type and range."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be True or False, got {value!r}")
            return
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{self.name} must be an int, got {value!r}")
        if self.type is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{self.name} must be a number, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum:g}, got {value!r}")
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            raise ValueError(f"unknown {self.name} {value!r}; choose from {', '.join(self.choices)}")


LOCAL_MAX_TOTAL_TOKENS = 16384  # the local runtime's KV pool when not given (SGLang sizes it from GPU memory)

# SGLang's dtype choices (fields/model.py ``dtype``) and the short names sgnb also reads.
DTYPES = ("auto", "bfloat16", "float32", "float16", "half", "float", "bf16", "fp32")

OPTIONS: tuple[StartOption, ...] = (
    StartOption(
        "context_length",
        int,
        "maximum tokens per request (default: the model's config.json)",
        BOTH,
        "context_length",
        minimum=1,
    ),
    StartOption(
        "max_total_tokens",
        int,
        f"KV-cache pool size in tokens (local default {LOCAL_MAX_TOTAL_TOKENS}; engine: from --mem-fraction-static)",
        BOTH,
        "max_total_tokens",
        minimum=16,
    ),
    StartOption("page_size", int, "tokens per radix-tree page (default 1)", BOTH, "page_size", minimum=1),
    StartOption(
        "disable_radix_cache", bool, "turn prefix reuse off", BOTH, "disable_radix_cache", default=False
    ),
    StartOption(
        "dtype",
        str,
        "weights and activations: bfloat16 | float32 | auto (local default bfloat16; engine: SGLang's auto)",
        BOTH,
        "dtype",
        choices=DTYPES,
    ),
    StartOption(
        "allow_auto_truncate",
        bool,
        "cut a too-long prompt / max_new_tokens instead of refusing the request",
        BOTH,
        "allow_auto_truncate",
        default=False,
    ),
    StartOption("threads", int, "torch CPU threads (default: all cores)", ("local",), None, minimum=1),
    StartOption(
        "mem_fraction_static",
        float,
        "GPU memory fraction for weights and the KV pool",
        ("engine",),
        "mem_fraction_static",
        minimum=0.0,
        maximum=1.0,
    ),
    StartOption("tp_size", int, "tensor-parallel GPUs (default 1)", ("engine",), "tp_size", minimum=1),
)
BY_NAME = {option.name: option for option in OPTIONS}

# Keywords a runtime's constructor takes besides the table's: how to reach a server, and the
# event hub (sgnb's own plumbing). The engine also takes any sglang ServerArgs field.
EXTRA: dict[str, tuple[str, ...]] = {
    "local": ("hub",),
    "engine": ("hub", "kv_events"),
    "remote": ("hub", "api_key", "timeout", "kv_events", "kv_events_topic"),
}


def accepted(kind: str) -> list[StartOption]:
    """The table's options that the ``kind`` runtime accepts."""
    return [option for option in OPTIONS if kind in option.runtimes]


def not_for(option: StartOption, kind: str) -> str:
    """The one-line refusal of ``option`` by the ``kind`` runtime (every front end shows this text)."""
    where = " and ".join(option.runtimes)
    return f"{option.flag} ({option.name}) applies to the {where} runtime only, not {kind}"


def server_arg_fields() -> set[str]:
    """The field names of SGLang's ``ServerArgs`` (empty where sglang is not importable).

    A msgspec Struct in sglang 0.5.23 (``server_args.py`` ``msgspec.defstruct``), a dataclass before.
    """
    import dataclasses

    try:
        from sglang.srt.server_args import ServerArgs
    except ImportError:
        return set()
    names = getattr(ServerArgs, "__struct_fields__", None)
    if names is None:
        names = [field.name for field in dataclasses.fields(ServerArgs)]
    return set(names)


def check(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``options`` for the ``kind`` runtime before anything loads; return them unchanged.

    Raises ``ValueError`` (one line) for an option of another runtime, an unknown keyword or a
    value of the wrong type or range. The engine runtime passes keywords outside the table to
    ``sglang.Engine``: they must be ``ServerArgs`` fields.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown runtime {kind!r}; choose local, engine, auto or a server URL")
    fields: set[str] | None = None
    for name, value in options.items():
        option = BY_NAME.get(name)
        if option is not None:
            if value is None:  # not given: the runtime's default
                continue
            if kind not in option.runtimes:
                raise ValueError(not_for(option, kind))
            if not (name == "dtype" and not isinstance(value, str)):
                option.check(value)  # a torch.dtype is checked by the runtime
            continue
        if name in EXTRA[kind]:
            continue
        if kind == "engine":
            # Read once, and only here: importing ServerArgs takes seconds, and the engine
            # runtime imports sglang anyway.
            fields = server_arg_fields() if fields is None else fields
            if name in fields or not fields:
                continue  # sglang.Engine's own argument (unchecked without sglang: Engine will say)
        known = [o.name for o in accepted(kind)] + [n for n in EXTRA[kind] if n != "hub"]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown start option {name!r} for the {kind} runtime{hint}")
    return options


# ---- argparse: %sglang start, %sglang serve, sgnb serve -----------------------------------


def argument_specs() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """``(flags, keywords)`` for ``add_argument`` of every option, in table order."""
    specs: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for option in OPTIONS:
        where = "" if option.runtimes == BOTH else f" [{' | '.join(option.runtimes)} only]"
        keywords: dict[str, Any] = {"dest": option.name, "help": option.help + where}
        if option.type is bool:
            keywords["action"] = "store_true"
        else:
            keywords.update(type=option.type, default=None)
        specs.append(((option.flag,), keywords))
    return specs


def add_arguments(add: Callable[..., Any]) -> None:
    """Call ``add(*flags, **keywords)`` for every option (``parser.add_argument``)."""
    for flags, keywords in argument_specs():
        add(*flags, **keywords)


def given(args: argparse.Namespace | Any) -> dict[str, Any]:
    """The options set on a parsed command line (flags left out are left out)."""
    options: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is not None and value is not False:
            options[option.name] = value
    return options


def parse_value(value: str) -> Any:
    """'8' -> 8, '0.5' -> 0.5, 'true' -> True; anything else stays a string (``--engine-arg``)."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def engine_args(items: Iterable[str]) -> dict[str, Any]:
    """``["load_format=dummy", "cuda-graph-max-bs=8"]`` -> ``{"load_format": "dummy", ...}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--engine-arg wants KEY=VALUE, got {item!r}")
        options[key.replace("-", "_")] = parse_value(value)
    return options


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # a ValueError, not sys.exit
        raise ValueError(message)


def parse_flags(flags: str | list[str], kind: str | None = None) -> dict[str, Any]:
    """``%sglang start`` flags as keyword arguments for ``sgnb.start()``; checked for ``kind`` if given.

    ``parse_flags("--max-total-tokens 8192 --engine-arg load_format=dummy")`` ->
    ``{"max_total_tokens": 8192, "load_format": "dummy"}``. ValueError on an unknown flag.
    """
    parser = _Parser(prog="%sglang start", add_help=False)
    add_arguments(parser.add_argument)
    parser.add_argument("--engine-arg", action="append", default=[])
    args = parser.parse_args(shlex.split(flags) if isinstance(flags, str) else flags)
    options = {**given(args), **engine_args(args.engine_arg)}
    return check(kind, options) if kind is not None else options


def to_flags(options: dict[str, Any]) -> list[str]:
    """The inverse of :func:`parse_flags` for the table's options: ``["--page-size", "4", ...]``."""
    flags: list[str] = []
    for name, value in options.items():
        flag = BY_NAME[name].flag if name in BY_NAME else "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags
