"""Replication benchmark: propagation latency, catch-up rate, messages per write.

Three nodes on loopback, each pulling from the other two, all with their
defaults (``synchronous=full``). Propagation runs on a cluster whose nodes pull
from each other directly; catch-up on a second one whose every pull link goes
through a proxy the benchmark controls (``testkit.proxy``), so that a node
can be cut off. (A Python proxy on every link costs a hop and CPU per message
on the same two cores: through proxies, propagation p99 came out 2-4x higher.)
Two measurements, each against a baseline taken in the same run:

* **Propagation under load.** Writes at 1,000 per second (paced, open loop) go
  to node A. Two observers tail the change logs of B and C (a peer stream
  without a URL: it reads, it does not join), so a key counts as readable at B
  the moment B's commit of it reaches the stream. Propagation latency is that
  moment minus A's acknowledgement of the write; the baseline is the p99 of
  A's own PUT latency under the same load (target: propagation p50 and p99 at
  most 3x that).
* **Catch-up.** Node C is cut off, 100,000 keys are written at A (and reach
  B), then C is healed; the rate at which they become readable at C, from the
  first to the last, is compared with inserting the same rows into a raw
  ``sqlite3`` database of the same schema, in pages of the same size, with the
  same durability (target: at least 70%). The time from the heal to the first
  key (the pull loop's retry backoff) is reported beside it.

Messages per write come from the nodes' own counters (``/metrics``): changes
and stream messages sent to peers, observers excluded.

Run: ``python -m bench.replication`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import ServerProcess
from edgekv_replication.envelope import Batch, Hello, Welcome, decode, encode
from testkit.proxy import TcpProxy

_READY = re.compile(r"serving (http://\S+) node=([0-9a-f]+)")
TARGET_PROPAGATION_VS_PUT_P99 = 3.0
TARGET_CATCHUP_VS_SQLITE = 0.70
PAGE_ROWS = 500  # the node's stream page size (edgekv_replication.session.PAGE_SIZE)
OBSERVER_IDS = (0x0B5E_0001, 0x0B5E_0002)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Cluster:
    """Three nodes, full mesh.

    With ``proxied``, every pull link goes through its own proxy, so a node
    can be cut off; without, the nodes pull from each other directly, as
    PoPs do (a proxy in the path adds a hop and its CPU to every message).
    """

    def __init__(self, work: Path, *, proxied: bool) -> None:
        work.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(3)]
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
        urls = {(i, j): f"http://127.0.0.1:{ports[j]}" for i, j in pairs}
        self.links = {pair: TcpProxy(ports[pair[1]]) for pair in pairs} if proxied else {}
        for pair, proxy in self.links.items():
            urls[pair] = proxy.url
        self.nodes = []
        for i in range(3):
            peers = [f"--peer={url}" for (a, _), url in urls.items() if a == i]
            command = [
                sys.executable, "-m", "edgekv", "serve", "--data-dir", str(work / f"n{i}"),
                "--port", str(ports[i]), "--node-name", f"n{i}", "--peer-discovery", "false",
                "--log-level", "warning", *peers,
            ]  # fmt: skip
            self.nodes.append(ServerProcess(f"n{i}", command, _READY, work / f"n{i}.log"))
        for node in self.nodes:
            node.start()

    def set_isolated(self, k: int, isolated: bool) -> None:
        for (i, j), proxy in self.links.items():
            if k in (i, j):
                proxy.cut() if isolated else proxy.heal()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for proxy in self.links.values():
            proxy.close()


def free_port() -> int:
    """A loopback port free right now (the nodes' URLs must be known before they start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peer_counters(url: str) -> dict[str, float]:
    """Changes and stream messages this node sent to peers (observers excluded)."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    observers = {f"{o:016x}" for o in OBSERVER_IDS}
    totals = {"changes": 0.0, "messages": 0.0}
    pattern = r'^edgekv_repl_(changes|batches)_sent_total\{peer="([0-9a-f]+)"\} (\S+)$'
    for kind, peer, value in re.findall(pattern, text, re.M):
        if peer not in observers:
            totals["changes" if kind == "changes" else "messages"] += float(value)
    return totals


async def observe(
    url: str,
    observer: int,
    arrivals: dict[str, float],
    ready: asyncio.Event,
    progress: asyncio.Event,
) -> None:
    """Tail a node's change log from its head; note when each ``prop/`` key lands."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url + "/v1/peer/stream") as ws,
    ):
        welcome = decode(await ws.receive_bytes())
        assert isinstance(welcome, Welcome)
        await ws.send_bytes(
            encode(Hello(observer, 1, "observer", "", welcome.head, welcome.incarnation))
        )
        ready.set()
        async for message in ws:
            batch = decode(message.data)
            if isinstance(batch, Batch):
                now = time.perf_counter()
                for change in batch.changes:
                    if change.ns == "prop":
                        arrivals.setdefault(change.key.decode(), now)
                progress.set()


