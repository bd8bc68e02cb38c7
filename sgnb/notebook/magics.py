"""``%sglang`` and ``%%sglang``: thin sugar over :mod:`sgnb.notebook.session` and the runtimes.

Every subcommand parses its line with ``magic_arguments`` (``%sglang?`` shows the help), calls
the Python API, and displays the result. Bad input raises ``UsageError``: one line, no
traceback, and a red cell that papermill and nbval notice.
"""

from __future__ import annotations

import ast
import time
import warnings
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Int, Unicode

from sgnb.notebook import cells, program, views
from sgnb.notebook.labels import started_line
from sgnb.notebook.session import NoRuntimeError, SessionError, get_session
from sgnb.runtimes import options as start_options
from sgnb.runtimes.factory import choose_runtime, import_runtime

# The one list of subcommands: the parser's choices, its usage line and the invalid-choice error
# all come from it (``cluster`` is parsed by sgnb.notebook.cluster_magic, but listed here too).
COMMANDS = (
    "start",
    "stop",
    "status",
    "connect",
    "flush",
    "tree",
    "stats",
    "tokens",
    "bench",
    "serve",
    "cluster",
)
HELP_FLAGS = ("--help", "-h")


def wants_help(line: str) -> bool:
    """Whether a magic's line asks for help (``--help``/``-h`` as a word, anywhere on it)."""
    return any(word in HELP_FLAGS for word in line.split())


def no_abbreviations(magic: Any) -> None:
    """Make ``magic``'s parser refuse abbreviated long options (``--max-total-token``).

    argparse accepts any unique prefix by default, so a misspelt flag that is a prefix of a real
    one was silently taken. ``MagicArgumentParser`` does not pass ``allow_abbrev`` on, so it is
    set on the built parser (argparse reads it at parse time).
    """
    magic.parser.allow_abbrev = False


def table_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """``@argument`` for every start option of :data:`sgnb.runtimes.options.OPTIONS`, in its order."""
    for flags, keywords in reversed(start_options.argument_specs()):
        func = argument(*flags, **keywords)(func)
    return func


