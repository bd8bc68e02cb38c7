"""``python -m sgnb.bench --workload router --json``: the router's policies on a multi-tenant workload.

Starts two ``sgnb serve`` workers (each with a KV budget of ``--budget`` tokens, about half the
tenants' prefixes) behind SGLang's real router, replays the workload of
:mod:`sgnb.scaleout.compare` under ``round_robin``, ``power_of_two`` and ``cache_aware`` in one run,
and prints ``{policy}_cached_fraction``, ``{policy}_ttft_s`` and ``{policy}_tok_s`` per policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

BUDGET = 1800  # KV tokens per worker: 5 of the 7 tenants' ~360-token prefixes, not all 7


def run(
    model: str = "bundled",
    workers: int = 2,
    budget: int = BUDGET,
    quick: bool = False,
    runtime: str = "auto",
    order: str = "rounds",
) -> dict[str, Any]:
    from sgnb.scaleout import cluster
    from sgnb.scaleout.compare import Workload, compare_policies, flat

    workload = Workload(requests_per_tenant=3 if quick else 5, order=order)
    c = cluster(workers, "round_robin", model, runtime, max_total_tokens=budget)
    try:
        results = compare_policies(c, workload=workload)
    finally:
        c.stop()
    return {
        **flat(results),
        "workers": workers,
        "kv_budget_tokens_per_worker": budget,
        "workload": asdict(workload),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sgnb.bench --workload router", description=__doc__)
    parser.add_argument("--workload", choices=["router"], default="router")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--runtime", default="auto", help="local (sgnb serve workers) | engine (GPUs) | auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=int, default=BUDGET, help="KV tokens per worker (max_total_tokens)")
    parser.add_argument("--quick", action="store_true", help="3 requests per tenant instead of 5")
    parser.add_argument(
        "--order", choices=["rounds", "shuffled"], default="rounds", help="how the tenants' users interleave"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = run(args.model, args.workers, args.budget, args.quick, args.runtime, args.order)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:>36}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
