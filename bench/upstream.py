"""Benchmark of the PostgreSQL upstream: strong writes, and what the connector costs.

One run, interleaved rounds, medians:

- **strong PUT**: a node with ``--upstream`` and ``--strong-namespaces bench``
  under wrk PUT load (64 connections, new random keys): each write is a
  PostgreSQL transaction (lock the row, last-writer-wins upsert), then
  applied locally and acknowledged.
- **direct driver**: the same statements (:func:`edgekv.upstream.strong.run_write`)
  in the same kind of transaction, run straight through asyncpg on as many
  connections as the node's pool (``upstream_pool_size``), in this process,
  for the same time.
- **eventual PUT with / without connector**: two nodes under the same wrk PUT
  load on an eventual namespace, one pushing every change to PostgreSQL (a
  schema of its own, which no other node on this machine pulls from). Both
  nodes run on one core and wrk on another (on a machine with two cores or
  more): in a deployment the upstream is a central server, not on the PoP's
  cores, and unpinned, the scheduler put PostgreSQL's share of the push (about
  7 µs of its CPU per row) on the node's core now and then. The connector's
  own work runs in the node's process, on the node's core, and counts
  against it.

Each phase starts once the pushing node has pushed everything (its backlog
does not spill into the next phase), and the two sides of each pair swap
order every round.

Targets (issue: transactional upstream): strong PUT >= 70% of direct driver;
eventual PUT with the connector >= 90% of without. Run from the repository
root with PostgreSQL on 127.0.0.1:5432 (or ``EDGEKV_TEST_PG_DSN``) and wrk::

    python -m bench.upstream [--rounds 9] [--seconds 6] [--unpinned]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bench.loadgen import LoadSettings, run_load
from bench.servers import _NODE_READY, ServerProcess
from edgekv.store.kv import Write
from edgekv.store.pg.statements import Statements
from edgekv.upstream import strong
from edgekv_replication import HybridLogicalClock

DSN = os.environ.get("EDGEKV_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "edgekv_bench_upstream"
# The pushing node gets an upstream of its own: no other node on this machine
# pulls its changes (other PoPs would, on other machines).
PUSH_SCHEMA = "edgekv_bench_upstream_push"
POOL = 10
TARGET_STRONG = 0.70
TARGET_EVENTUAL = 0.90


def node(name: str, work: Path, extra: list[str]) -> ServerProcess:
    """An ``edgekv serve`` process with its defaults plus ``extra``."""
    command = [
        sys.executable, "-m", "edgekv", "serve", "--data-dir", str(work / name),
        "--port", "0", "--node-name", name, *extra,
    ]  # fmt: skip
    return ServerProcess(name, command, _NODE_READY, work / f"{name}.log").start()


async def drop_schema() -> None:
    conn = await asyncpg.connect(DSN)
    try:
        for schema in (SCHEMA, PUSH_SCHEMA):
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def direct_rate(seconds: float, value_size: int) -> float:
    """Strong-write transactions per second straight through asyncpg."""
    sql = Statements(SCHEMA)
    value = b"x" * value_size
    done = 0
    deadline = time.monotonic() + seconds
    pool = await asyncpg.create_pool(DSN, min_size=POOL, max_size=POOL)  # one acquire per worker
    assert pool is not None

    clock = HybridLogicalClock()

    async def worker() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                key = f"d{random.randrange(10**8):08d}".encode()
                async with conn.transaction():
                    await strong.run_write(conn, sql, clock, 1, "bench", [Write(key, value)])
                done += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(POOL)))
    finally:
        await pool.close()
    return done / (time.monotonic() - started)


def pin_process(pid: int, cores: set[int]) -> None:
    """Run every thread of ``pid`` (and the threads it starts later) on ``cores``."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), cores)