async def propagation(cluster: Cluster, rate: int, seconds: float) -> dict[str, Any]:
    """Paced writes at node A; propagation to B and C against A's PUT latency."""
    arrivals: list[dict[str, float]] = [{}, {}]
    ready = [asyncio.Event(), asyncio.Event()]
    progress = asyncio.Event()
    observers = [
        asyncio.create_task(
            observe(cluster.nodes[i + 1].url, OBSERVER_IDS[i], arrivals[i], ready[i], progress)
        )
        for i in range(2)
    ]
    await asyncio.gather(*(event.wait() for event in ready))
    before = [peer_counters(node.url) for node in cluster.nodes]
    acked: dict[str, float] = {}
    put_latency: list[float] = []
    errors = 0
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def put(i: int) -> None:
            nonlocal errors
            key = f"w{i:07d}"
            sent = time.perf_counter()
            async with session.put(
                f"{cluster.nodes[0].url}/v1/kv/prop/{key}", data=b"v" * 100
            ) as answer:
                await answer.read()
                if answer.status != 200:
                    errors += 1
                    return
            done = time.perf_counter()
            acked[key] = done
            put_latency.append(done - sent)

        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(put(i)))
        await asyncio.gather(*tasks)
        offered = total / (time.perf_counter() - start)
    deadline = time.perf_counter() + 60
    while any(len(a) < len(acked) for a in arrivals) and time.perf_counter() < deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1.0)
    for task in observers:
        task.cancel()
    after = [peer_counters(node.url) for node in cluster.nodes]
    latencies = [
        (arrival[key] - acked[key]) * 1000
        for arrival in arrivals
        for key in acked
        if key in arrival
    ]
    missing = sum(1 for arrival in arrivals for key in acked if key not in arrival)
    sent = {
        k: sum(a[k] - b[k] for a, b in zip(after, before, strict=True))
        for k in ("changes", "messages")
    }
    put_p99 = quantile(put_latency, 0.99) * 1000
    propagation_ms = {
        "p50": quantile(latencies, 0.5),
        "p99": quantile(latencies, 0.99),
        "max": max(latencies),
    }
    result: dict[str, Any] = {
        "writes": len(acked),
        "errors": errors,
        "offered_rate": round(offered),
        "missing_at_b_or_c": missing,
        "local_put_ms": {"p50": quantile(put_latency, 0.5) * 1000, "p99": put_p99},
        "propagation_ms": propagation_ms,
        "changes_sent_per_write": sent["changes"] / max(1, len(acked)),
        "messages_sent_per_write": sent["messages"] / max(1, len(acked)),
    }
    limit = TARGET_PROPAGATION_VS_PUT_P99 * put_p99
    result["met"] = (
        missing == 0 and propagation_ms["p50"] <= limit and propagation_ms["p99"] <= limit
    )
    return result


