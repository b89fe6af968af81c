"""Where a node GET's time goes: the node with parts switched off, against bare aiohttp.

A diagnostic, not part of ``python -m bench``. The benchmark says *how far*
the node is from bare aiohttp; this says *why*, by measuring variants side by
side (interleaved rounds, medians, server CPU per request):

=====================  ===========================================================
``bare``               the bare aiohttp baseline of the benchmark
``bare+middleware``    the same with one pass-through ``@web.middleware``
``bare+sqlite``        the same handler doing one raw ``sqlite3`` point read (WAL)
``node``               the node, as ``edgekv serve`` runs it
``node-metrics``       ``Metrics.observe_request`` does nothing
``node-sqlite``        ``Store.get`` answers from a dict (what a read cache would do)
``node-metrics-sqlite`` both
``node-middleware``    no aiohttp middleware: a plain handler wrapper sets the principal
=====================  ===========================================================

The node variants patch the running process only (never the source): they are
estimates of what each part costs, to direct work on the server.

Each variant's figures are also compared *within* each round (median of the
per-round ratios and differences), which drift between rounds does not move.

Run: ``python -m bench.breakdown [--rounds 8] [--duration 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import re
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.loadgen import LoadSettings, run_load, wrk_path
from bench.servers import ServerProcess, check_same_bytes, populate_node
from bench.workload import NAMESPACE, dataset

VARIANTS = (
    "bare",
    "bare+middleware",
    "bare+sqlite",
    "node",
    "node-metrics",
    "node-sqlite",
    "node-metrics-sqlite",
    "node-middleware",
)
_READY = re.compile(r"serving (http://\S+)")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve_app(app: web.Application) -> None:
    from bench.bare_server import MAX_HEADER_BYTES

    runner = web.AppRunner(
        app,
        access_log=None,
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    print(f"variant serving http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def _serve_bare(variant: str, data_dir: Path, keys: int, value_size: int) -> None:
    from bench.bare_server import create_app
    from bench.sqlite_baseline import SqliteBaseline

    app = create_app(dataset(keys, value_size))
    if variant == "bare+middleware":

        @web.middleware
        async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request)

        app.middlewares.append(passthrough)
    elif variant == "bare+sqlite":
        conn = SqliteBaseline(data_dir, keys, value_size, seed=1).connection
        app = web.Application(client_max_size=app._client_max_size)

        async def get_value(request: web.Request) -> web.Response:
            row = conn.execute(
                "SELECT value FROM kv WHERE ns = ? AND key = ?",
                (request.match_info["ns"], request.match_info["key"].encode()),
            ).fetchone()
            if row is None:
                raise web.HTTPNotFound()
            return web.Response(body=row[0], content_type="application/octet-stream")

        app.router.add_get("/v1/kv/{ns}/{key:.+}", get_value)
    asyncio.run(_serve_app(app))


def _serve_node(variant: str, data_dir: Path, keys: int, value_size: int) -> None:
    import edgekv.server
    from edgekv.auth import OPEN_ACCESS
    from edgekv.config import load_config
    from edgekv.http import kv_routes
    from edgekv.http.state import NODE, PRINCIPAL
    from edgekv.metrics import Metrics
    from edgekv.node import Node
    from edgekv.store.kv import Entry, KeyValues

    if "metrics" in variant:
        Metrics.observe_request = lambda *args: None  # type: ignore[method-assign]
    if "sqlite" in variant:
        cached = {
            (NAMESPACE, key.encode()): Entry(value, None, None, 1, 1, 1)
            for key, value in dataset(keys, value_size).items()
        }

        def cached_get(
            self: KeyValues, ns: str, key: bytes, now: float | None = None
        ) -> Entry | None:
            return cached.get((ns, key))

        # Before the node opens: the store hands out KeyValues.get bound to its instance.
        KeyValues.get = cached_get  # type: ignore[method-assign]
    if variant == "node-middleware":

        def create_app(node: Node) -> web.Application:
            app = web.Application(client_max_size=node.config.max_request_bytes)
            app[NODE] = node
            for route in kv_routes.routes:
                assert isinstance(route, web.RouteDef)
                app.router.add_route(route.method, route.path, _with_principal(route.handler))
            return app

        def _with_principal(handler: Any) -> Handler:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                request[PRINCIPAL] = OPEN_ACCESS
                response: web.StreamResponse = handler(request)  # read handlers are sync
                if inspect.isawaitable(response):
                    response = await response
                return response

            return wrapped

        edgekv.server.create_app = create_app  # type: ignore[attr-defined]
    edgekv.server.serve(load_config({"data_dir": str(data_dir), "port": 0}))


def measure(args: argparse.Namespace) -> int:
    """Start every variant, load each in interleaved rounds, print the table."""
    if wrk_path() is None:
        print("wrk is not installed; install it with: sudo apt-get install -y wrk")
        return 2
    work = Path(tempfile.mkdtemp(prefix="edgekv-breakdown-"))
    servers: dict[str, ServerProcess] = {}
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    costs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for variant in VARIANTS:
            command = [
                sys.executable, "-m", "bench.breakdown", "serve", variant, str(work / variant),
                "--keys", str(args.keys), "--value-size", str(args.value_size),
            ]  # fmt: skip
            server = ServerProcess(variant, command, _READY, work / f"{variant}.log").start()
            servers[variant] = server
            if variant.startswith("node"):
                populate_node(server.url, args.keys, args.value_size)
        check_same_bytes([s.url for s in servers.values()], args.keys, args.value_size)
        settings = LoadSettings(
            args.duration, args.connections, args.keys, args.value_size, NAMESPACE, seed=1
        )
        warm = LoadSettings(1, args.connections, args.keys, args.value_size, NAMESPACE, seed=0)
        for server in servers.values():
            run_load("wrk", server.url, "get", warm)
        for round_index in range(args.rounds):
            order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                server = servers[variant]
                before = server.cpu_seconds()
                load = run_load("wrk", server.url, "get", settings)
                cost = (server.cpu_seconds() - before) / max(1, load.requests) * 1e6
                rates[variant].append(load.rps)
                costs[variant].append(cost)
                print(
                    f"round {round_index + 1} {variant:<22} {load.rps:>8,.0f} req/s "
                    f"{cost:6.1f} us/req  non-2xx {load.non_2xx}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
    # Paired within each round: variants a round apart may see a different machine.
    print(
        f"\n{'variant':<22} {'req/s':>8} {'us/req':>7}"
        f"  {'req/s of bare, in-round':>23}  {'us/req vs node, in-round':>24}"
    )
    summary = {}
    for variant in VARIANTS:
        rate, cost = statistics.median(rates[variant]), statistics.median(costs[variant])
        of_bare = statistics.median(
            a / b for a, b in zip(rates[variant], rates["bare"], strict=True)
        )
        vs_node = statistics.median(
            a - b for a, b in zip(costs[variant], costs["node"], strict=True)
        )
        summary[variant] = {
            "rps": rate,
            "us_per_request": cost,
            "of_bare_within_rounds": of_bare,
            "us_vs_node_within_rounds": vs_node,
            "rounds_rps": rates[variant],
            "rounds_us_per_request": costs[variant],
        }
        print(f"{variant:<22} {rate:>8,.0f} {cost:>7.1f}  {of_bare:>23.0%}  {vs_node:>+24.1f}")
    out = Path(__file__).resolve().parent / "results" / "breakdown-latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"JSON: {out}")
    return 0


def main() -> int:
    """``measure`` (default) or ``serve VARIANT DATA_DIR`` (used by ``measure``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.add_argument("command", nargs="?", default="measure", choices=("measure", "serve"))
    parser.add_argument("variant", nargs="?", choices=VARIANTS)
    parser.add_argument("data_dir", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    if args.command == "measure":
        return measure(args)
    if args.variant is None or args.data_dir is None:
        parser.error("serve needs VARIANT and DATA_DIR")
    if args.variant.startswith("bare"):
        _serve_bare(args.variant, args.data_dir, args.keys, args.value_size)
    else:
        _serve_node(args.variant, args.data_dir, args.keys, args.value_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
