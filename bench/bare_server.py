"""The bare aiohttp baseline: the same bytes on the same route, and nothing else.

It answers ``GET /v1/kv/{ns}/{key}`` with the value the node holds for that
key, from a dict, with the node's runner settings (``access_log=None``, its
header size limits) and request size limit. No middleware, no auth, no metrics, no SQLite: what is
left is aiohttp's own cost per request, the ceiling the node is measured
against. It runs in its own process, as the node does.

Run: ``python -m bench.bare_server --port 0`` (prints one ``serving`` line).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from bench.workload import dataset
from edgekv import event_loop

# The node's settings (edgekv.config max_request_bytes; edgekv.server's AppRunner header
# limits), so both apps are set up alike.
CLIENT_MAX_SIZE = 100 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024


def create_app(values: dict[str, bytes]) -> web.Application:
    """Return an app serving ``values`` on the node's GET route."""

    async def get_value(request: web.Request) -> web.Response:
        value = values.get(request.match_info["key"])
        if value is None:
            raise web.HTTPNotFound()
        return web.Response(body=value, content_type="application/octet-stream")

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app.router.add_get("/v1/kv/{ns}/{key:.+}", get_value)
    return app


async def serve(host: str, port: int, keys: int, value_size: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        create_app(dataset(keys, value_size)),
        access_log=None,
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # asyncio's Server or uvloop's: both have the listening sockets.
        sockets = getattr(site._server, "sockets", None)
        bound = sockets[0].getsockname()[1] if sockets else port
        loop_name = type(loop).__module__.split(".")[0]
        print(f"bare aiohttp serving http://{host}:{bound} loop={loop_name}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument(
        "--loop", choices=event_loop.CHOICES, default="auto", help="as the node's event_loop"
    )
    args = parser.parse_args()
    event_loop.run(serve(args.host, args.port, args.keys, args.value_size), args.loop)


if __name__ == "__main__":
    main()
