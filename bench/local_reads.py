"""In-process reads: ``LocalReader.get`` against the limit, a bare table's ``sqlite3`` read.

One process, one thread. A node (``python -m edgekv serve``, defaults) is
loaded over HTTP with the benchmark's keys of 100-byte values and left
running idle; next to it a bare ``(key TEXT PRIMARY KEY, value BLOB) WITHOUT
ROWID`` table in WAL mode holds the same keys and values -- what a
hand-written store could do with one B-tree seek. Measured, in rounds that
alternate their order, each subject reading every key once per pass in a
shuffled order:

* the bare read: ``conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()``;
* ``LocalReader.get`` (goal: >= 0.90 of the bare read);
* the hot-key path, ``LocalReader(cache_size=...)``, every key cached (goal: >= 2x);
* references that show where a read's time goes: ``SELECT ?`` (the cost of
  one statement from Python, no table), the seek of the node's ``(ns, key)``
  index alone, ``PRAGMA data_version``, and ``LocalReader.get``'s statement
  before this benchmark existed (bytes key, expiration in SQL).

Rates are per second of this thread's CPU time (``time.thread_time``): on a
shared machine the wall clock also counts the time the thread waited for a
core, which falls on the subjects unevenly. Wall-clock ratios are printed
too. ``python -m bench.local_reads`` (about 40 s); ``python -m bench`` runs it
too.
"""

from __future__ import annotations

import argparse
import functools
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import node_process, populate_node
from bench.workload import NAMESPACE, get_key, value_for
from edgekv_client import LocalReader

GOAL_GET = 0.90
GOAL_HOT = 2.0

BARE = "bare sqlite3 read"
GET = "LocalReader.get"
HOT = "LocalReader.get, cached"
# References: not goals, the parts of a read.
FLOOR = "SELECT ? (statement floor)"
INDEX = "node index seek only"
VERSION = "PRAGMA data_version"
BEFORE = "LocalReader.get's old statement"

_BARE_READ = "SELECT value FROM kv WHERE key = ?"
_INDEX_ONLY = "SELECT rowid FROM kv WHERE ns = ? AND key = CAST(? AS BLOB)"
_BEFORE = (
    "SELECT value FROM kv_v1 WHERE ns = ? AND key = ? AND (expiration IS NULL OR expiration > ?)"
)


@dataclass
class Rates:
    """Per subject, reads per CPU second and per wall second of each round."""

    cpu: dict[str, list[float]]
    wall: dict[str, list[float]]

    def median(self, name: str) -> float:
        """Median over rounds of reads per CPU second."""
        return statistics.median(self.cpu[name])

    def ratio(self, name: str, clock: str = "cpu") -> float:
        """Median of ``name`` over the median of the bare read."""
        rates = self.cpu if clock == "cpu" else self.wall
        return statistics.median(rates[name]) / statistics.median(rates[BARE])

    def per_round(self, name: str) -> list[float]:
        """``name`` over the bare read within each round."""
        return [a / b for a, b in zip(self.cpu[name], self.cpu[BARE], strict=True)]


