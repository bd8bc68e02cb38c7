"""How sgnb's magics behave inside a notebook cell, beyond parsing: comments, displays, errors.

* ``strip_comment``: ``%sglang start   # the bundled model`` reads as ``%sglang start``, the way a
  Python (or shell) reader expects a trailing comment to be read.
* ``DisplayEveryMagic``: an IPython AST transformer; a ``%sglang`` line that is not the cell's
  last statement has its result shown with ``display`` (IPython shows only the last expression),
  so a cell of five magics shows all five results.
* One-line errors: ``cell_error`` turns a wrong argument to an SGLang call into one line naming the
  cell line (with "did you mean"), ``one_line`` cleans a message (xgrammar's C++ source path and
  timestamp go),
  ``short_traceback`` keeps only the frames of the user's own cell, and ``interrupt_handler``
  reports a Ctrl-C / "interrupt kernel" that stopped a generation in one line.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import inspect
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

MAGIC_NAME = "sglang"

# xgrammar's C++ errors start with "[HH:MM:SS] /path/to/file.cc:123: " (dmlc logging).
_CPP_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\]\s+\S+\.(?:cc|cpp|h|hpp|cxx):\d+:\s*")


def strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` from a magic's line.

    A ``#`` starts a comment only outside quotes and at the start of a word (after whitespace or
    at the line's start): the rule of POSIX shells and of ``shlex`` with ``commenters="#"``. So
    ``--regex '#\\d'`` and ``http://host/#frag`` keep their ``#``.
    """
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def one_line(message: str) -> str:
    """The first meaningful line of an error message, without C++ source locations."""
    cleaned = _CPP_PREFIX.sub("", str(message))
    lines = [ln.strip() for ln in cleaned.splitlines() if ln.strip()]
    return lines[0] if lines else ""


# ---- every %sglang line shows its result ----------------------------------------------------


def show(value: Any) -> None:
    """Display a magic's result where IPython would have dropped it (None shows nothing)."""
    if value is not None:
        from IPython.display import display

        display(value)


def _is_sglang_line_magic(node: ast.stmt) -> bool:
    """``get_ipython().run_line_magic('sglang', ...)`` as a bare expression statement."""
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return False
    call = node.value
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "run_line_magic"
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value == MAGIC_NAME
    )


class DisplayEveryMagic(ast.NodeTransformer):
    """Wrap non-last top-level ``%sglang`` lines in ``sgnb.notebook.cells.show(...)``.

    IPython's ``ast_node_interactivity`` ("last_expr" by default) displays the last expression
    only; with "all" it displays every one, and then nothing is wrapped (no double display).
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if getattr(self.shell, "ast_node_interactivity", "last_expr") == "all":
            return node
        for i, stmt in enumerate(node.body[:-1]):
            if _is_sglang_line_magic(stmt):
                assert isinstance(stmt, ast.Expr)
                show = ast.Attribute(
                    value=ast.Call(
                        func=ast.Name(id="__import__", ctx=ast.Load()),
                        args=[ast.Constant("sgnb.notebook.cells")],
                        keywords=[
                            ast.keyword(arg="fromlist", value=ast.List([ast.Constant("show")], ast.Load()))
                        ],
                    ),
                    attr="show",
                    ctx=ast.Load(),
                )
                wrapped = ast.Expr(ast.Call(func=show, args=[stmt.value], keywords=[]))
                node.body[i] = ast.copy_location(wrapped, stmt)
        ast.fix_missing_locations(node)
        return node


# ---- tracebacks ---------------------------------------------------------------------------


# Frames of these packages are machinery between the user's cell and the failing call.
MACHINERY = ("sgnb", "sglang", "IPython", "threading", "concurrent", "re", "sre_compile", "sre_parse")


def user_frames(tb: TracebackType | None, filename: str) -> TracebackType | None:
    """A new traceback of the frames from ``filename`` on, minus the machinery in between.

    The frame that raised is kept whatever its package (it names the failing call).
    """
    frames: list[TracebackType] = []
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if tb.tb_frame.f_code.co_filename == filename or module not in MACHINERY or tb.tb_next is None:
            frames.append(tb)
        tb = tb.tb_next
    chain: TracebackType | None = None
    for frame_tb in reversed(frames):
        chain = TracebackType(chain, frame_tb.tb_frame, frame_tb.tb_lasti, frame_tb.tb_lineno)
    return chain


def short_traceback(shell: Any, exc: BaseException, filename: str) -> list[str]:
    """IPython's coloured traceback of ``exc``: the user's cell and own code, not sgnb/sglang's."""
    tb = user_frames(exc.__traceback__, filename)
    if tb is None:  # raised before the cell's own code ran: the message is the story
        return list(shell.InteractiveTB.get_exception_only(type(exc), exc))
    return list(shell.InteractiveTB.structured_traceback(type(exc), exc, tb))


