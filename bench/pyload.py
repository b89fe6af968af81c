"""A Python HTTP/1.1 load generator, for machines without wrk.

Many keep-alive connections over raw asyncio protocols (no HTTP client
library, whose per-request cost would dwarf the server's), each sending its
next request as soon as the previous answer is complete: a closed loop, like
wrk. It prints the same ``BENCH-RESULT {json}`` line as ``bench/wrk_script.lua``.

It is weaker than wrk: it spends about twice wrk's CPU per request (some
two-thirds of what the bare aiohttp server itself spends), so on a small
machine it shares the cores with the server and can cap the numbers.
``docs/performance.md`` compares the two; the benchmark uses wrk when it can.

Run: ``python -m bench.pyload --url http://127.0.0.1:PORT --mode get``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from bench.loadgen import RESULT_MARKER
from bench.workload import PUT_KEY_SPACE, get_key, put_key

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Run:
    """Shared state of one load run: the request source, the clock and the tallies."""

    def __init__(self, next_request: Callable[[], bytes]) -> None:
        self.next_request = next_request
        self.running = True
        self.latencies_ns: list[int] = []
        self.status = {"2xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        self.socket_errors = 0

    def record(self, status: int, latency_ns: int) -> None:
        if not self.running:  # answered after the deadline: outside the measured window
            return
        self.latencies_ns.append(latency_ns)
        if 200 <= status < 300:
            self.status["2xx"] += 1
        elif status >= 500:
            self.status["5xx"] += 1
        elif status >= 400:
            self.status["4xx"] += 1
        else:
            self.status["other"] += 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending a request whenever the previous one is answered."""

    def __init__(self, run: _Run, closed: asyncio.Future[None]) -> None:
        self._run = run
        self._closed = closed
        self._buffer = b""
        self._sent_ns = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(self._run.next_request())

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, head_end)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) < end:
                break
            self._run.record(int(buffer[9:12]), time.perf_counter_ns() - self._sent_ns)
            buffer = buffer[end:]
            if self._run.running:
                self._send()
            elif self._transport is not None:
                self._transport.close()
        self._buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._run.running:
            self._run.socket_errors += 1
        if not self._closed.done():
            self._closed.set_result(None)


def _request_source(
    mode: str, host: str, namespace: str, keys: int, value_size: int, seed: int
) -> Callable[[], bytes]:
    rng = random.Random(seed)
    if mode == "get":
        requests = [
            f"GET /v1/kv/{namespace}/{get_key(i)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            for i in range(keys)
        ]
        picks = itertools.cycle([requests[rng.randrange(keys)] for _ in range(100_003)])
        return picks.__next__
    body = bytes(rng.randrange(97, 123) for _ in range(value_size))
    head = (
        f"PUT /v1/kv/{namespace}/%s HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {value_size}\r\n\r\n"
    ).encode()

    def put_request() -> bytes:
        return head % put_key(rng.randrange(PUT_KEY_SPACE)).encode() + body

    return put_request


def _percentile(ordered: list[int], fraction: float) -> int:
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(
    url: str,
    mode: str,
    duration: float,
    connections: int,
    keys: int,
    value_size: int,
    namespace: str,
    seed: int,
) -> dict[str, float]:
    """Apply the load and return the result fields."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    state = _Run(_request_source(mode, f"{host}:{port}", namespace, keys, value_size, seed))
    loop = asyncio.get_running_loop()
    closed: list[asyncio.Future[None]] = []
    transports: list[asyncio.Transport] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        transport, _protocol = await loop.create_connection(
            functools.partial(_Connection, state, done), host, port
        )
        closed.append(done)
        transports.append(transport)
    started = time.perf_counter()
    await asyncio.sleep(duration)
    state.running = False
    elapsed = time.perf_counter() - started
    for open_transport in transports:
        open_transport.close()
    await asyncio.wait(closed, timeout=5)
    ordered = sorted(state.latencies_ns)
    count = len(ordered)
    return {
        "requests": count,
        "duration_us": elapsed * 1e6,
        "p50_us": _percentile(ordered, 0.50) / 1e3,
        "p90_us": _percentile(ordered, 0.90) / 1e3,
        "p99_us": _percentile(ordered, 0.99) / 1e3,
        "max_us": (ordered[-1] if ordered else 0) / 1e3,
        "mean_us": (sum(ordered) / count / 1e3) if count else 0.0,
        "status_2xx": state.status["2xx"],
        "status_4xx": state.status["4xx"],
        "status_5xx": state.status["5xx"],
        "status_other": state.status["other"],
        "connect_errors": 0,
        "read_errors": state.socket_errors,
        "write_errors": 0,
        "timeouts": 0,
    }


def main() -> None:
    """Parse the command line, run, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("get", "put"), default="get")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.url,
            args.mode,
            args.duration,
            args.connections,
            args.keys,
            args.value_size,
            args.namespace,
            args.seed,
        )
    )
    print(RESULT_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
