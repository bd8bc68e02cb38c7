"""``sgnb.serve.launch``: the tutorials' server command, started and stopped as a real child process.

The engine command is checked with SGLang's own parser (``ServerArgs.add_cli_args`` in
``sglang/srt/server_args.py``, what ``python -m sglang.launch_server`` parses its argv with).
"""

from __future__ import annotations

import argparse
import sys
import time

import pytest

from sgnb.core.models import resolve_model
from sgnb.serve.launch import server_command, server_log, start_server, stop_server


def sglang_parse(argv: list[str]) -> argparse.Namespace:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return parser.parse_args(argv)


def test_engine_command_is_what_sglangs_launch_server_parses() -> None:
    """``sglang.launch_server``'s parser reads the model, the port and the ``%sglang start`` flags."""
    cmd = server_command("engine", "bundled", 30123, "--max-total-tokens 4096 --engine-arg load_format=dummy")
    assert cmd[:3] == [sys.executable, "-m", "sglang.launch_server"]
    args = sglang_parse(cmd[3:])
    assert args.model_path == str(resolve_model("bundled"))  # SGLang knows no "bundled"
    assert (args.host, args.port, args.log_level) == ("127.0.0.1", 30123, "warning")
    assert (args.max_total_tokens, args.load_format) == (4096, "dummy")
    assert (args.attention_backend, args.sampling_backend, args.enable_metrics) == ("triton", "pytorch", True)


@pytest.mark.parametrize("flags", ["--no-such-flag 1", "--threads 2"])
def test_engine_command_refuses_a_flag_sglang_would_not_take(flags: str) -> None:
    """An unknown flag, or one for sgnb's CPU runtime only, is a ValueError before anything starts."""
    with pytest.raises(ValueError):
        server_command("engine", "bundled", 30123, flags)


def test_local_command_is_sgnb_serve_and_a_bad_kind_is_refused() -> None:
    cmd = server_command("local", "bundled", 30124)
    assert cmd[1:] == [
        "-m", "sgnb.cli", "serve", "--model", "bundled",
        "--host", "127.0.0.1", "--port", "30124", "--log-level", "warning",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="kind"):
        server_command("gpu", "bundled", 30124)


def test_start_log_and_stop_a_child() -> None:
    """start_server logs the child's output to a file; stop_server ends it (twice is harmless)."""
    code = (
        "import sys, time; print('up', flush=True); print('err', file=sys.stderr, flush=True); time.sleep(60)"
    )
    server = start_server([sys.executable, "-c", code])
    try:
        assert server.poll() is None and server.pid > 0
        deadline = time.monotonic() + 30
        while "err" not in server_log(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server_log(server).split() == ["up", "err"]
    finally:
        stop_server(server, timeout=10)
    assert server.poll() is not None and server.returncode == server.poll()
    stop_server(server)
    assert server.poll() is not None
