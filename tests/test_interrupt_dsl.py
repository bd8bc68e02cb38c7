"""Ctrl-C in a plain cell that runs SGLang programs (``run_batch``, ``.run()``) in a real IPython shell.

SGLang's frontend generates on worker threads (``interpreter.run_program_batch``'s
``ThreadPoolExecutor``, ``StreamExecutor``'s thread); the interrupt reaches the main thread only.
The requests must still end at once, each with SGLang's ``finish_reason`` ``{"type": "abort"}``
(``FINISH_ABORT.to_json``, what ``TokenizerManager.abort_request`` gives), as the cell's one-line
message says, and leave no KV slot held.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from sgnb.notebook.session import get_session

MAX_TOKENS = 400


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    from IPython.testing.globalipapp import get_ipython, start_ipython

    shell = start_ipython() or get_ipython()
    assert shell is not None
    shell.run_line_magic("load_ext", "sgnb")
    started = get_session().runtime is None
    if started:
        get_session().start("bundled", "local")
    yield shell
    if started:
        get_session().stop()


def interrupt_once_running(timeout: float = 120.0) -> threading.Thread:
    """SIGINT to the main thread (what the kernel's interrupt sends) once a request runs.

    A real signal, not ``_thread.interrupt_main()``: that only sets Python's flag, and a main thread
    blocked in a lock (``Future.result``, ``Thread.join``) does not see it until the lock is free;
    a signal interrupts the wait, as in a kernel."""
    rt = get_session().require()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not rt.cache_state()["running"] and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run_interrupted(ip: InteractiveShell, source: str, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    """Run ``source`` as a cell, interrupted once it generates: the requests it finished."""
    before = len(get_session().finished)
    capsys.readouterr()
    watcher = interrupt_once_running()
    result = ip.run_cell(source)
    watcher.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt), result.error_in_exec
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown[-1].startswith("KeyboardInterrupt: generation interrupted; the request was aborted"), shown
    state = get_session().require().cache_state()
    assert state["running"] == 0 and state["waiting"] == 0 and state["protected"] == 0, state
    assert state["used"] + state["free"] == state["capacity"], state
    return list(get_session().finished)[before:]


def assert_all_aborted(finished: list[Any], count: int) -> None:
    reasons = [(f.finish_reason or {}).get("type") for f in finished]
    assert reasons == ["abort"] * count, [(f.finish_reason, f.completion_tokens) for f in finished]
    assert all(f.completion_tokens < MAX_TOKENS for f in finished)


def test_interrupted_run_batch_aborts_every_program(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """An interrupted ``run_batch`` in a plain cell: both programs' gens aborted, none ran to
    ``max_tokens`` (each did before: the executor's ``with`` block waited for them)."""
    cell = f"""
@sgl.function
def tell_(s, t):
    s += t + sgl.gen("x", max_tokens={MAX_TOKENS}, ignore_eos=True, temperature=0)

tell_.run_batch([{{"t": "Once upon a time"}}, {{"t": "In a land far away"}}])
"""
    ip.run_cell("import sglang as sgl")
    assert_all_aborted(run_interrupted(ip, cell, capsys), 2)


def test_interrupted_run_aborts_the_gens_after_too(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """``.run()`` then ``state["b"]``, interrupted in the first of two gens: the second, which the
    program's worker starts after the first is aborted, is aborted too (before: both ran on)."""
    cell = f"""
@sgl.function
def two_(s):
    s += "Once upon a time" + sgl.gen("a", max_tokens={MAX_TOKENS}, ignore_eos=True, temperature=0)
    s += " Then" + sgl.gen("b", max_tokens={MAX_TOKENS}, ignore_eos=True, temperature=0)

two_.run()["b"]
"""
    ip.run_cell("import sglang as sgl")
    assert_all_aborted(run_interrupted(ip, cell, capsys), 2)
    # the runtime serves the next request in full
    again = get_session().require().generate("Hello", max_new_tokens=3, ignore_eos=True)
    assert again["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