@contextlib.contextmanager
def on_cores(cores: set[int] | None) -> Iterator[None]:
    """Run this process, and what it starts meanwhile (wrk), on ``cores`` (None: anywhere)."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wait_pushed(url: str, timeout: float = 120.0) -> None:
    """Wait until the node has pushed every change to the upstream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/v1/cluster/status", timeout=10) as answer:
            if json.load(answer)["upstream"]["lag_changes"] == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not finish pushing within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    """Run the upstream benchmark and print its figures."""
    parser = argparse.ArgumentParser(description="EdgeKV upstream benchmark")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument(
        "--unpinned",
        action="store_true",
        help="let the eventual pair and wrk run on any core (PostgreSQL may then share the node's)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON result file")
    args = parser.parse_args(argv)
    asyncio.run(drop_schema())
    upstream = ["--upstream", DSN, "--upstream-schema", SCHEMA]
    push_upstream = ["--upstream", DSN, "--upstream-schema", PUSH_SCHEMA]
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edgekv-upstream-bench-") as tmp:
        work = Path(tmp)
        servers = [
            node("strong", work, [*upstream, "--strong-namespaces", "bench"]),
            node("pushing", work, push_upstream),
            node("alone", work, []),
        ]
        strong, pushing, alone = servers
        # The eventual pair on the first core this process may use, wrk on the second.
        cores = sorted(os.sched_getaffinity(0))
        pinned = len(cores) >= 2 and not args.unpinned
        load_cores = {cores[1]} if pinned else None
        if pinned:
            pin_process(pushing.pid, {cores[0]})
            pin_process(alone.pid, {cores[0]})
            print(f"eventual pair: nodes on core {cores[0]}, wrk on core {cores[1]}")
        try:
            for r in range(args.rounds):

                def load(url: str, ns: str, r: int = r, cores: set[int] | None = None) -> float:
                    settings = LoadSettings(
                        args.seconds, args.connections, 1000, args.value_size, ns, seed=r
                    )
                    with on_cores(cores):
                        result = run_load("wrk", url, "put", settings)
                    if result.non_2xx or result.socket_errors:
                        raise SystemExit(f"errors under load at {url}: {result.as_dict()}")
                    return result.rps

                phases = {
                    "strong_put": lambda: load(strong.url, "bench"),
                    "direct_driver": lambda: asyncio.run(
                        direct_rate(args.seconds, args.value_size)
                    ),
                    "eventual_with_connector": lambda: load(pushing.url, "app", cores=load_cores),
                    "eventual_without": lambda: load(alone.url, "app", cores=load_cores),
                }
                order = list(phases)
                if r % 2:  # alternate which side of each pair goes first
                    order = [order[1], order[0], order[3], order[2]]
                sample = {}
                for name in order:
                    sample[name] = phases[name]()
                    # The pushing node's backlog must not drain into the next phase.
                    wait_pushed(pushing.url)
                rounds.append({name: sample[name] for name in phases})
                print(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in sample.items()))
        finally:
            for server in servers:
                server.stop()
            asyncio.run(drop_schema())
    strong_ratio = statistics.median(s["strong_put"] / s["direct_driver"] for s in rounds)
    eventual_ratio = statistics.median(
        s["eventual_with_connector"] / s["eventual_without"] for s in rounds
    )
    medians = {k: statistics.median(s[k] for s in rounds) for k in rounds[0]}
    result: dict[str, Any] = {
        "eventual_pair_pinned": pinned,
        "medians": medians,
        "rounds": rounds,
        "strong_vs_direct": strong_ratio,
        "eventual_with_vs_without": eventual_ratio,
    }
    print()
    for name, rate in medians.items():
        print(f"{name:26s} {rate:10,.0f} /s")
    print(
        f"strong PUT / direct driver      {strong_ratio:.2f} (target {TARGET_STRONG}: "
        f"{'met' if strong_ratio >= TARGET_STRONG else 'NOT met'})"
    )
    print(
        f"eventual PUT with / without     {eventual_ratio:.2f} (target {TARGET_EVENTUAL}: "
        f"{'met' if eventual_ratio >= TARGET_EVENTUAL else 'NOT met'})"
    )
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