def render_once(exc: BaseException, stb: list[str]) -> BaseException:
    """Make IPython show ``stb`` for ``exc`` (its ``_render_traceback_`` protocol), once."""
    # An exception type without a __dict__ keeps IPython's default rendering.
    with contextlib.suppress(AttributeError):
        exc._render_traceback_ = lambda: stb  # type: ignore[attr-defined]
    return exc


def _from_sglang_stack(tb: TracebackType | None) -> bool:
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        # sgnb.notebook.interrupts' SIGINT handler raises every interrupt: its frame says nothing
        if name.split(".")[0] in ("sgnb", "sglang") and name != "sgnb.notebook.interrupts":
            return True
        tb = tb.tb_next
    return False


def interrupt_handler(
    shell: Any,
    etype: type[BaseException],
    value: BaseException,
    tb: TracebackType | None,
    tb_offset: Any = None,
) -> None:
    """IPython custom-exception handler: an interrupt inside sgnb or sglang is one line.

    sgnb's runtimes abort the interrupted request and free its KV (the runtime stays usable), so
    the 40 frames through sglang's interpreter and threading say nothing a user can act on.
    Interrupts anywhere else keep IPython's usual traceback.
    """
    if _from_sglang_stack(tb):
        from sgnb.notebook.interrupts import settle

        settle(tb)  # what the message says: none of the interrupted requests runs on
        stb = [
            "KeyboardInterrupt: generation interrupted; the request was aborted and the runtime is ready "
            "for the next one"
        ]
    else:
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)


# ---- one-line errors for a cell's wrong arguments --------------------------------------------

# Errors that say an SGLang call got a wrong argument (sgl.gen's regex check raises re.error):
# the message is the whole story.
ARGUMENT_ERRORS = (TypeError, ValueError, re.error)


def cell_line(exc: BaseException, filename: str, offset: int) -> int | None:
    """The line of the cell (1-based) where ``exc`` passed last; ``offset``: lines sgnb added."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno - offset
        tb = tb.tb_next
    return line


def did_you_mean(message: str) -> str:
    """' (did you mean 'regex'?)' for "gen() got an unexpected keyword argument 'regexx'"."""
    found = re.search(r"(\w+)\(\) got an unexpected keyword argument '(\w+)'", message)
    if not found:
        return ""
    import sglang as sgl

    func = getattr(sgl, found.group(1), None)
    try:
        names = list(inspect.signature(func).parameters) if func is not None else []
    except (TypeError, ValueError):
        names = []
    close = difflib.get_close_matches(found.group(2), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cell_error(shell: Any, exc: BaseException, filename: str, offset: int) -> BaseException:
    """``exc``, set to show once: one line for a wrong argument, else the cell's own frames."""
    if isinstance(exc, ARGUMENT_ERRORS):
        line = cell_line(exc, filename, offset)
        where = f"line {line} of the cell: " if line is not None else ""
        message = one_line(str(exc)) or type(exc).__name__
        if isinstance(exc, re.error):  # sgl.gen checks a regex with Python's re first
            kind, message = "ValueError", f"invalid regex {exc.pattern!r}: {message}"
        else:
            kind = type(exc).__name__
        return render_once(exc, [f"{kind}: {where}{message}{did_you_mean(message)}"])
    return render_once(exc, short_traceback(shell, exc, filename))


def install(shell: Any) -> None:
    """Register the AST transformer and the interrupt handlers once per shell (idempotent)."""
    from sgnb.notebook import interrupts

    interrupts.install(shell)
    if not any(isinstance(t, DisplayEveryMagic) for t in shell.ast_transformers):
        shell.ast_transformers.append(DisplayEveryMagic(shell))
    # Only when nobody else has a custom handler: IPython allows one for the whole shell.
    if not shell.custom_exceptions or shell.custom_exceptions == (KeyboardInterrupt,):
        handler: Callable[..., None] = interrupt_handler
        shell.set_custom_exc((KeyboardInterrupt,), handler)


__all__ = [
    "DisplayEveryMagic",
    "cell_error",
    "install",
    "interrupt_handler",
    "one_line",
    "render_once",
    "short_traceback",
    "show",
    "strip_comment",
]
