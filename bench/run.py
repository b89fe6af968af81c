"""Orchestration: start the servers, run interleaved rounds, print the ratios, save JSON.

Why rounds, interleaved: on a small shared machine throughput drifts (CPU
frequency, page cache, the host's other tenants). Measuring node, bare
aiohttp and raw sqlite3 one after another, several times, alternating the
order, and taking each one's median, lets drift hit all of them alike, so the
ratios -- the figures the targets are about -- stay honest even when the
absolute numbers move.

The run says FAIL when any 5xx was answered under load (exit status 1), and
reports every other non-2xx answer and socket error next to it. Missing a
throughput target is reported, and with ``--strict`` also fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import local_reads
from bench.loadgen import (
    WRK_INSTALL_COMMAND,
    LoadgenError,
    LoadResult,
    LoadSettings,
    Mode,
    run_load,
    wrk_path,
    wrk_version,
)
from bench.servers import (
    ServerError,
    ServerProcess,
    bare_process,
    check_same_bytes,
    node_process,
    populate_node,
    steal_ticks,
)
from bench.sqlite_baseline import BATCH_SIZE, OpsResult, SqliteBaseline
from bench.workload import NAMESPACE
from edgekv import event_loop

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The targets of issue 22 (the first round had 0.75 and 0.50).
TARGET_GET_VS_BARE = 0.95
TARGET_PUT_VS_GET = 0.60

# A load generator above this share of a core may be what limits the rate.
LOADGEN_CPU_WARNING = 0.8
# Above this share of CPU time taken by the hypervisor, the run says its figures are noisy.
STEAL_WARNING = 0.05

HTTP_RUNS: dict[str, tuple[str, Mode, str]] = {
    # name: (server, mode, label)
    "bare_get": ("bare", "get", "bare aiohttp GET"),
    "node_get": ("node", "get", "node GET"),
    "node_put": ("node", "put", "node PUT (ack after commit)"),
}
SQLITE_RUNS: dict[str, str] = {
    "sqlite_read": "sqlite3 point read",
    "sqlite_write": "sqlite3 write, 1 commit each",
    "sqlite_batch": f"sqlite3 write, {BATCH_SIZE} per commit",
}


@dataclass
class HttpSample:
    """One load run and the CPU the server used during it."""

    load: LoadResult
    server_cpu_s: float
    steal_share: float

    @property
    def server_cpu_share(self) -> float:
        """Server CPU time over wall time (1.0 = one core busy)."""
        return self.server_cpu_s / self.load.duration_s if self.load.duration_s else 0.0

    @property
    def server_us_per_request(self) -> float:
        """Server CPU time per completed request, in microseconds."""
        return self.server_cpu_s / self.load.requests * 1e6 if self.load.requests else 0.0

    @property
    def loadgen_cpu_share(self) -> float:
        """Load-generator CPU time over wall time."""
        return self.load.loadgen_cpu_s / self.load.duration_s if self.load.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            **self.load.as_dict(),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_share": self.server_cpu_share,
            "server_us_per_request": self.server_us_per_request,
            "loadgen_cpu_share": self.loadgen_cpu_share,
            "steal_share": self.steal_share,
        }


@dataclass
class Results:
    """Every sample of every round."""

    http: dict[str, list[HttpSample]] = field(default_factory=dict)
    sqlite: dict[str, list[OpsResult]] = field(default_factory=dict)

    def rates(self, name: str) -> list[float]:
        """Requests (or rows) per second of each round."""
        if name in self.http:
            return [s.load.rps for s in self.http[name]]
        return [s.ops_per_s for s in self.sqlite[name]]

    def costs(self, name: str) -> list[float]:
        """Server CPU microseconds per request of each round."""
        return [s.server_us_per_request for s in self.http[name]]

    def median_rate(self, name: str) -> float:
        """Median over rounds of requests (or rows) per second."""
        return statistics.median(self.rates(name))

    def median_of(self, name: str, attribute: str) -> float:
        """Median over rounds of one field of the samples of ``name``."""
        samples: list[Any] = self.http.get(name) or self.sqlite.get(name) or []
        values = [getattr(s.load if isinstance(s, HttpSample) else s, attribute) for s in samples]
        return statistics.median(values) if values else float("nan")

    def total(self, name: str, attribute: str) -> int:
        """Sum over rounds of one counter of the HTTP samples of ``name``."""
        return sum(int(getattr(s.load, attribute)) for s in self.http.get(name, []))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark an EdgeKV node against bare aiohttp and raw sqlite3.",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=None,
        help="seconds of load per HTTP measurement (default 6; 2 with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of every measurement, median reported (default 5; 3 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of 2 s runs: about 30 s in all"
    )
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--keys", type=int, default=10_000, help="pre-populated keys")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument(
        "--loadgen",
        choices=("wrk", "python"),
        default="wrk",
        help="load generator: wrk (default) or the weaker pure-Python one",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of both servers (the node's event_loop setting; auto: uvloop if "
        "installed)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON result file (default bench/results/bench-<time>.json)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where databases and server logs go (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="also exit 1 when a throughput target is missed"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2 if args.quick else 6
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.keys < 1:
        parser.error("--duration, --rounds, --connections and --keys must be at least 1")
    return args


def source_version() -> str:
    """The commit of the code measured, with ``+dirty`` if ``edgekv/`` has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edgekv", "replication", "client"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version(),
    }