def bare_table(path: Path, keys: int, value_size: int) -> sqlite3.Connection:
    """The bare table with the benchmark's keys, opened read-only like the LocalReader."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
    writer.execute("BEGIN")
    writer.executemany(
        "INSERT INTO kv VALUES (?, ?)",
        ((get_key(i), value_for(i, value_size)) for i in range(keys)),
    )
    writer.execute("COMMIT")
    writer.close()
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def rate(read: Callable[[str], object], keys: list[str], seconds: float) -> tuple[float, float]:
    """Reads per CPU second and per wall second of ``read`` over ``keys``, for ``seconds`` CPU."""
    done, cpu_start, wall_start = 0, time.thread_time(), time.perf_counter()
    while time.thread_time() - cpu_start < seconds:
        for key in keys:
            read(key)
        done += len(keys)
    cpu, wall = time.thread_time() - cpu_start, time.perf_counter() - wall_start
    return done / cpu, done / wall


def measure(work: Path, keys: int, value_size: int, rounds: int, seconds: float) -> Rates:
    """Start a node in ``work``, load it, and measure every subject ``rounds`` times."""
    node = node_process(work / "local-node", work / "local-node.log").start()
    try:
        populate_node(node.url, keys, value_size)
        bare = bare_table(work / "bare.db", keys, value_size)
        local = LocalReader(work / "local-node")
        hot = LocalReader(work / "local-node", cache_size=keys)
        names = [get_key(i) for i in range(keys)]
        random.Random(7).shuffle(names)
        node_db = (work / "local-node" / "edgekv.db").resolve().as_uri()
        node_conn = sqlite3.connect(f"{node_db}?mode=ro", uri=True)
        execute, local_execute = bare.execute, node_conn.execute
        subjects: dict[str, Callable[[str], object]] = {
            BARE: lambda k: execute(_BARE_READ, (k,)).fetchone(),
            GET: functools.partial(local.get, NAMESPACE),
            HOT: functools.partial(hot.get, NAMESPACE),
            FLOOR: lambda k: execute("SELECT ?", (k,)).fetchone(),
            INDEX: lambda k: local_execute(_INDEX_ONLY, (NAMESPACE, k)).fetchone(),
            VERSION: lambda k: local_execute("PRAGMA data_version").fetchone(),
            BEFORE: lambda k: local_execute(
                _BEFORE, (NAMESPACE, k.encode(), time.time())
            ).fetchone(),
        }
        for index in (0, keys - 1):
            expected = value_for(index, value_size)
            assert bare.execute(_BARE_READ, (get_key(index),)).fetchone() == (expected,)
            assert local.get(NAMESPACE, get_key(index)) == hot.get(NAMESPACE, get_key(index))
            assert local.get(NAMESPACE, get_key(index)) == expected
        for read in subjects.values():  # warm-up: page caches, statement caches, the hot cache
            rate(read, names, 0.1)
        cpu: dict[str, list[float]] = {name: [] for name in subjects}
        wall: dict[str, list[float]] = {name: [] for name in subjects}
        for round_index in range(rounds):
            order = list(subjects)
            if round_index % 2:
                order.reverse()
            for name in order:
                per_cpu, per_wall = rate(subjects[name], names, seconds)
                cpu[name].append(per_cpu)
                wall[name].append(per_wall)
        local.close()
        hot.close()
        node_conn.close()
        bare.close()
    finally:
        node.stop()
    return Rates(cpu, wall)


def report(rates: Rates) -> tuple[bool, list[str]]:
    """Return (both goals met, the lines of the table and the ratios)."""
    lines = [
        f"{'in-process read (one thread)':<36} {'reads/CPU-s':>12} {'us/read':>8}",
    ]
    for name in rates.cpu:
        value = rates.median(name)
        lines.append(f"{name:<36} {value:>12,.0f} {1e6 / value:>8.2f}")
    lines.append("")
    lines.append(
        f"{'ratio to the bare read':<36} {'CPU':>6} {'rounds':>11} {'wall':>6}  {'goal':>7}  result"
    )
    met = True
    for name, goal in ((GET, GOAL_GET), (HOT, GOAL_HOT), (BEFORE, None)):
        value, per_round = rates.ratio(name), rates.per_round(name)
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
        head = f"{name:<36} {value:>6.2f} {spread:>11} {rates.ratio(name, 'wall'):>6.2f}"
        if goal is None:
            lines.append(f"{head}  {'-':>7}  reference")
            continue
        met = met and value >= goal
        lines.append(f"{head}  >= {goal:<4.2f} {'MET' if value >= goal else 'NOT MET'}")
    return met, lines


def as_dict(rates: Rates) -> dict[str, Any]:
    """For the JSON report."""
    return {
        "reads_per_cpu_s": rates.cpu,
        "reads_per_wall_s": rates.wall,
        "ratios": {
            name: {"value": rates.ratio(name), "per_round": rates.per_round(name), "goal": goal}
            for name, goal in ((GET, GOAL_GET), (HOT, GOAL_HOT), (BEFORE, None))
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on its own and print the table; 0 if both goals are met."""
    parser = argparse.ArgumentParser(prog="python -m bench.local_reads", description=__doc__)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per subject")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgekv-local-reads-") as work:
        rates = measure(Path(work), args.keys, args.value_size, args.rounds, args.seconds)
    met, lines = report(rates)
    print(f"Medians of {args.rounds} rounds, {args.keys} keys of {args.value_size} bytes.")
    print("\n".join(lines))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
