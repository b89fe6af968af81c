"""The HTTP clients against redis-py, blocking and asyncio, and where a round trip goes.

One process, the same 1,000 keys of 100 bytes in a node and in the local
redis-server (127.0.0.1:6379), rounds alternating in order, medians:

* blocking: ``Client.get`` against redis-py ``GET``, one thread (goal >= 0.75);
* asyncio: ``AsyncClient.get`` against ``redis.asyncio`` ``GET``, 64 tasks
  reading at once on one event loop, a pool of up to 64 connections each
  (goal >= 0.75);
* where the time goes, blocking: each client against a trivial server
  (``bench/canned_server.py``, a raw asyncio protocol answering the node's
  bytes) and a raw socket (prebuilt request, no parsing) against the node,
  the canned server and redis. Client CPU per call is the process's CPU time
  over the calls (it includes the kernel's loopback work on send).

Run: ``python -m bench.client_async`` (needs redis-py: ``pip install -e ".[bench]"``,
and a redis-server on 127.0.0.1:6379); ``--rounds``, ``--seconds``, ``--tasks``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.servers import ServerProcess, populate_node
from bench.workload import NAMESPACE, get_key, value_for
from edgekv_client import Client
from edgekv_client.aio import AsyncClient

GOAL = 0.75
"""Issue 22: each client at least this share of redis-py's reads per second."""

Measure = tuple[float, float]
"""(calls per second, client CPU µs per call)."""


def blocking_rate(read: Callable[[str], object], keys: list[str], seconds: float) -> Measure:
    """Reads per second of ``read`` over ``keys`` for about ``seconds``, and CPU per read."""
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for key in keys:
            read(key)
        done += len(keys)
    elapsed = time.perf_counter() - started
    return done / elapsed, (time.process_time() - cpu) / done * 1e6


async def async_rate(
    read: Callable[[str], Awaitable[object]], keys: list[str], seconds: float, tasks: int
) -> Measure:
    """Reads per second of ``tasks`` tasks each reading ``keys`` in turn, and CPU per read."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def reader(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            await read(keys[index % len(keys)])
            index += 1
            done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(reader(i * 17) for i in range(tasks)))
    elapsed = time.perf_counter() - started
    return done / elapsed, (time.process_time() - cpu) / max(done, 1) * 1e6


class RawSocket:
    """A prebuilt request sent and its answer received, nothing parsed: the round-trip floor."""

    def __init__(self, host: str, port: int, request: bytes, answer_size: int) -> None:
        """Connect to ``host:port``; each call sends ``request``, reads ``answer_size`` bytes."""
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request, self._size = request, answer_size

    def __call__(self, key: str) -> None:
        """One round trip (the key is ignored: the request is fixed)."""
        self._sock.sendall(self._request)
        got = len(self._sock.recv(65536))
        while got < self._size:
            got += len(self._sock.recv(65536))

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def answer_size(host: str, port: int, request: bytes) -> int:
    """The size of the answer to ``request`` (read until a short pause)."""
    with socket.create_connection((host, port)) as sock:
        sock.sendall(request)
        sock.settimeout(0.5)
        data = sock.recv(65536)
        try:
            while more := sock.recv(65536):
                data += more
        except TimeoutError:
            pass
    return len(data)


def _server(module: str, name: str, tmp: Path, *extra: str) -> ServerProcess:
    command = [sys.executable, "-m", module, "--port", "0", *extra]
    return ServerProcess(name, command, re.compile(r"serving (http://\S+)"), tmp / f"{name}.log")


@contextmanager
def _servers(tmp: Path, keys: int, value_size: int) -> Iterator[tuple[ServerProcess, ...]]:
    node = _server("edgekv", "node", tmp)
    node.command = [sys.executable, "-m", "edgekv", "serve", "--data-dir", str(tmp / "node"),
                    "--port", "0"]  # fmt: skip
    canned = _server("bench.canned_server", "canned", tmp, "--value-size", str(value_size))
    started: list[ServerProcess] = []
    try:
        for server in (node, canned):
            started.append(server.start())
        populate_node(node.url, keys, value_size)
        yield node, canned
    finally:
        for server in started:
            server.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def main(argv: list[str] | None = None) -> int:
    """Run both comparisons and the breakdown; print rates, ratios and goals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=64, help="concurrent async readers")
    args = parser.parse_args(argv)
    import redis

    prefix = f"edgekv-bench-{uuid.uuid4().hex}:"
    keys = [get_key(i) for i in range(args.keys)]
    random.Random(7).shuffle(keys)
    r = redis.Redis(host="127.0.0.1", port=6379)
    r.mset({prefix + get_key(i): value_for(i, args.value_size) for i in range(args.keys)})
    blocking: dict[str, list[Measure]] = {}
    concurrent: dict[str, list[Measure]] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edgekv-client-async-") as tmp,
            _servers(Path(tmp), args.keys, args.value_size) as (node, canned),
        ):
            node_port, canned_port = _port(node.url), _port(canned.url)
            get = f"GET /v1/kv/{NAMESPACE}/{keys[0]} HTTP/1.1\r\nHost: 127.0.0.1:{{}}\r\n\r\n"
            node_get = get.format(node_port).encode()
            canned_get = get.format(canned_port).encode()
            redis_get = f"*2\r\n$3\r\nGET\r\n${len(prefix + keys[0])}\r\n{prefix}{keys[0]}\r\n"
            client, to_canned = Client(node.url), Client(canned.url)
            assert client.get(NAMESPACE, keys[0]) == r.get(prefix + keys[0])
            raws = [
                RawSocket("127.0.0.1", node_port, node_get,
                          answer_size("127.0.0.1", node_port, node_get)),
                RawSocket("127.0.0.1", canned_port, canned_get,
                          answer_size("127.0.0.1", canned_port, canned_get)),
                RawSocket("127.0.0.1", 6379, redis_get.encode(),
                          answer_size("127.0.0.1", 6379, redis_get.encode())),
            ]  # fmt: skip
            subjects: dict[str, Callable[[str], object]] = {
                "redis-py GET": lambda k: r.get(prefix + k),
                "Client.get (node)": lambda k: client.get(NAMESPACE, k),
                "Client.get (canned server)": lambda k: to_canned.get(NAMESPACE, k),
                "raw socket (node)": raws[0],
                "raw socket (canned server)": raws[1],
                "raw socket (redis-server)": raws[2],
            }
            blocking = _rounds(subjects, keys, args)
            client.close()
            to_canned.close()
            for raw in raws:
                raw.close()
            concurrent = asyncio.run(_async_rounds(node.url, canned.url, prefix, keys, args))
    finally:
        r.delete(*[prefix + get_key(i) for i in range(args.keys)])
        r.close()
    _report(blocking, concurrent, args)
    return 0


