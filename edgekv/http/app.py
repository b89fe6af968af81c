"""The aiohttp application of a node: middleware, system routes and assembly."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgekv.http import kv_routes
from edgekv.http.errors import HTTP_STATUS_CODES, ApiError, error_response
from edgekv.http.openapi import openapi_document
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.peers import cluster_routes
from edgekv.store.writer import WriterClosed

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes anyone may call, even with tokens configured: probes and discovery.
PUBLIC_ROUTES = frozenset({"/healthz", "/metrics", "/v1/openapi.json"})


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, map every failure to the one error shape, and count the request.

    One middleware rather than three: each layer costs a coroutine per request.
    """
    started = time.perf_counter()
    node = request.app[NODE]
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        if route_name not in PUBLIC_ROUTES:
            principal = node.auth.authenticate(request.headers.get("Authorization"))
            if principal is None:
                raise ApiError(
                    "unauthorized",
                    "missing or unknown bearer token",
                    headers={"WWW-Authenticate": 'Bearer realm="edgekv"'},
                )
            request[PRINCIPAL] = principal
        response = await handler(request)
    except ApiError as error:
        response = error_response(error)
    except web.HTTPException as exc:
        code = HTTP_STATUS_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "")
        if not code:
            raise
        allow = exc.headers.get("Allow")
        response = error_response(
            ApiError(code, exc.reason or code, headers={"Allow": allow} if allow else None)
        )
    except WriterClosed:
        response = error_response(ApiError("unavailable", "the node is shutting down"))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(ApiError("internal_error", "internal error; nothing written"))
    node.metrics.observe_request(
        request.method, route_name, response.status, time.perf_counter() - started
    )
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness and identity: 200 while the node serves."""
    store = request.app[NODE].store
    return web.json_response({"status": "ok", "node_id": f"{store.node_id:016x}", "seq": store.seq})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = request.app[NODE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every route."""
    return web.json_response(openapi_document())


def create_app(node: Node) -> web.Application:
    """Return the aiohttp application serving ``node``."""
    app = web.Application(
        middlewares=[edge_middleware],
        client_max_size=node.config.max_request_bytes,
    )
    app[NODE] = node
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_routes(kv_routes.routes)
    app.router.add_routes(cluster_routes.routes)
    return app
