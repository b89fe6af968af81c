"""Counter and set benchmark: counter add against key-value PUT, counter read against GET,
and the cost of merging a counter touched by 100 nodes against one touched by 3.

Three measurements, each against its baseline run side by side in the same run:

1. Over HTTP, on one node, in alternating rounds (closed loop, 64 keep-alive
   connections, the Python load generator of :mod:`bench.pyload`, or wrk
   when installed is not needed: the ratio is what counts):
   ``POST /v1/counters/bench/c{i}`` ``{"add": 1}`` on 1,000 counters against
   ``PUT /v1/kv/bench/p{random}`` of 100 bytes; and ``GET`` of those
   counters (each with rows of 3 PoPs, as a counter in a three-PoP cluster
   has) against ``GET`` of 1,000 keys of 100 bytes.
2. In process, on a real store: applying batches of 500 remote counter rows
   (what a peer stream or the upstream pull does) to counters each touched
   by 100 nodes, against the same to counters touched by 3 (50,000 rows in
   either store: 500 counters of 100 nodes, 16,666 of 3).
   Reading the value of such a counter is reported beside it (it sums its
   rows: linear in the nodes).

Run: ``python -m bench.crdts`` (about a minute; ``--quick`` for less).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import pyload
from bench.servers import node_process, populate_node
from edgekv.store.store import Store
from edgekv_replication import counters
from edgekv_replication.changes import Change
from edgekv_replication.session import PeerCursor

COUNTERS = 1000
KEYS = 1000
CONNECTIONS = 64
BATCH = 500


def _requests(mode: str, host: str, rng: random.Random) -> Callable[[], bytes]:
    if mode in ("kv_get", "counter_get"):
        path = "/v1/kv/bench/k{:08d}" if mode == "kv_get" else "/v1/counters/bench/c{:05d}"
        pool = [
            f"GET {path.format(i)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for i in range(KEYS)
        ]
        return lambda: pool[rng.randrange(len(pool))]
    if mode == "counter_add":
        body = b'{"add": 1}'
        head = (
            f"POST /v1/counters/bench/c%05d HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return lambda: head % rng.randrange(COUNTERS) + body
    value = bytes(rng.randrange(97, 123) for _ in range(100))
    head = (
        f"PUT /v1/kv/bench/p%08d HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    return lambda: head % rng.randrange(100_000_000) + value


async def _load(url: str, mode: str, seconds: float, seed: int) -> dict[str, float]:
    """A closed loop of ``mode`` requests for ``seconds``: requests per second and errors."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    state = pyload._Run(_requests(mode, f"{host}:{port}", random.Random(seed)))
    loop = asyncio.get_running_loop()
    closed: list[asyncio.Future[None]] = []
    for _ in range(CONNECTIONS):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(functools.partial(pyload._Connection, state, done), host, port)
        closed.append(done)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    state.running = False
    elapsed = time.perf_counter() - started
    await asyncio.wait(closed, timeout=5)
    ok = state.status["2xx"]
    return {"rps": ok / elapsed, "non_2xx": sum(state.status.values()) - ok}


def _three_pop_rows(count: int) -> list[Change]:
    """Rows of ``count`` counters as two other PoPs wrote them (the node adds the third)."""
    rows = []
    for i in range(count):
        for node in (101, 102):
            row = counters.Row(epoch=1, p=3 + i % 7, n=1)
            key = counters.row_key(f"c{i:05d}".encode(), node)
            rows.append(
                Change(
                    counters.counter_ns("bench"),
                    key,
                    counters.encode_row(row),
                    None,
                    None,
                    1 << 16,
                    node,
                )
            )
    return rows


async def _seed(data: Path, changes: list[Change]) -> None:
    store = Store(data, synchronous="normal", allow_new_node=True)
    try:
        for start in range(0, len(changes), BATCH):
            await store.apply_changes(
                changes[start : start + BATCH], 7, PeerCursor(1, start + BATCH), 10**9
            )
    finally:
        store.close()


def throughput(rounds: int, seconds: float, work: Path) -> dict[str, Any]:
    """Counter add vs KV PUT and counter read vs KV GET, alternating, ``rounds`` times."""
    data = work / "node"
    asyncio.run(_seed(data, _three_pop_rows(COUNTERS)))
    server = node_process(data, work / "node.log").start()
    modes = ("counter_add", "kv_put", "counter_get", "kv_get")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    try:
        populate_node(server.url, KEYS, 100)
        for i in range(COUNTERS):  # this node's own row of every counter: three PoPs' rows
            asyncio.run(_post_add(server.url, i))
        for mode in modes:  # warm-up
            asyncio.run(_load(server.url, mode, 1.0, 0))
        for r in range(rounds):
            order = modes if r % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                result = asyncio.run(_load(server.url, mode, seconds, r + 1))
                runs[mode].append(result)
                print(f"  round {r + 1} {mode:12}: {result['rps']:8.0f} req/s", flush=True)
    finally:
        server.stop()
    median = {mode: statistics.median(run["rps"] for run in runs[mode]) for mode in modes}
    return {
        "rps": median,
        "add_vs_put": median["counter_add"] / median["kv_put"],
        "read_vs_get": median["counter_get"] / median["kv_get"],
        "add_vs_put_per_round": [
            a["rps"] / p["rps"] for a, p in zip(runs["counter_add"], runs["kv_put"], strict=True)
        ],
        "read_vs_get_per_round": [
            a["rps"] / p["rps"] for a, p in zip(runs["counter_get"], runs["kv_get"], strict=True)
        ],
        "non_2xx": sum(run["non_2xx"] for mode in runs.values() for run in mode),
    }