def bulk_write(url: str, prefix: str, count: int) -> None:
    for start in range(0, count, 10_000):
        operations = [
            {"op": "put", "key": f"{prefix}{i:07d}", "value": "dg=="}
            for i in range(start, min(count, start + 10_000))
        ]
        body = json.dumps({"operations": operations}).encode()
        request = urllib.request.Request(
            url + "/v1/kv/catch/_bulk", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()


class Readable:
    """Which of a round's keys a node's database holds, read from outside the node.

    Through the view ``kv_v1`` (the read interface of ``LocalReader``) on a
    read-only connection of the benchmark's own, so watching costs the node
    nothing. A node's seq is no measure of catch-up: every change it is
    offered takes a seq, the copies relayed by the third node included.
    """

    def __init__(self, data_dir: Path, prefix: str, keys: int) -> None:
        self._conn = sqlite3.connect(f"file:{data_dir / 'edgekv.db'}?mode=ro", uri=True)
        self._first = f"{prefix}{0:07d}".encode()
        self._last = f"{prefix}{keys - 1:07d}".encode()
        self._range = (prefix.encode(), prefix.encode() + b"\xff")
        self.keys = keys

    def has(self, key: bytes) -> bool:
        sql = "SELECT 1 FROM kv_v1 WHERE ns = 'catch' AND key = ?"
        return self._conn.execute(sql, (key,)).fetchone() is not None

    def count(self) -> int:
        sql = "SELECT count(*) FROM kv_v1 WHERE ns = 'catch' AND key >= ? AND key < ?"
        return int(self._conn.execute(sql, self._range).fetchone()[0])

    def wait_first(self, timeout: float = 600) -> float:
        """When the round's first key became readable."""
        return self._wait(lambda: self.has(self._first), timeout)

    def wait_all(self, timeout: float = 600) -> float:
        """When every key of the round was readable (the last key, then a count)."""
        return self._wait(lambda: self.has(self._last) and self.count() == self.keys, timeout)

    @staticmethod
    def _wait(condition: Any, timeout: float) -> float:
        """When ``condition`` was first seen to hold: the moment of the look, not
        after it (counting a round's 100,000 keys takes about 10 ms)."""
        deadline = time.perf_counter() + timeout
        while True:
            looked = time.perf_counter()
            if condition():
                return looked
            if looked > deadline:
                raise TimeoutError("catch-up did not finish")
            time.sleep(0.002)

    def close(self) -> None:
        self._conn.close()


def catch_up(cluster: Cluster, work: Path, keys: int) -> dict[str, float]:
    """How fast a healed node gets ``keys`` changes it missed.

    ``rows_per_s``: from the first missed key readable at C to the last (the
    apply rate); ``resume_s``: from the heal to the first key (reconnecting,
    which waits out the pull loop's retry backoff); ``heal_rows_per_s``: the
    two together.
    """
    cluster.set_isolated(2, True)
    prefix = f"r{time.time_ns()}-"
    bulk_write(cluster.nodes[0].url, prefix, keys)
    at_b = Readable(work / "n1", prefix, keys)
    at_c = Readable(work / "n2", prefix, keys)
    try:
        at_b.wait_all()  # B holds them too, so C also gets B's relayed copies
        healed = time.perf_counter()
        cluster.set_isolated(2, False)
        first = at_c.wait_first()
        done = at_c.wait_all()
    finally:
        at_b.close()
        at_c.close()
    return {
        "rows_per_s": keys / (done - first),
        "resume_s": first - healed,
        "heal_rows_per_s": keys / (done - healed),
    }


def sqlite_insert_rate(work: Path, keys: int) -> float:
    """Rows per second inserting the same rows into a raw sqlite3 copy of the node's table."""
    path = work / f"baseline-{time.time_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE kv (seq INTEGER PRIMARY KEY, ns TEXT NOT NULL, key BLOB NOT NULL,"
        " value BLOB, metadata TEXT, expiration INTEGER, hlc INTEGER NOT NULL,"
        " node INTEGER NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX kv_ns_key ON kv (ns, key)")
    rows = [
        (i + 1, "catch", f"r-{i:07d}".encode(), b"v", None, None, i << 16, 7) for i in range(keys)
    ]
    started = time.perf_counter()
    for start in range(0, keys, PAGE_ROWS):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[start : start + PAGE_ROWS]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return keys / elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the replication benchmark and print its figures."""
    parser = argparse.ArgumentParser(description="EdgeKV replication benchmark")
    parser.add_argument("--rate", type=int, default=1000, help="writes per second at node A")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced load")
    parser.add_argument("--catch-up-keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="catch-up rounds (median)")
    parser.add_argument("--output", type=Path, default=None, help="JSON result file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgekv-repl-bench-") as tmp:
        work = Path(tmp)
        cluster = Cluster(work / "direct", proxied=False)
        try:
            print(
                f"propagation: {args.rate} writes/s for {args.seconds:.0f} s at n0 ...", flush=True
            )
            prop = asyncio.run(propagation(cluster, args.rate, args.seconds))
        finally:
            cluster.close()
        work = work / "proxied"
        cluster = Cluster(work, proxied=True)
        try:
            rounds, base = [], []
            for r in range(args.rounds):
                rounds.append(catch_up(cluster, work, args.catch_up_keys))
                base.append(sqlite_insert_rate(work, args.catch_up_keys))
                print(
                    f"catch-up round {r + 1}: node {rounds[-1]['rows_per_s']:,.0f} rows/s"
                    f" after resuming {rounds[-1]['resume_s'] * 1000:.0f} ms after the heal,"
                    f" sqlite3 {base[-1]:,.0f} rows/s",
                    flush=True,
                )
        finally:
            cluster.close()
    catch = [r["rows_per_s"] for r in rounds]
    ratio = statistics.median(c / b for c, b in zip(catch, base, strict=True))
    heal_ratio = statistics.median(
        r["heal_rows_per_s"] / b for r, b in zip(rounds, base, strict=True)
    )
    result = {
        "propagation": prop,
        "catch_up": {
            "keys": args.catch_up_keys,
            "node_rows_per_s": statistics.median(catch),
            "sqlite_rows_per_s": statistics.median(base),
            "ratio": ratio,
            "per_round": [c / b for c, b in zip(catch, base, strict=True)],
            "resume_ms": statistics.median(r["resume_s"] * 1000 for r in rounds),
            "ratio_from_heal": heal_ratio,
            "met": ratio >= TARGET_CATCHUP_VS_SQLITE,
        },
    }
    p = prop["propagation_ms"]
    put = prop["local_put_ms"]
    print()
    print(
        f"writes acknowledged at n0     {prop['writes']} at {prop['offered_rate']}/s,"
        f" {prop['errors']} errors"
    )
    print(f"local PUT latency             p50 {put['p50']:.2f} ms, p99 {put['p99']:.2f} ms")
    print(
        f"propagation to n1 and n2      p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms,"
        f" max {p['max']:.2f} ms  (limit 3 x PUT p99 = {3 * put['p99']:.2f} ms:"
        f" {'met' if prop['met'] else 'NOT met'})"
    )
    print(
        f"changes sent per write        {prop['changes_sent_per_write']:.2f}"
        f"  (stream messages per write {prop['messages_sent_per_write']:.2f})"
    )
    c = result["catch_up"]
    print(
        f"catch-up of {c['keys']:,} keys      {c['node_rows_per_s']:,.0f} rows/s vs sqlite3 "
        f"{c['sqlite_rows_per_s']:,.0f} rows/s: {c['ratio']:.2f} (target 0.70: "
        f"{'met' if c['met'] else 'NOT met'})"
    )
    print(
        f"catch-up resumed               {c['resume_ms']:.0f} ms after the heal (retry backoff);"
        f" counted from the heal: {c['ratio_from_heal']:.2f} of sqlite3"
    )
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return 0 if prop["errors"] == 0 and prop["missing_at_b_or_c"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
