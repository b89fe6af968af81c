"""Raw ``sqlite3`` in-process: the floor under the node's storage cost.

Point reads by primary key and point writes on a table shaped like the node's
(namespace, key, value), with the node's settings: WAL and
``synchronous=FULL``, so a committed write is as durable as a node's. Writes
are measured two ways: each committed on its own (one fsync per write, what a
naive server would do), and batched (many rows per commit, what the node's
group-commit writer does under load). Nothing crosses a process or a socket
here, so these numbers bound what any server over this database could reach.
"""

from __future__ import annotations

import random
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.workload import NAMESPACE, PUT_KEY_SPACE, get_key, put_key, value_for

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB,"
    " PRIMARY KEY (ns, key))"
)
_READ = "SELECT value FROM kv WHERE ns = ? AND key = ?"
_WRITE = "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)"

BATCH_SIZE = 100
"""Rows per commit in the batched-write measurement."""


@dataclass(frozen=True, slots=True)
class OpsResult:
    """Operations done in a time window, with per-operation latency."""

    ops: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_s(self) -> float:
        """Operations per second."""
        return self.ops / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, float]:
        """The result with its rate, for the JSON report."""
        return {**asdict(self), "ops_per_s": self.ops_per_s}


def _summary(latencies_ns: list[int], ops: int, duration: float) -> OpsResult:
    ordered = sorted(latencies_ns)

    def pick(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6 if ordered else 0

    return OpsResult(ops, duration, pick(0.50), pick(0.99))


class SqliteBaseline:
    """A database of the benchmark's keys, measured in this process."""

    def __init__(self, directory: Path, keys: int, value_size: int, seed: int) -> None:
        """Create the table in ``directory`` and load ``keys`` keys."""
        directory.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(_SCHEMA)
        self._keys = [get_key(i).encode() for i in range(keys)]
        self._value_size = value_size
        self._rng = random.Random(seed)
        self._value = bytes(self._rng.randrange(97, 123) for _ in range(value_size))
        self._conn.execute("BEGIN")
        self._conn.executemany(
            _WRITE, ((NAMESPACE, key, value_for(i, value_size)) for i, key in enumerate(self._keys))
        )
        self._conn.execute("COMMIT")

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection (autocommit mode) to the baseline database."""
        return self._conn

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def reads(self, duration: float) -> OpsResult:
        """Point reads of random pre-populated keys for ``duration`` seconds."""
        execute, keys, pick = self._conn.execute, self._keys, self._rng.randrange
        count, clock = len(keys), time.perf_counter_ns
        latencies: list[int] = []
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline:
            for _ in range(1000):
                key = keys[pick(count)]
                t0 = clock()
                row = execute(_READ, (NAMESPACE, key)).fetchone()
                latencies.append(clock() - t0)
                if row is None:
                    raise RuntimeError(f"baseline lost key {key!r}")
        elapsed = time.perf_counter() - started
        return _summary(latencies, len(latencies), elapsed)

    def writes(self, duration: float, batch: int = 1) -> OpsResult:
        """Write random keys for ``duration`` seconds, committing every ``batch`` rows.

        Latency is per commit; the rate counts rows.
        """
        conn, pick, value = self._conn, self._rng.randrange, self._value
        clock = time.perf_counter_ns
        latencies: list[int] = []
        rows = 0
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline:
            t0 = clock()
            if batch == 1:
                conn.execute(_WRITE, (NAMESPACE, put_key(pick(PUT_KEY_SPACE)).encode(), value))
            else:
                conn.execute("BEGIN IMMEDIATE")
                rows_of_batch = [
                    (NAMESPACE, put_key(pick(PUT_KEY_SPACE)).encode(), value) for _ in range(batch)
                ]
                conn.executemany(_WRITE, rows_of_batch)
                conn.execute("COMMIT")
            latencies.append(clock() - t0)
            rows += batch
        elapsed = time.perf_counter() - started
        return _summary(latencies, rows, elapsed)
