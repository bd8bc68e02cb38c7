"""%sglang and %%sglang in a real IPython shell, and through papermill in a real kernel."""

from __future__ import annotations

import _thread
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell

import sgnb
from sgnb.notebook.session import get_session


def ipython_shell() -> Any:
    """IPython's test shell; ``start_ipython`` returns None once a shell exists in the process."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    return start_ipython() or get_ipython()


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    shell = ipython_shell()
    assert shell is not None
    shell.run_line_magic("load_ext", "sgnb")
    yield shell
    if get_session().runtime is not None:
        get_session().stop()


def run(ip: InteractiveShell, source: str) -> Any:
    return ip.run_cell(source)


def usage_error(ip: InteractiveShell, source: str) -> str:
    from IPython.core.error import UsageError

    result = run(ip, source)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    message = str(result.error_in_exec)
    assert "\n" not in message.strip()  # one line
    return message


def test_errors_before_start(ip: InteractiveShell) -> None:
    assert "no SGLang runtime is running" in usage_error(ip, "%sglang stop")
    assert "no SGLang runtime is running" in usage_error(ip, "%sglang status")
    assert "invalid choice" in usage_error(ip, "%sglang frobnicate")
    assert "unrecognized arguments" in usage_error(ip, "%sglang start --bogus")
    assert "does not exist" in usage_error(ip, "%sglang start --model /nonexistent/model")
    assert "--tp-size" in usage_error(ip, "%sglang start --runtime local --tp-size 2")
    assert "--engine-arg" in usage_error(ip, "%sglang start --runtime local --engine-arg a=b")
    assert "unknown runtime" in usage_error(ip, "%sglang start --runtime tpu")
    assert "no SGLang runtime" in usage_error(ip, "%%sglang\ns += 'x'")
    assert get_session().runtime is None  # never half-started


def test_help_comes_from_magic_arguments(ip: InteractiveShell) -> None:
    doc = ip.find_line_magic("sglang").__doc__
    assert doc and "--max-total-tokens" in doc and "--page-size" in doc and "connect" in doc
    # %sglang? also lists the cell magic's options; %%sglang? is titled %%sglang, not %sglang_cell
    assert "--no-stream" in doc and "--show" in doc and "-o OUTPUT" in doc
    cell_doc = ip.find_cell_magic("sglang").__doc__
    assert cell_doc and "%%sglang [-o OUTPUT]" in cell_doc and "sglang_cell" not in cell_doc


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%sglang start --help", "--max-total-tokens"),
        ("%sglang stop -h", "%sglang status | stats"),
        ("%sglang serve --help", "%sglang serve [--port N]"),
        ("%sglang cluster start --help", "--workers"),
        ("%%sglang --help\ns += 'x'", "--no-stream"),
    ],
)
def test_help_flag_on_any_subcommand_shows_its_help(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    """``--help``/``-h`` after a subcommand shows help (argparse's own meaning of the flags, as
    SGLang's ``prepare_server_args`` parser gives it), never ``unrecognized arguments: --help``."""
    capsys.readouterr()
    result = run(ip, line)
    assert result.error_in_exec is None, result.error_in_exec
    assert expected in capsys.readouterr().out
    assert get_session().runtime is None  # help starts nothing


def test_one_list_of_subcommands(ip: InteractiveShell) -> None:
    """The invalid-choice error and the usage line name every subcommand %sglang? documents."""
    from sgnb.notebook.magics import COMMANDS

    doc = ip.find_line_magic("sglang").__doc__ or ""
    documented = set(re.findall(r"%sglang (\w+)", doc)) | set(
        re.findall(r"\| (\w+)", doc.split("%%sglang")[0])
    )
    assert {"cluster", "start", "serve", "bench"} <= documented
    message = usage_error(ip, "%sglang strat")
    for command in documented & set(COMMANDS) | {"cluster"}:
        assert f"'{command}'" in message, (command, message)
    assert "cluster" in ip.find_line_magic("sglang").parser.format_usage()


@pytest.mark.parametrize(
    "line",
    [
        "%sglang start --max-total-token 4096",
        "%sglang start --context 512",
        "%sglang cluster start --work 2",
        "%%sglang --no-str\ns += 'x'",
    ],
)
def test_abbreviated_flags_are_refused(ip: InteractiveShell, line: str) -> None:
    """A misspelt flag that is a prefix of a real one is an error, not a silent abbreviation."""
    assert "unrecognized arguments" in usage_error(ip, line)
    assert get_session().runtime is None


def test_start_status_and_twice(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    result = run(ip, "%sglang start --max-total-tokens 8192")
    assert result.error_in_exec is None
    status = get_session().status()
    # one load time: the start line's "model load" is the status table's "load time"
    assert f"model load {status['load_time_s']:.2f} s" in capsys.readouterr().out
    assert status["runtime"] == "local" and status["max_total_tokens"] == 8192
    assert "no CUDA GPU" in status["why"]
    assert "already running" in usage_error(ip, "%sglang start")
    assert run(ip, "%sglang status").result is not None


def test_program_cell_binds_s_and_stores_state(ip: InteractiveShell) -> None:
    cell = (
        "%%sglang -o st\n"
        "s += sgl.user('What is the capital of France?')\n"
        "s += sgl.assistant(sgl.gen('answer', max_tokens=16, temperature=0))\n"
    )
    assert run(ip, cell).error_in_exec is None
    state = ip.user_ns["st"]
    assert "Paris" in state["answer"]
    second = run(ip, cell.replace("-o st", "-o st2"))
    assert second.error_in_exec is None
    meta = ip.user_ns["st2"].get_meta_info("answer")
    assert meta["cached_tokens"] >= meta["prompt_tokens"] - 1  # the repeated prompt comes from the cache


def test_function_cell_and_default_backend(ip: InteractiveShell) -> None:
    cell = (
        "%%sglang\n"
        "@sgl.function\n"
        "def pick(s):\n"
        "    s += 'The capital of France is' + sgl.select('c', choices=[' Paris', ' Rome'])\n"
        "picked = pick.run()['c']\n"
    )
    assert run(ip, cell).error_in_exec is None
    assert ip.user_ns["picked"] == " Paris"
    # plain Python cells use the same backend: %sglang start set sglang's default backend
    plain = "import sglang as sgl\n@sgl.function\ndef f(s):\n    s += 'Hi' + sgl.gen('x', max_tokens=2)\nf.run()['x']"
    assert run(ip, plain).error_in_exec is None


def test_program_errors_raise(ip: InteractiveShell) -> None:
    assert "syntax error" in usage_error(ip, "%%sglang\ns += (")
    result = run(ip, "%%sglang\ns += sgl.gen('x', max_tokens=4, regex='(unclosed')")
    assert result.error_in_exec is not None  # raised, so papermill and nbval see a red cell
    assert run(ip, "%%sglang -o ok\ns += 'Hello' + sgl.gen('x', max_tokens=2)").error_in_exec is None


def test_program_cell_is_told_apart_by_its_syntax(ip: InteractiveShell) -> None:
    """Only a cell that defines programs (``@sgl.function``, ``sgl.function(f)``) runs as plain
    Python: one that mentions them in a comment or a string is a program body, ``s`` bound. A
    syntax error names the line of the body, not of sgnb's wrapper."""
    cell = "%%sglang -o mention\n# not an @sgl.function cell\ns += 'See @sgl.function: ' + sgl.gen('x', max_tokens=2)\n"
    assert run(ip, cell).error_in_exec is None
    assert isinstance(ip.user_ns["mention"]["x"], str)
    assert "syntax error in the program cell, line 2:" in usage_error(ip, "%%sglang\nx = 1\ns += (")
    called = "%%sglang\ndef g(s):\n    s += 'Hi' + sgl.gen('y', max_tokens=2)\ncalled = sgl.function(g).run()['y']\n"
    assert run(ip, called).error_in_exec is None and isinstance(ip.user_ns["called"], str)


def test_defines_programs_reads_the_syntax_tree() -> None:
    from sgnb.notebook.program import defines_programs

    assert defines_programs("@sgl.function\ndef f(s):\n    pass")
    assert defines_programs("@sglang.function(num_api_spec_tokens=8)\ndef f(s):\n    pass")
    assert defines_programs("from sglang import function\n@function\ndef f(s):\n    pass")
    assert defines_programs("def f(s):\n    pass\nprogram = sgl.function(f)")
    assert not defines_programs("s += '@sgl.function' + sgl.gen('x')  # @function")
    assert not defines_programs("s += (")  # a body whose syntax error the program reports


def test_run_program_from_python(rt: Any) -> None:
    """``sgnb.run_program``: a ``%%sglang`` body as a one-off ``@sgl.function`` from plain Python
    (sglang's ``SglFunction.run``, ``stream=True``), on the backend given."""
    from conftest import assert_idle_balanced

    prompt = "The capital of France is"
    updates: list[Any] = []
    state = sgnb.run_program(
        f"s += {prompt!r} + sgl.gen('city', max_tokens=6)",
        backend=rt.backend,
        temperature=0,
        on_update=updates.append,
    )
    direct = rt.generate(prompt, max_new_tokens=6, temperature=0)["text"]
    assert state["city"] == direct and state.text() == prompt + direct
    assert len(updates) >= 2 and all(update is state for update in updates)
    with pytest.raises(ValueError, match="line 2: '\\(' was never closed"):
        sgnb.run_program("x = 1\ns += (", backend=rt.backend)
    with pytest.raises(TypeError, match="regexx"):  # the body's own error, raised as itself
        sgnb.run_program("s += sgl.gen('a', regexx='x')", backend=rt.backend)
    plain = sgnb.run_program(
        "s += 'Hi' + sgl.gen('x', max_tokens=3)", backend=rt.backend, stream=False, temperature=0
    )
    assert plain["x"] == rt.generate("Hi", max_new_tokens=3, temperature=0)["text"]
    assert_idle_balanced(rt)


def test_show_live_views(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    cell = (
        "%%sglang -o ph --show tree,cache,constrained\ns += 'Phone: ' + sgl.gen('p', regex=r'\\d{3}-\\d{4}')"
    )
    assert run(ip, cell).error_in_exec is None
    shown = capsys.readouterr().out
    assert "RadixTreeWidget:" in shown and "CachePanel:" in shown
    assert "ConstrainedView(regex)" in shown and "output valid: yes" in shown


def test_cache_panels_show_prompts_and_a_cells_panel_keeps_to_its_cell(ip: InteractiveShell) -> None:
    from sgnb.notebook import views

    session = get_session()
    rt = session.require()
    (panel,) = views.live_views(session, ["cache"])  # what --show cache displays for a cell
    rt.generate("The capital of Italy is", max_new_tokens=2, temperature=0)
    views.finish_views([panel])
    rt.generate("The capital of Spain is", max_new_tokens=2, temperature=0)  # a later cell's request
    panel.sync()
    assert panel.summary["requests"] == 1 and "Italy" in panel.rows[0]["prompt"]
    stats = run(ip, "%sglang stats").result  # the session's panel: every request, prompts decoded
    stats.sync()
    prompts = [r["prompt"] for r in stats.rows]
    assert any("Spain" in p for p in prompts) and not any(p.endswith("tokens)") for p in prompts)


def test_unknown_view(ip: InteractiveShell) -> None:
    assert "unknown view" in usage_error(ip, "%%sglang --show sparkles\ns += 'x'")


def test_tree_stats_flush_bench(ip: InteractiveShell) -> None:
    for command in ("%sglang tree", "%sglang stats"):
        result = run(ip, command)
        assert result.error_in_exec is None and result.result is not None
        assert " at 0x" not in repr(result.result)  # nbval compares text/plain
    # The tree opened after the requests still holds them: the session's mirror saw every event.
    tree = run(ip, "%sglang tree").result
    assert tree.mirror.node_count() > 0
    assert run(ip, "%sglang flush").error_in_exec is None
    assert get_session().require().cache_state()["cached"] == 0


def test_interrupt_mid_generation_then_generate(ip: InteractiveShell) -> None:
    rt = get_session().require()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        rt.generate("Tell me a very long story.", max_new_tokens=2000, temperature=0, ignore_eos=True)
    state = rt.cache_state()
    assert state["running"] == 0 and state["protected"] == 0
    out = rt.generate("What is the capital of France?", max_new_tokens=8, temperature=0)
    assert out["meta_info"]["completion_tokens"] >= 1


def test_trailing_comments_are_comments() -> None:
    """A ``# comment`` after a magic is a comment, as in Python and POSIX shells (``shlex``'s rule)."""
    from sgnb.notebook.cells import strip_comment

    assert strip_comment("start   # bundled SmolLM2-135M-Instruct; sglang.Engine") == "start"
    assert strip_comment("# all comment") == ""
    assert strip_comment("connect http://h:1/#frag --api-key k # x") == "connect http://h:1/#frag --api-key k"
    assert strip_comment("start --model '/a b/# c' # x") == "start --model '/a b/# c'"
    assert strip_comment('start --model "x # y"') == 'start --model "x # y"'
    assert strip_comment(r"start --model a\ \#b") == r"start --model a\ \#b"


def test_cell_of_magics_with_comments_shows_every_result(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each %sglang line of a cell displays its result, not only the last (IPython shows the last)."""
    capsys.readouterr()
    cell = "%sglang tree      # the radix tree, live\n%sglang stats     # per request\n%sglang status  # x\n"
    result = run(ip, cell)
    assert result.error_in_exec is None
    shown = capsys.readouterr().out
    assert "RadixTreeWidget:" in shown and "CachePanel:" in shown and shown.count("runtime: local") == 1
    ip.run_line_magic("config", "InteractiveShell.ast_node_interactivity = 'all'")
    try:  # IPython then displays every expression itself: sgnb must not add a second copy
        assert run(ip, "%sglang status\n%sglang status").error_in_exec is None
        assert capsys.readouterr().out.count("runtime: local") == 2
    finally:
        ip.run_line_magic("config", "InteractiveShell.ast_node_interactivity = 'last_expr'")


def one_line_error(ip: InteractiveShell, source: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run a failing cell; return what IPython showed for its error, checked to be one line."""
    capsys.readouterr()
    result = run(ip, source)
    assert result.error_in_exec is not None
    shown = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    errors = [line for line in shown if "Error" in line or "Interrupt" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(shown), shown
    return errors[0]


def test_misspelt_keyword_is_one_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    """``sgl.gen`` is a plain function (``sglang.lang.api.gen``): a wrong keyword is a TypeError."""
    line = one_line_error(ip, "%%sglang\ns += 'Hi'\ns += sgl.gen('x', max_tokens=2, regexx='x')", capsys)
    assert "line 2 of the cell" in line and "'regexx'" in line and "did you mean 'regex'" in line
    fn = "%%sglang\n@sgl.function\ndef f(s):\n    s += sgl.gen('x', max_tokn=2)\n\nf.run()"
    assert "'max_tokn'" in one_line_error(ip, fn, capsys)
    assert run(ip, "%%sglang -o ok\ns += 'Hello' + sgl.gen('x', max_tokens=2)").error_in_exec is None


def test_invalid_regex_is_one_line_without_cpp_source(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's ``re`` rejects one (``sglang.lang.api.gen`` checks it), xgrammar the other."""
    python_re = one_line_error(
        ip, "%%sglang\ns += 'A' + sgl.gen('x', max_tokens=2, regex='(unclosed')", capsys
    )
    assert "invalid regex '(unclosed'" in python_re
    grammar = one_line_error(ip, "%%sglang\ns += 'A' + sgl.gen('x', max_tokens=2, regex='(?=a)b')", capsys)
    assert "regex" in grammar and "Lookahead" in grammar
    assert ".cc:" not in grammar and not re.search(r"\[\d\d:\d\d:\d\d\]", grammar), grammar
    state = get_session().require().cache_state()
    assert state["running"] == 0 and state["protected"] == 0


def test_failing_function_cell_shows_its_traceback_once(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 12 item 7: the cell's error was printed by an inner run_cell, then again by the magic."""
    capsys.readouterr()
    cell = "%%sglang\n@sgl.function\ndef boom(s):\n    s += 'x'\n    1 / 0\n\nboom.run()\n"
    result = run(ip, cell)
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = capsys.readouterr().out
    assert shown.count("ZeroDivisionError") == 2  # the header and the last line of one traceback
    assert "interpreter.py" not in shown and "magics.py" not in shown  # only the cell's own frames
    # the last expression of a function cell is its result, as in a plain cell
    assert run(ip, "%%sglang\n@sgl.function\ndef g(s):\n    s += 'x'\n\n1 + 1").result == 2


def interrupt_when(condition: Any, timeout: float = 120.0) -> threading.Thread:
    """Interrupt the main thread (as the kernel's interrupt does) once ``condition()`` holds."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        _thread.interrupt_main()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_interrupt_during_generation_is_one_line(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """Interrupting the kernel mid-generation: one line; the request is aborted, the runtime serves on."""
    rt = get_session().require()
    ip.user_ns["rt_"] = rt
    for source in (
        "rt_.generate('Tell me a long story.', max_new_tokens=2000, temperature=0, ignore_eos=True)",
        # Greedy, and a prompt that goes on: a program's gen also stops at the chat template's stop
        # string (sglang's StreamExecutor._resolve_sampling_params adds it; ignore_eos does not lift
        # it), and at the DSL's default temperature 1.0 a first <|im_end|> ended it before the
        # interrupt, now and then: the cell then finished without one.
        "%%sglang\ns += 'Once upon a time' + sgl.gen('x', max_tokens=2000, ignore_eos=True, temperature=0)",
    ):
        watcher = interrupt_when(lambda: rt.cache_state()["running"] > 0)
        line = one_line_error(ip, source, capsys)
        watcher.join()
        assert line.startswith("KeyboardInterrupt: generation interrupted"), line
        state = rt.cache_state()
        assert state["running"] == 0 and state["protected"] == 0
    assert run(ip, "%%sglang -o ok\ns += 'Hello' + sgl.gen('x', max_tokens=2)").error_in_exec is None
    capsys.readouterr()
    ip.user_ns["started_"] = threading.Event()  # elsewhere, IPython's usual traceback stays
    watcher = interrupt_when(ip.user_ns["started_"].is_set)
    result = run(ip, "import time\nstarted_.set()\nwhile True:\n    time.sleep(0.05)")
    watcher.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "Traceback" in capsys.readouterr().out


def test_interrupted_program_view_says_stopped(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an interrupt the live program view is re-rendered as stopped: it no longer says the
    assistant role is "generating" (its last streamed frame did: nothing updated it after)."""
    import sgnb.notebook.program as program  # LiveState, the program cell's display callback

    shown: list[Any] = []
    widgets: list[Any] = []

    def record(widget: Any, **_: Any) -> None:  # the live ProgramLiveView: every html it pushes
        widgets.append(widget)
        shown.append(widget.html)
        widget.observe(lambda change: shown.append(change["new"]), names=["html"])

    monkeypatch.setattr(program, "display", record)
    rt = get_session().require()
    watcher = interrupt_when(lambda: rt.cache_state()["running"] > 0)
    line = one_line_error(
        ip,
        "%%sglang\ns += sgl.user('Tell a story.')\n"
        "s += sgl.assistant(sgl.gen('story', max_tokens=2000, ignore_eos=True, temperature=0))",
        capsys,
    )
    watcher.join()
    assert line.startswith("KeyboardInterrupt"), line
    assert len(shown) > 1 and "stopped: the program was interrupted" in shown[-1]
    assert len(widgets) == 1 and not widgets[0].stoppable  # the program ended: no Stop button
    # the role is either closed by then or shown as stopped, never as still generating
    assert "(generating story)" not in shown[-1]
    # the state table counts what the runtime generated (SGLang's completion_tokens of the
    # aborted request, as the token view and stats do), not one chunk less
    finished = get_session().finished[-1]
    assert f"<td>{finished.completion_tokens} tokens" in shown[-1], (finished, shown[-1])
    text = rt.tokenizer.decode(finished.output_ids)
    assert "<mark title='story'" in shown[-1] and html.escape(text.strip()[:20]) in shown[-1]


def test_chart_renders_without_matplotlib_inline(ip: InteractiveShell) -> None:
    """``stats.plot()`` in a fresh kernel: a PNG, not ``<Figure size ...>``."""
    panel = run(ip, "%sglang stats").result
    fig = panel.plot()
    formatter = ip.display_formatter.formatters["image/png"]
    enabled, formatter.enabled = formatter.enabled, True  # a terminal shell shows text/plain only
    try:
        png = formatter(fig)  # what a kernel sends; tests/test_readme.py checks it in a real one
    finally:
        formatter.enabled = enabled
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_stop_then_start_again(ip: InteractiveShell) -> None:
    assert run(ip, "%sglang stop").error_in_exec is None
    assert get_session().runtime is None
    assert "no SGLang runtime" in usage_error(ip, "%sglang stop")
    assert run(ip, "%sglang start --page-size 4").error_in_exec is None
    assert get_session().status()["page_size"] == 4
    assert run(ip, "%sglang stop").error_in_exec is None


def test_papermill_in_a_real_kernel(kernel_name: str, tmp_path: Path) -> None:
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("MAX_TOKENS = 8", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("%load_ext sgnb"),
        nbformat.v4.new_code_cell("%sglang start"),
        nbformat.v4.new_code_cell(
            "%%sglang -o st\ns += 'The capital of France is' + sgl.gen('x', max_tokens=MAX_TOKENS)"
        ),
        nbformat.v4.new_code_cell(
            "assert st.get_meta_info('x')['completion_tokens'] <= MAX_TOKENS\n%sglang status"
        ),
        nbformat.v4.new_code_cell("%sglang stop"),
    ]
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "sgnb test", "language": "python"}
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(
        str(src), str(out), kernel_name=kernel_name, parameters={"MAX_TOKENS": 6}, progress_bar=False
    )
    executed = nbformat.read(out, as_version=4)
    texts = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "runtime: local" in texts


def test_papermill_notices_usage_errors(kernel_name: str, tmp_path: Path) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext sgnb"), nbformat.v4.new_code_cell("%sglang stop")]
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "sgnb test", "language": "python"}
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(PapermillExecutionError) as failure:
        papermill.execute_notebook(
            str(tmp_path / "bad.ipynb"),
            str(tmp_path / "bad.out.ipynb"),
            kernel_name=kernel_name,
            progress_bar=False,
        )
    assert failure.value.exec_count == 2  # papermill stopped at the bad %sglang stop
    # IPython reports a UsageError as one stderr line, no traceback, and an error reply.
    cells = nbformat.read(tmp_path / "bad.out.ipynb", as_version=4).cells
    stop_cell = next(c for c in cells if c.source == "%sglang stop")
    assert [o["text"] for o in stop_cell.outputs] == [
        "UsageError: no SGLang runtime is running: %sglang start (or sgnb.get_session().start())\n"
    ]


@pytest.mark.parametrize("module", ["sgnb.tools.demo", "sgnb.widgets._static"])
def test_module_commands_show_help_without_loading_or_warning(module: str) -> None:
    """``python -m MODULE --help`` is argparse's help (exit 0, nothing on stderr): no model load,
    no runpy RuntimeWarning (the package must not import the module it runs), no traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(sgnb.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}") and done.stderr == ""
    assert "starting the bundled" not in done.stdout