async def _post_add(url: str, i: int) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = b'{"add": 1}'
    writer.write(
        f"POST /v1/counters/bench/c{i:05d} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await reader.read()
    writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"counter add failed: {answer[:200]!r}")


TOTAL_ROWS = 50_000
"""Rows in the store of either merge measurement: counters x nodes, so that only the
number of nodes per counter differs (not the size of the table)."""


def merge_cost(nodes: int, batches: int, work: Path) -> dict[str, float]:
    """Seconds to apply one batch of 500 remote counter rows to counters touched by ``nodes``."""
    data = work / f"merge-{nodes}"
    names = [f"m{i:06d}".encode() for i in range(TOTAL_ROWS // nodes)]
    ns = counters.counter_ns("bench")

    def row(name: bytes, node: int, p: int) -> Change:
        value = counters.encode_row(counters.Row(1, p, 0))
        return Change(ns, counters.row_key(name, node), value, None, None, p << 16, node)

    async def run() -> dict[str, float]:
        store = Store(data, synchronous="normal", allow_new_node=True)
        try:
            everything = [row(name, node, 1) for name in names for node in range(1, nodes + 1)]
            cursor = 0
            for start in range(0, len(everything), BATCH):
                cursor += 1
                await store.apply_changes(
                    everything[start : start + BATCH], 9, PeerCursor(1, cursor), 10**9
                )
            rng = random.Random(nodes)
            times = []
            for b in range(batches):
                # A batch as a stream brings it: the newest rows of 500 counters.
                picked = rng.sample(names, BATCH)
                batch = [row(name, rng.randrange(1, nodes + 1), 2 + b) for name in picked]
                cursor += 1
                started = time.perf_counter()
                await store.apply_changes(batch, 9, PeerCursor(1, cursor), 10**9)
                times.append(time.perf_counter() - started)
            read_times = []
            for _ in range(200):
                name = names[rng.randrange(len(names))]
                store.crdts.cache.invalidate([(ns, name)])  # the read itself, not the cache
                started = time.perf_counter()
                store.crdts.counter("bench", name)
                read_times.append(time.perf_counter() - started)
            return {
                "apply_batch_s": statistics.median(times),
                "per_row_us": statistics.median(times) / BATCH * 1e6,
                "read_value_us": statistics.median(read_times) * 1e6,
            }
        finally:
            store.close()

    return asyncio.run(run())


def main() -> None:
    """Run the measurements and print the figures against the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    rounds, seconds, batches = (3, 2.0, 20) if args.quick else (5, 5.0, 60)
    work = Path(tempfile.mkdtemp(prefix="edgekv-crdtbench-"))
    try:
        print(f"HTTP: {rounds} rounds x {seconds:g} s, {CONNECTIONS} connections", flush=True)
        rates = throughput(rounds, seconds, work)
        print(f"merge: {batches} batches of {BATCH} rows, counters of 3 and of 100 nodes")
        three = merge_cost(3, batches, work)
        hundred = merge_cost(100, batches, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rps = rates["rps"]
    print()
    print(
        f"counter add {rps['counter_add']:.0f} req/s vs KV PUT {rps['kv_put']:.0f} req/s: "
        f"{rates['add_vs_put']:.0%} (target >= 80%)"
    )
    print(
        f"counter read {rps['counter_get']:.0f} req/s vs KV GET {rps['kv_get']:.0f} req/s: "
        f"{rates['read_vs_get']:.0%} (target >= 80%); non-2xx {rates['non_2xx']}"
    )
    ratio = hundred["apply_batch_s"] / three["apply_batch_s"]
    print(
        f"merge of a batch: 100 nodes {hundred['per_row_us']:.1f} us/row vs 3 nodes "
        f"{three['per_row_us']:.1f} us/row: {ratio:.2f}x (target <= 2x); reading a value: "
        f"{hundred['read_value_us']:.0f} us vs {three['read_value_us']:.0f} us"
    )
    result = {"http": rates, "merge": {"nodes_3": three, "nodes_100": hundred, "ratio": ratio}}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
