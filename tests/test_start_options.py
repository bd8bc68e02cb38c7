"""The table of start options (``sgnb.runtimes.options``) and the front ends derived from it.

The table's names, flags and defaults are SGLang's: ``ServerArgs`` (``sglang/srt/server_args.py``,
its fields in ``sglang/srt/arg_groups/fields/*.py``) and ``ServerArgs.add_cli_args``'s flags. Every
option shows in ``%sglang?`` and ``sgnb serve --help``; an option that a runtime does not take is
the same one line from ``sgnb.start()``, ``%sglang start`` (a UsageError) and ``sgnb serve``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import sgnb
from sgnb.notebook.session import Session, get_session
from sgnb.runtimes import options as start_options
from sgnb.runtimes.options import OPTIONS, StartOption
from sgnb.tools.cli import main as cli_main

REFUSED = [
    (option, kind) for option in OPTIONS for kind in ("local", "engine") if kind not in option.runtimes
]
# A value each option accepts (its type and range), so that only "which runtime" can fail.
GOOD = {int: 32, float: 0.5, bool: True, str: "float32"}


@pytest.fixture(scope="module")
def server_args() -> Any:
    from sglang.srt.server_args import ServerArgs

    return ServerArgs


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    from IPython.testing.globalipapp import get_ipython, start_ipython

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "sgnb")
    yield shell
    if get_session().runtime is not None:
        get_session().stop()


def magic_error(ip: InteractiveShell, line: str) -> str:
    result = ip.run_cell(line)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


def value_for(option: StartOption) -> Any:
    return GOOD[option.type]


def flag_words(option: StartOption) -> list[str]:
    return [option.flag] if option.type is bool else [option.flag, str(value_for(option))]


# ---- the table is SGLang's -------------------------------------------------------------------


def test_each_option_maps_to_a_server_args_field_with_sglangs_flag(server_args: Any) -> None:
    """``server_arg`` names a field of sglang's ``ServerArgs`` (a msgspec Struct in 0.5.23), and
    the option's flag is the one ``ServerArgs.add_cli_args`` gives that field."""
    fields = {f.name: f for f in msgspec.structs.fields(server_args)}
    parser = argparse.ArgumentParser()
    server_args.add_cli_args(parser)
    flags = {flag: action.dest for action in parser._actions for flag in action.option_strings}
    sgnb_only = [o.name for o in OPTIONS if o.server_arg is None]
    assert sgnb_only == ["threads"]  # SGLang has no CPU runtime, so no thread count
    for option in OPTIONS:
        if option.server_arg is None:
            continue
        assert option.server_arg in fields, option.name
        assert flags.get(option.flag) == option.server_arg, option.flag


def test_defaults_are_sglangs(server_args: Any) -> None:
    """A flag's default is SGLang's (False); an option with the runtime's own default leaves it to
    SGLang where SGLang's default is None (derived from the model or GPU memory)."""
    fields = {f.name: f for f in msgspec.structs.fields(server_args)}
    for option in OPTIONS:
        if option.server_arg is None:
            continue
        sglang_default = fields[option.server_arg].default
        if option.type is bool:
            assert option.default is sglang_default is False, option.name
        elif option.name in ("context_length", "max_total_tokens", "page_size", "mem_fraction_static"):
            assert sglang_default is None, option.name
    assert fields["tp_size"].default == 1 and fields["dtype"].default == "auto"


def test_dtype_choices_include_sglangs(server_args: Any) -> None:
    parser = argparse.ArgumentParser()
    server_args.add_cli_args(parser)
    dtype = next(a for a in parser._actions if a.dest == "dtype")
    assert set(dtype.choices or ()) <= set(start_options.DTYPES)


# ---- every option in every front end's help ---------------------------------------------------


