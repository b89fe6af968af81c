"""``python -m jepsen_like run ...``: a fault-injection run; ``check DIR`` re-checks a saved one.

Example::

    python -m jepsen_like run --nodes 5 --time-limit 60 --workload all \\
        --nemesis all --seed 7 --out runs/7
    python -m jepsen_like run --nodes 6 --topology regions --regions 2 \\
        --nemesis partition,kill,region,backbone --time-limit 300 --out runs/regions

Exits 0 only when every checker passes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from jepsen_like.history import load
from jepsen_like.nemesis import parse_nemeses
from jepsen_like.runner import RunOptions, command_line, run
from jepsen_like.workloads import WORKLOADS, parse_workloads


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run or re-check."""
    parser = argparse.ArgumentParser(
        prog="python -m jepsen_like",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", help="start a cluster, inject faults, check the history")
    go.add_argument("--nodes", type=int, default=5)
    go.add_argument("--time-limit", type=float, default=60.0, help="seconds of client load")
    go.add_argument(
        "--workload",
        default="set,register",
        help=f"comma-separated: {', '.join(WORKLOADS)}, or all",
    )
    go.add_argument(
        "--nemesis",
        default="partition,kill",
        help="comma-separated: partition, kill, pause, clock, upstream, region, backbone "
        "(the last two with --topology regions); all; none",
    )
    go.add_argument(
        "--topology",
        choices=("mesh", "regions"),
        default="mesh",
        help="mesh: every node pulls from every other; regions: nodes in --regions regions "
        "of the WAN model (latency proxies), peer links within a region, a NATS JetStream "
        "backbone between them",
    )
    go.add_argument("--regions", type=int, default=2, help="regions of --topology regions")
    go.add_argument("--seed", type=int, default=0)
    go.add_argument("--out", type=Path, required=True, help="directory for history and reports")
    go.add_argument(
        "--broken-merge",
        action="store_true",
        help="start nodes with the test-only broken merge (the run must fail)",
    )
    go.add_argument("--recovery-timeout", type=float, default=90.0)
    go.add_argument(
        "--tombstone-horizon",
        type=float,
        default=None,
        help="override the nodes' tombstone_horizon (default: longer than any fault)",
    )
    go.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra `edgekv serve` flag for every node, e.g. --node-arg=--read-cache-entries=0",
    )
    go.add_argument(
        "--no-auth",
        action="store_true",
        help="start nodes without tokens or a cluster secret (the trusting loopback "
        "configuration); by default every node has tokens and a cluster secret",
    )
    again = commands.add_parser("check", help="re-check the history of a finished run")
    again.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return _recheck(args.out)
    try:
        options = RunOptions(
            out=args.out,
            nodes=args.nodes,
            time_limit=args.time_limit,
            workloads=parse_workloads(args.workload),
            nemeses=parse_nemeses(args.nemesis),
            seed=args.seed,
            broken_merge=args.broken_merge,
            recovery_timeout=args.recovery_timeout,
            tombstone_horizon=args.tombstone_horizon,
            node_args=tuple(args.node_arg),
            secure=not args.no_auth,
            topology=args.topology,
            regions=args.regions,
            command=command_line(),
        )
    except ValueError as exc:
        parser.error(str(exc))
    results = run(options)
    _print_summary(results)
    print(f"report: {args.out / 'report.html'}")
    return 0 if results["valid"] else 1


def _recheck(out: Path) -> int:
    ops = load(out / "history.jsonl")
    finals = json.loads((out / "final.json").read_text())
    valid = True
    for name, final in finals.items():
        result = WORKLOADS[name]().check([op for op in ops if op.get("workload") == name], final)
        print(f"{name}: valid={result['valid']}")
        valid = valid and result["valid"] is True
    return 0 if valid else 1


def _print_summary(results: dict[str, object]) -> None:
    checkers = results["checkers"]
    assert isinstance(checkers, dict)
    for name, result in checkers.items():
        brief = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
        print(f"{name}: {json.dumps(brief, sort_keys=True)}")
    print(f"convergence after heal: {json.dumps(results['convergence_after_heal']['seconds'])}")  # type: ignore[index]
    print("VALID" if results["valid"] else "INVALID")


if __name__ == "__main__":
    sys.exit(main())
