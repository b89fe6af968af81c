"""What uvloop gives: node GET and bare aiohttp GET on asyncio's loop and on uvloop.

Four servers run side by side (a node and the bare handler, each on both
loops), loaded with the same keys; wrk drives GETs at each in turn, the
order alternating between rounds. Printed: medians of requests/s and of
server CPU per request, and uvloop's gain per round (CPU per request is the
steadier figure on a shared machine: it does not count the time a server
waited for a core). Needs uvloop (``pip install -e ".[fast]"``) and wrk.

Run: ``python -m bench.event_loop [--rounds 9] [--duration 4]`` (about 2.5 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.loadgen import LoadSettings, run_load
from bench.servers import ServerProcess, bare_process, node_process, populate_node
from bench.workload import NAMESPACE
from edgekv import event_loop

LOOPS = ("asyncio", "uvloop")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it; 2 if uvloop is not installed."""
    parser = argparse.ArgumentParser(prog="python -m bench.event_loop", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=int, default=4, help="seconds of load per run")
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args(argv)
    try:
        event_loop.loop_factory("uvloop")
    except event_loop.EventLoopUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgekv-loops-") as tmp:
        work = Path(tmp)
        servers: dict[tuple[str, str], ServerProcess] = {}
        for loop in LOOPS:
            servers["node", loop] = node_process(work / loop, work / f"node-{loop}.log", loop)
            servers["bare", loop] = bare_process(args.keys, 100, work / f"bare-{loop}.log", loop)
        rps: dict[tuple[str, str], list[float]] = {name: [] for name in servers}
        cpu: dict[tuple[str, str], list[float]] = {name: [] for name in servers}
        try:
            for process in servers.values():
                process.start()
            for loop in LOOPS:
                populate_node(servers["node", loop].url, args.keys, 100)

            def settings(duration: float, seed: int) -> LoadSettings:
                return LoadSettings(duration, 64, args.keys, 100, NAMESPACE, seed=seed)

            for process in servers.values():
                run_load("wrk", process.url, "get", settings(1, -1))
            for round_index in range(args.rounds):
                order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
                for name in order:
                    before = servers[name].cpu_seconds()
                    result = run_load("wrk", servers[name].url, "get", settings(args.duration, 0))
                    rps[name].append(result.rps)
                    used = servers[name].cpu_seconds() - before
                    cpu[name].append(used / result.requests * 1e6 if result.requests else 0.0)
                print(f"round {round_index + 1}/{args.rounds}", flush=True)
        finally:
            for process in servers.values():
                process.stop()
    print(f"{'server':<16} {'req/s':>9} {'us CPU/req':>11}")
    for name in servers:
        label = f"{name[0]} {name[1]}"
        print(
            f"{label:<16} {statistics.median(rps[name]):>9,.0f} "
            f"{statistics.median(cpu[name]):>11.1f}"
        )
    for server in ("node", "bare"):
        plain, fast = (server, "asyncio"), (server, "uvloop")
        gain = statistics.median(rps[fast]) / statistics.median(rps[plain])
        per_round = [a / b for a, b in zip(cpu[plain], cpu[fast], strict=True) if b]
        print(
            f"uvloop, {server} GET: {gain:.2f}x req/s (medians); CPU per request "
            f"asyncio/uvloop per round: median {statistics.median(per_round):.2f}, "
            f"{min(per_round):.2f}-{max(per_round):.2f}"
        )
    for loop in LOOPS:
        ratio = statistics.median(rps["node", loop]) / statistics.median(rps["bare", loop])
        print(f"node GET / bare GET on {loop}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