def _rounds(
    subjects: dict[str, Callable[[str], object]], keys: list[str], args: argparse.Namespace
) -> dict[str, list[Measure]]:
    results: dict[str, list[Measure]] = {name: [] for name in subjects}
    for name in subjects:  # warm-up
        blocking_rate(subjects[name], keys[:100], 0.1)
    for round_no in range(args.rounds):
        order = list(subjects)
        if round_no % 2:
            order.reverse()
        for name in order:
            results[name].append(blocking_rate(subjects[name], keys, args.seconds))
    return results


async def _async_rounds(
    node_url: str, canned_url: str, prefix: str, keys: list[str], args: argparse.Namespace
) -> dict[str, list[Measure]]:
    import redis.asyncio as aredis

    r: Any = aredis.Redis(host="127.0.0.1", port=6379, max_connections=args.tasks)
    client, to_canned = AsyncClient(node_url), AsyncClient(canned_url)
    subjects: dict[str, Callable[[str], Awaitable[object]]] = {
        "redis.asyncio GET": lambda k: r.get(prefix + k),
        "AsyncClient.get (node)": lambda k: client.get(NAMESPACE, k),
        "AsyncClient.get (canned server)": lambda k: to_canned.get(NAMESPACE, k),
    }
    assert await client.get(NAMESPACE, keys[0]) == await r.get(prefix + keys[0])
    results: dict[str, list[Measure]] = {name: [] for name in subjects}
    try:
        for name in subjects:  # warm-up: connections opened
            await async_rate(subjects[name], keys, 0.2, args.tasks)
        for round_no in range(args.rounds):
            order = list(subjects)
            if round_no % 2:
                order.reverse()
            for name in order:
                results[name].append(
                    await async_rate(subjects[name], keys, args.seconds, args.tasks)
                )
    finally:
        await client.close()
        await to_canned.close()
        await r.aclose()
    return results


def _median(values: list[Measure]) -> Measure:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


def _report(
    blocking: dict[str, list[Measure]],
    concurrent: dict[str, list[Measure]],
    args: argparse.Namespace,
) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the end; {os.cpu_count()} CPUs")
    print(f"{'blocking, one thread':34} {'calls/s':>9} {'µs/call':>8} {'client CPU µs':>14}")
    medians = {name: _median(values) for name, values in blocking.items()}
    for name, (rate, cpu) in medians.items():
        print(f"{name:34} {rate:>9,.0f} {1e6 / rate:>8.1f} {cpu:>14.1f}")
    print(f"\n{f'asyncio, {args.tasks} tasks':34} {'calls/s':>9} {'':>8} {'client CPU µs':>14}")
    amedians = {name: _median(values) for name, values in concurrent.items()}
    for name, (rate, cpu) in amedians.items():
        print(f"{name:34} {rate:>9,.0f} {'':>8} {cpu:>14.1f}")
    print()
    checks = [
        ("Client.get / redis-py GET", blocking, "Client.get (node)", "redis-py GET"),
        (
            "AsyncClient.get / redis.asyncio",
            concurrent,
            "AsyncClient.get (node)",
            "redis.asyncio GET",
        ),
    ]
    for label, runs, ours, theirs in checks:
        ratio = _median(runs[ours])[0] / _median(runs[theirs])[0]
        per_round = [a[0] / b[0] for a, b in zip(runs[ours], runs[theirs], strict=True)]
        verdict = "met" if ratio >= GOAL else "NOT met"
        rounds = ", ".join(f"{v:.2f}" for v in per_round)
        print(f"{label:34} {ratio:6.2f}  goal >= {GOAL}  {verdict}  (per round {rounds})")
    us = {name: 1e6 / rate for name, (rate, _) in medians.items()}
    print(
        "\nwhere a blocking round trip goes (µs, medians):"
        f"\n  redis: raw {us['raw socket (redis-server)']:.1f}, redis-py adds "
        f"{us['redis-py GET'] - us['raw socket (redis-server)']:.1f}"
        f"\n  canned server: raw {us['raw socket (canned server)']:.1f}, Client adds "
        f"{us['Client.get (canned server)'] - us['raw socket (canned server)']:.1f}"
        f"\n  node: raw {us['raw socket (node)']:.1f} (the node's answer costs "
        f"{us['raw socket (node)'] - us['raw socket (canned server)']:.1f} more than the "
        f"canned one), Client adds {us['Client.get (node)'] - us['raw socket (node)']:.1f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
