"""``%sglang cluster start|status|kill|stop``: sugar over :func:`sgnb.cluster`.

``start`` starts the workers and SGLang's router and connects the session through the router, so
``%%sglang`` cells, ``%sglang stats`` and ``%sglang tree`` run on the cluster; ``status`` shows
the trees side by side with each worker's figures; ``kill N`` kills worker N (to watch the router
drop it); ``stop`` disconnects the session and stops every process (checked by PID).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from sgnb.scaleout.procs import POLICIES

_cluster: Any = None  # the kernel's cluster (one at a time, like the session's runtime)

USAGE = (
    "usage: %sglang cluster start [--workers N] [--policy P] [--model M] [--runtime local|engine|auto] "
    "[--max-total-tokens N] [--threads N] [--router-arg '--flag value'] [--worker-arg '--flag value'] "
    "| status | kill N | stop"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # a one-line ValueError, not SystemExit
        raise ValueError(f"{message}; {USAGE}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%sglang cluster", add_help=False, allow_abbrev=False)
    p.add_argument("action", choices=("start", "status", "kill", "stop"))
    p.add_argument("target", nargs="?", type=int, default=None, help="the worker to kill")
    p.add_argument("--workers", "-n", type=int, default=2)
    p.add_argument("--policy", default="cache_aware", choices=POLICIES)
    p.add_argument("--model", "-m", default="bundled")
    p.add_argument("--runtime", "-r", default="auto")
    p.add_argument("--max-total-tokens", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument(
        "--router-arg", action="append", default=[], help="router flags, e.g. '--cache-threshold 0.5'"
    )
    p.add_argument("--worker-arg", action="append", default=[], help="worker flags, e.g. '--page-size 16'")
    return p


def current() -> Any:
    """The kernel's running cluster, or None."""
    return _cluster


def run(line: str) -> Any:
    """Handle ``%sglang cluster ...`` (``line`` without the leading ``cluster``). ValueError on bad input."""
    from sgnb.notebook.session import AlreadyRunningError, get_session

    args = parser().parse_args(shlex.split(line))
    session = get_session()
    global _cluster
    if args.action == "start":
        if _cluster is not None:
            raise AlreadyRunningError("a cluster is already running: %sglang cluster stop first")
        if session.runtime is not None:
            raise AlreadyRunningError(
                f"a {session.runtime.kind} runtime is already running; %sglang stop first"
            )
        from sgnb.scaleout.core import cluster

        router_args = [a for item in args.router_arg for a in shlex.split(item)]
        worker_args = [a for item in args.worker_arg for a in shlex.split(item)]
        print(f"starting {args.workers} worker(s) and sglang-router ({args.policy}) ...", flush=True)
        c = cluster(
            args.workers,
            args.policy,
            args.model,
            args.runtime,
            max_total_tokens=args.max_total_tokens,
            threads=args.threads,
            router_args=router_args,
            worker_args=worker_args,
            timeout=args.timeout,
        )
        _cluster = c
        # The session's runtime is the cluster's (tagged) remote runtime, through the router.
        session._attach(
            c.runtime, f"a cluster of {args.workers} workers behind sglang-router ({args.policy})"
        )
        return c.view()
    if _cluster is None:
        raise ValueError("no cluster is running: %sglang cluster start")
    if args.action == "status":
        return _cluster.view()
    if args.action == "kill":
        if args.target is None or not 0 <= args.target < _cluster.n:
            raise ValueError(f"usage: %sglang cluster kill N, with 0 <= N < {_cluster.n}")
        _cluster.kill_worker(args.target)
        print(f"killed worker {args.target} (SIGKILL); the router's health check drops it")
        return None
    c, _cluster = _cluster, None
    if session.runtime is not None and session.runtime is c._runtime:
        session.stop()
    pids = c.pids()
    c.stop()
    print(f"stopped the router and {c.n} worker(s); none of their {len(pids)} processes is left")
    return None
