"""Client benchmark: reading at the edge against the usual choices, side by side.

One process, one thread, the same 1,000 keys of 100 bytes everywhere:

* ``LocalReader.get`` -- in-process reads of the node's own SQLite file;
* raw ``sqlite3`` point reads of the same rows in the same file (the floor
  LocalReader is built on; target: LocalReader >= 80% of it);
* redis-py ``GET`` against the local redis-server on 127.0.0.1:6379, the usual
  choice (targets: LocalReader >= 10x, blocking ``Client.get`` over HTTP
  >= 75% of it);
* the blocking ``Client.get`` against a running node over HTTP;

then, in the same run, ``bench.local_reads`` (LocalReader and its hot-key
cache against a bare ``WITHOUT ROWID`` table's read) and ``bench.client_async``
(both clients against redis-py's blocking and asyncio clients, and where a
round trip's time goes).

Each measurement runs several rounds, interleaved; medians are reported. The
keys written to Redis carry a unique prefix and are deleted afterwards.

Run: ``python -m bench.client`` (needs redis-py: ``pip install -e ".[bench]"``,
and a redis-server on 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench import client_async, local_reads
from bench.servers import ServerProcess, populate_node
from bench.workload import NAMESPACE, get_key, value_for
from edgekv_client import Client, LocalReader


def rate(read: Callable[[str], object], keys: list[str], seconds: float) -> float:
    """Reads per second of ``read`` over ``keys`` (random order) for about ``seconds``."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for key in keys:
            read(key)
        done += len(keys)
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the client benchmark and print rates and ratios."""
    parser = argparse.ArgumentParser(description="EdgeKV client benchmark")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import redis

    with tempfile.TemporaryDirectory(prefix="edgekv-client-bench-") as tmp:
        data = Path(tmp) / "node"
        node = ServerProcess(
            "node",
            [sys.executable, "-m", "edgekv", "serve", "--data-dir", str(data), "--port", "0"],
            re.compile(r"serving (http://\S+) node="),
            Path(tmp) / "node.log",
        ).start()
        prefix = f"edgekv-bench-{uuid.uuid4().hex}:"
        r = redis.Redis(host="127.0.0.1", port=6379)
        try:
            populate_node(node.url, args.keys, args.value_size)
            keys = [get_key(i) for i in range(args.keys)]
            random.Random(7).shuffle(keys)
            r.mset(
                {
                    prefix + k: value_for(i, args.value_size)
                    for i, k in enumerate(map(get_key, range(args.keys)))
                }
            )
            local = LocalReader(data)
            raw = sqlite3.connect(f"{(data / 'edgekv.db').resolve().as_uri()}?mode=ro", uri=True)
            client = Client(node.url)
            subjects: dict[str, Callable[[str], object]] = {
                "LocalReader.get": lambda k: local.get(NAMESPACE, k),
                "raw sqlite3 point read": lambda k: raw.execute(
                    "SELECT value FROM kv WHERE ns = ? AND key = ?", (NAMESPACE, k.encode())
                ).fetchone(),
                "redis-py GET": lambda k: r.get(prefix + k),
                "Client.get (HTTP)": lambda k: client.get(NAMESPACE, k),
            }
            assert (
                local.get(NAMESPACE, keys[0])
                == r.get(prefix + keys[0])
                == client.get(NAMESPACE, keys[0])
            )
            results: dict[str, list[float]] = {name: [] for name in subjects}
            for round_no in range(args.rounds):
                order = list(subjects)
                if round_no % 2:
                    order.reverse()
                for name in order:
                    results[name].append(rate(subjects[name], keys, args.seconds))
            client.close()
            local.close()
            raw.close()
        finally:
            r.delete(*[prefix + get_key(i) for i in range(args.keys)])
            node.stop()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"{'reader':28} {'reads/s (median)':>18}")
    for name, value in median.items():
        print(f"{name:28} {value:>18,.0f}")
    local_rate = median["LocalReader.get"]
    checks = [
        ("LocalReader / raw sqlite3", local_rate / median["raw sqlite3 point read"], 0.80),
        ("LocalReader / redis-py GET", local_rate / median["redis-py GET"], 10.0),
        ("Client.get / redis-py GET", median["Client.get (HTTP)"] / median["redis-py GET"], 0.75),
    ]
    print()
    for label, value, target in checks:
        verdict = "met" if value >= target else "NOT met"
        print(f"{label:28} {value:8.2f}x  target >= {target:g}x  {verdict}")
    # Issue 22's baselines in the same run: the bare-table read under LocalReader,
    # redis-py's blocking and asyncio clients under both EdgeKV clients.
    print("\n-- in-process reads against a bare WITHOUT ROWID table (bench.local_reads)")
    local_reads.main(["--rounds", str(args.rounds)])
    print("\n-- the HTTP clients against redis-py, sync and asyncio (bench.client_async)")
    client_async.main(["--rounds", str(args.rounds), "--seconds", str(args.seconds)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