@magics_class
class SGLangMagics(Magics):
    """Start SGLang runtimes and run SGLang programs in notebook cells."""

    default_model = Unicode("bundled", help="model for %sglang start: 'bundled', a folder or a hub id").tag(
        config=True
    )
    default_runtime = Unicode("auto", help="local, engine, auto (engine on a CUDA GPU) or a server URL").tag(
        config=True
    )
    max_total_tokens = Int(
        0, help="KV-cache budget in tokens for %sglang start (0: the runtime's default)"
    ).tag(config=True)
    stream = Bool(True, help="stream %%sglang program output while it runs").tag(config=True)
    show = Unicode("", help="live views for %%sglang cells, e.g. 'tree,cache'").tag(config=True)

    # ---- %sglang ---------------------------------------------------------------------------

    @magic_arguments()
    @argument("command", choices=COMMANDS, help="what to do: " + ", ".join(COMMANDS))
    @argument("target", nargs="?", default=None, help="the server URL, for connect; 'stop' for serve")
    @argument("--port", type=int, default=None, help="port for serve (default: a free one)")
    @argument("--model", "-m", default=None, help="'bundled' (SmolLM2-135M-Instruct), a folder or a hub id")
    @argument("--runtime", "-r", default=None, help="local | engine | auto | a server URL")
    @table_arguments
    @argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sglang.Engine argument, e.g. --engine-arg load_format=dummy (repeatable)",
    )
    @argument("--api-key", default=None, help="API key for connect")
    @argument("--timeout", type=float, default=60.0, help="seconds to wait for a server to be ready")
    @line_magic
    def sglang(self, line: str) -> Any:
        """Control the notebook's SGLang runtime.

        %sglang start [--model M] [--runtime local|engine|URL] [options]
        %sglang connect http://127.0.0.1:30000 [--api-key K]
        %sglang status | stats | tree | tokens | flush | bench | stop
        %sglang serve [--port N] [--model M] ...   (SGLang's HTTP API on 127.0.0.1; `%sglang serve stop`)
        %sglang cluster start --workers 2 --policy cache_aware | status | kill N | stop   (sgnb.cluster)
        """
        line = cells.strip_comment(line)
        command, _, rest = line.strip().partition(" ")
        if command == "cluster":  # its own flags: sgnb.notebook.cluster_magic
            from sgnb.notebook.cluster_magic import parser, run

            if wants_help(rest):
                print(parser().format_help())
                return None
            try:
                return run(rest)
            except (ValueError, SessionError) as exc:
                raise UsageError(cells.one_line(str(exc)) or type(exc).__name__) from None
        if wants_help(line):  # `%sglang start --help`: the help `%sglang?` shows, not an error
            print(subcommand_help(command))
            return None
        args = parse_argstring(self.sglang, line)
        try:
            return getattr(self, f"_{args.command}")(args)
        except (ValueError, SessionError) as exc:
            raise UsageError(cells.one_line(str(exc)) or type(exc).__name__) from None

    def _options(self, args: Any, kind: str) -> dict[str, Any]:
        """The start options on the line (and the configured KV budget), checked for ``kind``."""
        options = start_options.given(args)
        if "max_total_tokens" not in options and self.max_total_tokens and kind != "remote":
            options["max_total_tokens"] = self.max_total_tokens
        if args.engine_arg:
            if kind != "engine":
                raise ValueError(f"--engine-arg applies to the engine runtime only, not {kind}")
            options.update(start_options.engine_args(args.engine_arg))
        return start_options.check(kind, options)

    def _start(self, args: Any) -> None:
        runtime = args.runtime or args.target or self.default_runtime
        kind, _ = choose_runtime(runtime)
        options = self._options(args, kind)
        session = get_session()
        session.require_stopped()
        # Start-up takes seconds (minutes for an Engine): show what it is doing, and say after
        # where the time went (imports of torch/transformers/sglang vs loading the model).
        steps: dict[str, float] = {}
        bar = views.ProgressLine("%sglang start", ticking=True)
        try:
            started = time.perf_counter()
            bar.stage("importing PyTorch, transformers and SGLang")
            import_runtime(kind)
            steps["imports"] = time.perf_counter() - started
            bar.stage(
                f"loading {args.model or self.default_model}"
                if kind != "remote"
                else f"connecting to {runtime}"
            )
            if kind == "remote":
                session.connect(runtime, api_key=args.api_key, timeout=args.timeout)
            else:
                session.start(args.model or self.default_model, runtime, **options)
            rest = time.perf_counter() - started - steps["imports"]
        finally:
            bar.remove()
        status = session.status()
        load = status.get("load_time_s")
        if kind != "remote" and isinstance(load, int | float):
            # One measure of the model load: the runtime's own load_time (what `%sglang status`
            # shows); the rest is the session attaching (tree mirror, sglang's default backend).
            steps["model load"] = float(load)
            steps["session setup"] = max(rest - float(load), 0.0)
        else:
            steps["model load" if kind != "remote" else "connect"] = rest
        print(started_line(status, steps))

    def _connect(self, args: Any) -> None:
        if not args.target:
            raise ValueError("usage: %sglang connect URL")
        get_session().connect(args.target, api_key=args.api_key, timeout=args.timeout)
        print(started_line(get_session().status()))

    def _stop(self, args: Any) -> None:
        session = get_session()
        kind = session.require().kind
        session.stop()
        print(f"stopped the {kind} runtime")

    def _status(self, args: Any) -> Any:
        return views.StatusView(get_session().status())

    def _flush(self, args: Any) -> None:
        get_session().require().flush_cache()
        print("radix cache flushed")

    def _tree(self, args: Any) -> Any:
        get_session().require()
        return views.tree_view(get_session())

    def _stats(self, args: Any) -> Any:
        get_session().require()
        return views.stats_view(get_session())

    def _tokens(self, args: Any) -> Any:
        return views.tokens_view(get_session())

    def _serve(self, args: Any) -> None:
        session = get_session()
        if args.target == "stop":
            stopped = session.stop_servers()
            print(f"stopped {stopped} server(s)")
            return
        if args.target is not None:
            raise ValueError("usage: %sglang serve [--port N] [options] | %sglang serve stop")
        options = self._options(args, "local")  # sgnb serve runs the local runtime
        flags = ["--model", args.model or self.default_model, *start_options.to_flags(options)]
        url = session.serve(flags, port=args.port)
        print(f"sgnb serve is up at {url} (SGLang's /generate, /health, OpenAI /v1, /metrics)")
        print(f"connect a notebook: %sglang connect {url}    stop it: %sglang serve stop")

    def _bench(self, args: Any) -> Any:
        from sgnb.bench.run import quick_bench

        rt = get_session().require()
        bar = views.ProgressLine("sgnb bench")
        try:
            figures = quick_bench(rt, progress=bar.update)
        finally:
            bar.remove()  # no leftover bar above the table
        return views.BenchView(figures)

    # ---- %%sglang --------------------------------------------------------------------------

    @magic_arguments(name="%sglang")  # the usage line reads %%sglang, not %sglang_cell
    @argument("-o", "--output", default=None, help="store the program state in this variable")
    @argument("--show", default=None, help="live views: tree, cache, constrained, tokens (comma-separated)")
    @argument("--no-stream", action="store_true", help="show the result only when the program ends")
    @argument("--temperature", type=float, default=None, help="default temperature for gen calls")
    @argument("--max-tokens", type=int, default=None, help="default max_tokens for gen calls")
    @cell_magic("sglang")  # type: ignore[arg-type]
    def sglang_cell(self, line: str, cell: str) -> Any:
        """Run SGLang frontend code against the session's runtime.

        A cell that defines ``@sgl.function`` programs runs as plain Python, with ``sgl`` imported
        and the runtime as the default backend; its last expression is the cell's result. Any
        other cell is the body of a one-off program with ``s`` bound; its state is shown
        (streaming) and stored in ``-o NAME`` (or ``_state``).

        Errors: a wrong argument to an SGLang call (``sgl.gen(..., regexx=...)``, an invalid
        regex) is one line naming the cell line; other errors show the cell's own frames only.
        """
        if wants_help(cells.strip_comment(line)):
            print(self.sglang_cell.parser.format_help())
            return None
        args = parse_argstring(self.sglang_cell, cells.strip_comment(line))
        session = get_session()
        try:
            session.require()
        except NoRuntimeError as exc:
            raise UsageError(str(exc)) from None
        import sglang as sgl

        self.shell.user_ns.setdefault("sgl", sgl)  # type: ignore[union-attr]
        shows = [v.strip() for v in (args.show or self.show).split(",") if v.strip()]
        unknown = set(shows) - set(views.LIVE_VIEWS)
        if unknown:
            raise UsageError(
                f"unknown view(s) {', '.join(sorted(unknown))}; choose from {', '.join(views.LIVE_VIEWS)}"
            )
        live = views.live_views(session, shows)
        # SGLang's executor thread also warns with the whole traceback of a failed call; the cell
        # raises that error itself (once, short), so the warning would only repeat it.
        state = None
        shown = program.LiveState()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Error in stream_executor")
            try:
                if program.defines_programs(self.shell.transform_cell(cell)):  # type: ignore[union-attr]
                    return self._run_python(cell)
                state = self._run_program(cell, args, shown)
                self.shell.user_ns[args.output or "_state"] = state  # type: ignore[union-attr]
            except KeyboardInterrupt:
                program.abort_requests(session.runtime)
                shown.stop()  # the view must not go on saying "generating"
                raise  # sgnb.notebook.cells.interrupt_handler reports it in one line
            finally:
                views.finish_views(live, state)
        return None

    def _run_python(self, cell: str) -> Any:
        """Run a cell of plain Python (with IPython syntax) in the user's namespace.

        Not ``shell.run_cell``: that shows a failure's traceback itself, and the magic's own
        re-raise then showed it a second time. Here an error is raised once, showing only the
        cell's frames; the last expression's value is returned, so IPython shows it as the
        cell's result.
        """
        shell: Any = self.shell
        source = shell.transform_cell(cell)
        filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        try:
            tree = shell.transform_ast(ast.parse(source, filename=filename))
        except SyntaxError as exc:
            raise UsageError(f"syntax error in the cell, line {exc.lineno}: {exc.msg}") from None
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        namespace = shell.user_ns
        try:
            exec(compile(tree, filename, "exec"), shell.user_global_ns, namespace)
            if last is not None:
                expression = ast.fix_missing_locations(ast.Expression(last.value))
                return eval(compile(expression, filename, "eval"), shell.user_global_ns, namespace)
        except Exception as exc:
            raise cells.cell_error(shell, exc, filename, offset=0) from None
        return None

    def _run_program(self, cell: str, args: Any, on_update: program.LiveState) -> Any:
        """:func:`sgnb.notebook.program.run_program`, shown live; its errors as one line naming the cell line."""
        shell: Any = self.shell
        filename = shell.compile.cache(program.program_source(cell), shell.execution_count)
        try:
            return program.run_program(
                cell,
                shell.user_ns,
                stream=self.stream and not args.no_stream,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                on_update=on_update,
                filename=filename,
            )
        except program.ProgramSyntaxError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:
            raise cells.cell_error(shell, exc, filename, offset=program.BODY_OFFSET) from None


# `%sglang?` shows the cell magic's options too: a newcomer asks the line magic first.
SGLangMagics.sglang.__doc__ = (
    f"{SGLangMagics.sglang.__doc__}\n\nThe cell magic, %%sglang (see also %%sglang?):\n\n"
    f"{SGLangMagics.sglang_cell.__doc__}"
)


no_abbreviations(SGLangMagics.sglang)
no_abbreviations(SGLangMagics.sglang_cell)


def subcommand_help(command: str) -> str:
    """The help for ``%sglang COMMAND --help``: the docstring's lines for it, then every option."""
    doc = SGLangMagics.sglang.parser.format_help()
    lines = [ln.strip() for ln in (SGLangMagics.sglang.__doc__ or "").splitlines()]
    mine = [
        ln
        for ln in lines
        if ln.startswith(f"%sglang {command}")
        or (f"| {command}" in ln and not ln.startswith("%sglang cluster"))
    ]
    return "\n".join([*mine, "", doc]) if command in COMMANDS and mine else doc


def load(ipython: Any) -> None:
    """Register the magics, the display-every-magic transformer and the interrupt handler (idempotent)."""
    ipython.register_magics(SGLangMagics)
    cells.install(ipython)
