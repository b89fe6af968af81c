"""A trivial HTTP responder: the node's answer to a GET, canned, on a raw asyncio protocol.

It parses nothing but the end of each request head and writes the same bytes
a node writes for a 100-byte value (status line, ``Content-Type``, ``ETag``,
``Content-Length``, ``Date``, ``Server``). Timing a client against it leaves
the client's own cost per request plus the smallest server an asyncio
program can be: the floor under any Python HTTP server, aiohttp included.
It takes GETs only (a request with a body would be misread) and answers
every path alike. It runs in its own process, as the node does.

Run: ``python -m bench.canned_server --port 0`` (prints one ``serving`` line).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from bench.workload import value_for

_END = b"\r\n\r\n"


def canned_answer(value: bytes) -> bytes:
    """The bytes a node sends for a GET of ``value`` (a fixed ETag and date)."""
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/octet-stream\r\n"
        'ETag: "01a23cc594cd00003726fc3a26fe4c35"\r\n'
        f"Content-Length: {len(value)}\r\n"
        "Date: Thu, 03 Dec 2026 16:38:33 GMT\r\n"
        "Server: Python/3.11 aiohttp/3.14.5\r\n\r\n"
    )
    return head.encode("latin-1") + value


class Responder(asyncio.Protocol):
    """Answers each request head with the canned answer (pipelined heads too)."""

    def __init__(self, answer: bytes) -> None:
        """Answer every request with ``answer``."""
        self._answer = answer
        self._pending = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write to."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Answer every complete request head received so far."""
        pending = self._pending + data
        heads = pending.count(_END)
        if heads:
            assert self._transport is not None
            self._transport.write(self._answer * heads)
            pending = pending[pending.rfind(_END) + len(_END) :]
        self._pending = pending


async def serve(host: str, port: int, value_size: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    answer = canned_answer(value_for(0, value_size))
    server = await loop.create_server(lambda: Responder(answer), host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"canned responder serving http://{host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.value_size))


if __name__ == "__main__":
    main()