def test_every_option_is_in_the_magic_help_and_sgnb_serve_help(ip: InteractiveShell) -> None:
    doc = ip.find_line_magic("sglang").__doc__ or ""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    serve_help = subprocess.run(
        [sys.executable, "-m", "sgnb.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    for option in OPTIONS:
        assert option.flag in doc, option.flag
        assert option.flag in serve_help, option.flag
        assert option.help.split(" (")[0][:30] in " ".join(serve_help.split()), option.name


# ---- one refusal, three front ends ---------------------------------------------------------------


@pytest.mark.parametrize(("option", "kind"), REFUSED, ids=[f"{o.name}-{k}" for o, k in REFUSED])
def test_an_option_of_another_runtime_is_the_same_line_everywhere(
    ip: InteractiveShell, option: StartOption, kind: str
) -> None:
    """``sgnb.start``, ``%sglang start`` and (for the local runtime) ``sgnb serve`` refuse it
    before anything loads, with one and the same line."""
    expected = start_options.not_for(option, kind)
    with pytest.raises(ValueError) as api:
        sgnb.start("bundled", kind, **{option.name: value_for(option)})
    assert str(api.value) == expected
    line = " ".join(["%sglang start --runtime", kind, *flag_words(option)])
    assert magic_error(ip, line) == expected
    assert get_session().runtime is None
    if kind == "local":  # sgnb serve serves the local runtime
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert cli_main(["serve", *flag_words(option)]) == 2
        assert err.getvalue().strip() == f"sgnb serve: {expected}"


def test_a_server_url_takes_no_runtime_options(ip: InteractiveShell) -> None:
    """Options that size a runtime mean nothing to a server that is already running."""
    option = start_options.BY_NAME["page_size"]
    expected = start_options.not_for(option, "remote")
    assert magic_error(ip, "%sglang start --runtime http://127.0.0.1:9 --page-size 4") == expected
    with pytest.raises(ValueError, match="not remote"):
        sgnb.start(runtime="http://127.0.0.1:9", page_size=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_total_tokens": 4}, "max_total_tokens must be >= 16, got 4"),
        ({"max_total_tokens": "big"}, "max_total_tokens must be an int, got 'big'"),
        ({"page_size": True}, "page_size must be an int, got True"),
        ({"threads": 0}, "threads must be >= 1, got 0"),
        ({"disable_radix_cache": "yes"}, "disable_radix_cache must be True or False, got 'yes'"),
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        (
            {"pagesize": 4},
            "unknown start option 'pagesize' for the local runtime (did you mean 'page_size'?)",
        ),
        ({"load_format": "dummy"}, "unknown start option 'load_format' for the local runtime"),
    ],
)
def test_bad_values_are_one_line_from_the_api_and_the_constructor(
    options: dict[str, Any], message: str
) -> None:
    """``sgnb.start`` and ``LocalRuntime(...)`` itself check with the same table (nothing loads)."""
    from sgnb.runtimes.local import LocalRuntime

    with pytest.raises(ValueError) as api:
        sgnb.start(runtime="local", **options)
    assert str(api.value).startswith(message) and "\n" not in str(api.value)
    if not options.keys() - {o.name for o in OPTIONS}:
        with pytest.raises(ValueError) as direct:
            LocalRuntime("bundled", **options)
        assert str(direct.value) == str(api.value)


def test_engine_options_are_checked_against_server_args() -> None:
    """The engine runtime passes keywords outside the table to ``sglang.Engine``; a name that is
    not a ``ServerArgs`` field is refused before any process starts."""
    assert start_options.check("engine", {"load_format": "dummy", "tp_size": 2}) == {
        "load_format": "dummy",
        "tp_size": 2,
    }
    with pytest.raises(ValueError, match=r"unknown start option 'tp_sise' for the engine runtime.*'tp_size'"):
        start_options.check("engine", {"tp_sise": 2})
    with pytest.raises(ValueError, match="mem_fraction_static must be <= 1"):
        start_options.check("engine", {"mem_fraction_static": 1.5})


# ---- parsing flags, as the magics and tutorials do ---------------------------------------------


def test_parse_flags_and_back() -> None:
    options = start_options.parse_flags(
        "--max-total-tokens 8192 --disable-radix-cache --dtype float32 --engine-arg load_format=dummy "
        "--engine-arg cuda-graph-max-bs=8"
    )
    assert options == {
        "max_total_tokens": 8192,
        "disable_radix_cache": True,
        "dtype": "float32",
        "load_format": "dummy",
        "cuda_graph_max_bs": 8,
    }
    table_only = {k: v for k, v in options.items() if k in start_options.BY_NAME}
    assert start_options.parse_flags(start_options.to_flags(table_only)) == table_only
    with pytest.raises(ValueError, match="unrecognized arguments: --bogus"):
        start_options.parse_flags("--bogus 1")
    with pytest.raises(ValueError, match="applies to the engine runtime only, not local"):
        start_options.parse_flags("--tp-size 2", kind="local")


# ---- one start path -------------------------------------------------------------------------------


def test_sgnb_start_and_the_session_share_the_start_path_and_its_default() -> None:
    """Both default to ``auto`` (what ``%sglang start`` does) and build with ``start_runtime``."""
    from sgnb.runtimes.factory import start_runtime

    defaults = [
        inspect.signature(f).parameters["runtime"].default for f in (sgnb.start, Session.start, start_runtime)
    ]
    assert defaults == ["auto", "auto", "auto"]
    with pytest.raises(ValueError) as api:
        sgnb.start(tp_size=2) if not _cuda() else sgnb.start(threads=2)
    with pytest.raises(ValueError) as session:
        Session().start(tp_size=2) if not _cuda() else Session().start(threads=2)
    assert str(api.value) == str(session.value)


def _cuda() -> bool:
    from sgnb.runtimes.factory import cuda_available

    return cuda_available()