@contextlib.contextmanager
def work_directory(requested: Path | None) -> Iterator[Path]:
    """The given directory (kept), or a temporary one (removed afterwards)."""
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    path = Path(tempfile.mkdtemp(prefix="edgekv-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure_http(
    server: ServerProcess, mode: Mode, settings: LoadSettings, loadgen: str
) -> HttpSample:
    """Run the load generator against ``server`` and account for the server's CPU."""
    before, (steal_before, total_before) = server.cpu_seconds(), steal_ticks()
    load = run_load(loadgen, server.url, mode, settings)
    steal_after, total_after = steal_ticks()
    total = total_after - total_before
    steal = (steal_after - steal_before) / total if total > 0 else 0.0
    return HttpSample(load, server.cpu_seconds() - before, steal)


def describe_http(label: str, sample: HttpSample) -> str:
    """One progress line."""
    load = sample.load
    return (
        f"{label:<30} {load.rps:>10,.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
        f"p99 {load.p99_ms:6.2f} ms  non-2xx {load.non_2xx}  5xx {load.status_5xx}  "
        f"CPU server {sample.server_cpu_share:.2f} ({sample.server_us_per_request:.0f} us/req) "
        f"loadgen {sample.loadgen_cpu_share:.2f}  "
        f"steal {sample.steal_share:3.0%}"
    )


def run_rounds(
    args: argparse.Namespace, servers: dict[str, ServerProcess], baseline: SqliteBaseline
) -> Results:
    """Warm up, then run every measurement ``args.rounds`` times, alternating the order."""
    results = Results()

    def settings(duration: float, round_index: int) -> LoadSettings:
        return LoadSettings(
            duration=duration,
            connections=args.connections,
            keys=args.keys,
            value_size=args.value_size,
            namespace=NAMESPACE,
            seed=args.seed + round_index,
        )

    print("warm-up ...", flush=True)
    for server, mode, _label in HTTP_RUNS.values():
        run_load(args.loadgen, servers[server].url, mode, settings(1, -1))
    baseline.reads(0.2)

    sqlite_duration = max(0.5, args.duration / 10)
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        names = list(HTTP_RUNS)
        if round_index % 2:
            names.reverse()
        for name in names:
            server, mode, label = HTTP_RUNS[name]
            sample = measure_http(
                servers[server], mode, settings(args.duration, round_index), args.loadgen
            )
            results.http.setdefault(name, []).append(sample)
            print("  " + describe_http(label, sample), flush=True)
        measured = {
            "sqlite_read": baseline.reads(sqlite_duration),
            "sqlite_write": baseline.writes(2 * sqlite_duration),
            "sqlite_batch": baseline.writes(sqlite_duration, batch=BATCH_SIZE),
        }
        for name, result in measured.items():
            results.sqlite.setdefault(name, []).append(result)
            print(
                f"  {SQLITE_RUNS[name]:<30} {result.ops_per_s:>10,.0f} ops/s  "
                f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms",
                flush=True,
            )
    return results


@dataclass(frozen=True)
class Ratio:
    """One ratio of medians, its per-round values, and its target if it has one."""

    name: str
    value: float
    per_round: list[float]
    target: float | None

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: reference only)."""
        return None if self.target is None else self.value >= self.target


# (label, numerator, denominator, target): every ratio the benchmark prints.
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("node GET / bare aiohttp GET", "node_get", "bare_get", TARGET_GET_VS_BARE),
    ("node PUT / node GET", "node_put", "node_get", TARGET_PUT_VS_GET),
    ("node GET / sqlite3 point read", "node_get", "sqlite_read", None),
    ("node PUT / sqlite3 1-commit write", "node_put", "sqlite_write", None),
    (f"node PUT / sqlite3 {BATCH_SIZE}-per-commit write", "node_put", "sqlite_batch", None),
]
# The same comparisons by server CPU per request: what the ratio would be were both servers
# kept 100% busy. It does not move with idle gaps the machine puts in a run (steal, wake-ups).
CPU_RATIOS: list[tuple[str, str, str]] = [
    ("node GET / bare GET, by CPU per request", "node_get", "bare_get"),
    ("node PUT / node GET, by CPU per request", "node_put", "node_get"),
]


def ratios(results: Results) -> list[Ratio]:
    """The ratios of medians; the per-round ratios show how much they moved."""
    computed = []
    for label, numerator, denominator, target in RATIOS:
        top, bottom = results.rates(numerator), results.rates(denominator)
        per_round = [a / b for a, b in zip(top, bottom, strict=True) if b]
        value = results.median_rate(numerator) / results.median_rate(denominator)
        computed.append(Ratio(label, value, per_round, target))
    for label, numerator, denominator in CPU_RATIOS:
        top, bottom = results.costs(numerator), results.costs(denominator)
        per_round = [b / a for a, b in zip(top, bottom, strict=True) if a]
        value = statistics.median(bottom) / statistics.median(top)
        computed.append(Ratio(label, value, per_round, None))
    return computed


def report(results: Results, rounds: int) -> list[str]:
    """The table of medians."""
    width = 44
    lines = [
        f"Medians of {rounds} round(s). HTTP: requests/s, latency per request, server CPU "
        "(cores, and microseconds per request), load-generator CPU (cores), host CPU steal.",
        "sqlite3: rows/s, latency per statement (per commit when batched).",
        "",
        f"{'measurement':<{width}} {'rate/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
        f"{'5xx':>4} {'sockerr':>7} {'server':>6} {'us/req':>6} {'loadgen':>7} {'steal':>5}",
    ]
    for name, (_server, _mode, label) in HTTP_RUNS.items():
        samples = results.http[name]
        lines.append(
            f"{label + ' (HTTP)':<{width}} {results.median_rate(name):>9,.0f} "
            f"{results.median_of(name, 'p50_ms'):>7.2f} {results.median_of(name, 'p99_ms'):>7.2f} "
            f"{results.total(name, 'non_2xx'):>7} {results.total(name, 'status_5xx'):>4} "
            f"{results.total(name, 'socket_errors'):>7} "
            f"{statistics.median(s.server_cpu_share for s in samples):>6.2f} "
            f"{statistics.median(results.costs(name)):>6.0f} "
            f"{statistics.median(s.loadgen_cpu_share for s in samples):>7.2f} "
            f"{statistics.median(s.steal_share for s in samples):>5.0%}"
        )
    for name, label in SQLITE_RUNS.items():
        lines.append(
            f"{label + ' (in-process)':<{width}} {results.median_rate(name):>9,.0f} "
            f"{results.median_of(name, 'p50_ms'):>7.3f} {results.median_of(name, 'p99_ms'):>7.3f}"
        )
    return lines


def verdict(results: Results, computed: list[Ratio]) -> tuple[bool, bool, list[str]]:
    """Return (no 5xx, every target met, the lines saying so)."""
    lines = [
        "",
        "Ratio of the medians above; then the same ratio within each round (its runs are seconds",
        "apart, so they see the same machine): its median and range. Targets use the first.",
        "",
        f"{'ratio':<40} {'value':>6}  {'per round':>9} {'min-max':>9}  {'target':>8}  result",
    ]
    for ratio in computed:
        spread, paired = "", ""
        if ratio.per_round:
            spread = f"{min(ratio.per_round):.0%}-{max(ratio.per_round):.0%}"
            paired = f"{statistics.median(ratio.per_round):.0%}"
        head = f"{ratio.name:<40} {ratio.value:>6.0%}  {paired:>9} {spread:>9}"
        if ratio.target is None:
            lines.append(f"{head}  {'-':>8}  reference")
        else:
            mark = "MET" if ratio.met else "NOT MET"
            lines.append(f"{head}  >= {ratio.target:>5.0%}  {mark}")
    five_xx = sum(results.total(name, "status_5xx") for name in HTTP_RUNS)
    non_2xx = sum(results.total(name, "non_2xx") for name in HTTP_RUNS)
    socket_errors = sum(results.total(name, "socket_errors") for name in HTTP_RUNS)
    outcome = "FAIL" if five_xx else "PASS"
    lines.append("")
    lines.append(f"{'5xx answers under load':<40} {five_xx:>6}  {'':>19}  {'0':>8}  {outcome}")
    lines.append(f"{'non-2xx answers (all kinds)':<40} {non_2xx:>6}")
    lines.append(f"{'socket errors and timeouts':<40} {socket_errors:>6}")
    steal = statistics.median(s.steal_share for samples in results.http.values() for s in samples)
    if steal > STEAL_WARNING:
        lines.append(
            f"NOTE: the hypervisor took {steal:.0%} of this machine's CPU time (steal, median of "
            "the HTTP runs): absolute rates are depressed and noisy; the ratios hold up better"
        )
    for name, (_server, _mode, label) in HTTP_RUNS.items():
        share = statistics.median(s.loadgen_cpu_share for s in results.http[name])
        if share > LOADGEN_CPU_WARNING:
            lines.append(
                f"WARNING: the load generator used {share:.0%} of a core during {label}: "
                "it may be the bottleneck (use wrk)"
            )
    targets = [r for r in computed if r.target is not None]
    missed = [r.name for r in targets if not r.met]
    all_met = not missed
    lines.append("")
    if five_xx:
        lines.append(f"RESULT: FAIL -- {five_xx} 5xx answer(s) under load")
    else:
        met = len(targets) - len(missed)
        detail = "" if all_met else f" (not met: {'; '.join(missed)})"
        lines.append(f"RESULT: no 5xx; throughput targets met: {met} of {len(targets)}{detail}")
    return not five_xx, all_met, lines


def save(path: Path, document: dict[str, Any]) -> None:
    """Write the JSON result, and a copy as ``latest.json`` next to the default ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    path.write_text(text)
    if path.parent == RESULTS_DIR:
        (RESULTS_DIR / "latest.json").write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (0 ok, 1 FAIL, 2 cannot run)."""
    args = parse_args(argv)
    if args.loadgen == "wrk" and wrk_path() is None:
        print(
            "wrk, the load generator, is not installed. Install it with:\n\n"
            f"    {WRK_INSTALL_COMMAND}\n\n"
            "(or run `python -m bench --loadgen python`: a weaker pure-Python load "
            "generator that can cap the numbers on small machines)",
            file=sys.stderr,
        )
        return 2
    try:
        loop_name, _ = event_loop.loop_factory(args.loop)
    except event_loop.EventLoopUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    started = time.monotonic()
    info = machine()
    version = source_version()
    print(
        f"EdgeKV benchmark (code {version}): {info['cpus']} CPU(s) {info['cpu_model']}, "
        f"Python {info['python']}, "
        f"aiohttp {info['aiohttp']}, SQLite {info['sqlite']}, load generator {args.loadgen}"
        + (f" ({info['wrk']})" if args.loadgen == "wrk" else "")
    )
    print(
        f"{args.rounds} round(s) x {args.duration} s per HTTP measurement, "
        f"{args.connections} connections, {args.keys} keys of {args.value_size} bytes, "
        f"event loop {loop_name}",
        flush=True,
    )
    with work_directory(args.work_dir) as work:
        servers = {
            "node": node_process(work / "node-data", work / "node.log", args.loop),
            "bare": bare_process(args.keys, args.value_size, work / "bare.log", args.loop),
        }
        exit_codes: dict[str, int | None] = {}
        baseline = None
        try:
            for server in servers.values():
                server.start()
            print(servers["node"].ready_line)
            populate_node(servers["node"].url, args.keys, args.value_size)
            check_same_bytes([s.url for s in servers.values()], args.keys, args.value_size)
            baseline = SqliteBaseline(work / "sqlite", args.keys, args.value_size, args.seed)
            results = run_rounds(args, servers, baseline)
        except (ServerError, LoadgenError) as error:
            print(f"benchmark could not run: {error}", file=sys.stderr)
            return 2
        finally:
            if baseline is not None:
                baseline.close()
            for name, server in servers.items():
                exit_codes[name] = server.stop()
        node_errors = servers["node"].logged_errors()
        # In-process reads, with the HTTP servers stopped: their own node, same keys.
        print("in-process reads ...", flush=True)
        try:
            local = local_reads.measure(
                work, args.keys, args.value_size, args.rounds, 0.3 if args.quick else 0.5
            )
        except ServerError as error:
            print(f"benchmark could not run: {error}", file=sys.stderr)
            return 2

    computed = ratios(results)
    no_5xx, all_met, verdict_lines = verdict(results, computed)
    lines = ["", *report(results, args.rounds), *verdict_lines]
    if node_errors:
        lines.insert(-1, f"node logged {node_errors} error line(s) during the run")
    local_met, local_lines = local_reads.report(local)
    lines += ["", f"In-process reads, medians of {args.rounds} rounds:", *local_lines]
    print("\n".join(lines))

    document = {
        "version": 1,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "code": version,
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "keys": args.keys,
            "value_size": args.value_size,
            "loadgen": args.loadgen,
            "seed": args.seed,
            "sqlite_batch_size": BATCH_SIZE,
            "node": "python -m edgekv serve (defaults: synchronous=full)",
            "event_loop": loop_name,
        },
        "medians": {
            name: {
                "rate_per_s": results.median_rate(name),
                "p50_ms": results.median_of(name, "p50_ms"),
                "p99_ms": results.median_of(name, "p99_ms"),
            }
            for name in [*HTTP_RUNS, *SQLITE_RUNS]
        },
        "ratios": [
            {
                "name": r.name,
                "value": r.value,
                "per_round": r.per_round,
                "target": r.target,
                "met": r.met,
            }
            for r in computed
        ],
        "status": {
            name: {
                "non_2xx": results.total(name, "non_2xx"),
                "5xx": results.total(name, "status_5xx"),
                "socket_errors": results.total(name, "socket_errors"),
            }
            for name in HTTP_RUNS
        },
        "rounds": {
            **{name: [s.as_dict() for s in samples] for name, samples in results.http.items()},
            **{name: [s.as_dict() for s in samples] for name, samples in results.sqlite.items()},
        },
        "local_reads": local_reads.as_dict(local),
        "server_exit_codes": exit_codes,
        "node_logged_errors": node_errors,
        "verdict": {"no_5xx": no_5xx, "targets_met": all_met, "fail": not no_5xx},
    }
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / f"bench-{stamp}.json"
    save(output, document)
    print(f"\nJSON result: {output}  ({document['elapsed_s']} s)")
    if not no_5xx:
        return 1
    return 1 if args.strict and not (all_met and local_met) else 0
