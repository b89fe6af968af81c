"""The aiohttp application of a node: one wrapper around every route, and assembly.

Every handler runs inside :func:`_endpoint`, which authenticates, maps every
failure to the one error shape and counts the request. Each route is of one
:class:`Access` kind, named where it is registered: public (no credentials),
client (a bearer token) or peer (the cluster secret). A client token never
opens a peer route and the cluster secret never opens a client route, so
adding a route means choosing its kind. A wrapper per route
rather than an aiohttp middleware: the middleware machinery costs more per
request than the work it does, and GET is the path edge functions wait on.
Paths and methods no route takes land on a catch-all route that answers the
same error shape (404 ``not_found`` or 405 ``method_not_allowed``).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import HttpVersion11, web
from aiohttp.hdrs import EXPECT, HOST, ORIGIN, SEC_FETCH_DEST, SEC_FETCH_MODE, SEC_FETCH_SITE

from edgekv.auth import OPEN_ACCESS
from edgekv.console.sampler import Sampler
from edgekv.documents import compaction as doc_compaction
from edgekv.documents.query import QueryError
from edgekv.http import (
    admin_routes,
    bodies,
    cluster_routes,
    console_routes,
    counter_routes,
    doc_routes,
    kv_routes,
    operator_routes,
    set_routes,
    watch_routes,
)
from edgekv.http.bookmarks import HEADER as BOOKMARK_HEADER
from edgekv.http.bookmarks import head_bookmark, parse_bookmarks, wait_until_reached
from edgekv.http.errors import ApiError, error_response, from_http_exception
from edgekv.http.openapi import openapi_document
from edgekv.http.peer_stream import check_peer_secret
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.http.strong import STRONG_ERRORS
from edgekv.http.strong import api_error as strong_api_error
from edgekv.node import Node
from edgekv.store.faults import is_corruption, is_storage_full
from edgekv.store.writer import WriterClosed
from edgekv_replication.documents import DocumentError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SyncHandler = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]
"""A handler that rarely waits (reads): called without a coroutine of its own; it
returns an awaitable for the few requests that must wait."""

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="edgekv"'}
_UNTRUSTED_HOST = (
    "without tokens this node answers only requests to a loopback Host "
    "(127.0.0.1, ::1, localhost); configure tokens to serve other names"
)
_UNTRUSTED_ORIGIN = (
    "without tokens this node answers no web page whose origin is not loopback; "
    "configure tokens (see CORS in docs/configuration.md)"
)


class Access(enum.Enum):
    """Who may call a route: the one authentication decision of each route."""

    PUBLIC = "public"
    """Probes and discovery: no credentials."""
    CLIENT = "client"
    """A bearer token (any local caller in protected mode); handlers check its scopes."""
    PEER = "peer"
    """Another node: the cluster secret, compared in constant time. Never a client
    token, whatever its scopes: a peer stream carries every namespace."""


def _endpoint(node: Node, handler: Handler | SyncHandler, route: str, access: Access) -> Handler:
    """Wrap ``handler``: authentication, the one error shape, request metrics, and
    for reads, waiting for the session's bookmarks (:mod:`edgekv.http.bookmarks`)."""
    auth, observe, limiter = node.auth, node.metrics.observe_request, node.rate_limiter
    is_async = inspect.iscoroutinefunction(handler)
    # A read that honours bookmarks names the check of its token's scope: made before
    # the wait, so a token that may not read there is refused at once, never held.
    authorize_read = (
        kv_routes.authorize_read
        if handler in kv_routes.SESSION_READS
        else doc_routes.authorize_read
        if handler in doc_routes.SESSION_READS
        else kv_routes.authorize_read
        if handler in counter_routes.SESSION_READS | set_routes.SESSION_READS
        else None
    )
    honours_bookmarks = authorize_read is not None
    # Protected mode trusts every (loopback) caller: no header to look at.
    check_token = access is Access.CLIENT and not auth.protected_mode
    open_access = access is Access.CLIENT and auth.protected_mode
    check_secret = access is Access.PEER
    # ...but only callers on this machine: not a web page or a DNS-rebound name.
    local_only = auth.protected_mode
    guard = node.loopback_guard
    local_hosts = guard.local_hosts

    async def endpoint(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            if local_only:
                headers = request.headers
                host = headers.get(HOST)
                if host not in local_hosts and not guard.local_host(host):
                    raise ApiError("untrusted_origin", _UNTRUSTED_HOST)
                origin = headers.get(ORIGIN)
                if origin is not None and not guard.local_origin(origin):
                    raise ApiError("untrusted_origin", _UNTRUSTED_ORIGIN)
                if origin is None and guard.foreign_subresource(
                    request.method,
                    headers.get(SEC_FETCH_SITE),
                    headers.get(SEC_FETCH_MODE),
                    headers.get(SEC_FETCH_DEST),
                ):
                    raise ApiError("untrusted_origin", _UNTRUSTED_ORIGIN)
            if check_secret:
                check_peer_secret(request)
            elif check_token:
                principal = auth.authenticate(request.headers.get("Authorization"))
                if principal is None:
                    raise ApiError(
                        "unauthorized", "missing or unknown bearer token", headers=_UNAUTHORIZED
                    )
                wait = limiter.retry_after(principal)
                if wait is not None:
                    raise ApiError(
                        "rate_limited",
                        f"token {principal.name!r} is over its rate limit",
                        headers={"Retry-After": str(wait)},
                    )
                request[PRINCIPAL] = principal
            elif open_access:
                request[PRINCIPAL] = OPEN_ACCESS
            in_session = False
            if honours_bookmarks:
                # One header lookup: present (even empty) marks a session read.
                text = request.headers.get(BOOKMARK_HEADER)
                in_session = text is not None
                if not text and request.query_string:
                    text = request.query.get("bookmark")
                if text:
                    assert authorize_read is not None
                    authorize_read(request)
                    await wait_until_reached(node, parse_bookmarks(text))
            response: web.StreamResponse
            if is_async:
                response = await handler(request)  # type: ignore[misc]
            else:
                response = handler(request)  # type: ignore[assignment]
                if not isinstance(response, web.StreamResponse):
                    # A sync read that must wait after all (a strong read) hands back a coroutine.
                    response = await response
            if in_session:
                # What this read saw: later reads of the session, anywhere, see no less.
                response.headers[BOOKMARK_HEADER] = head_bookmark(node)
        except ApiError as error:
            response = error_response(error)
        except STRONG_ERRORS as exc:  # the node's strong operations, from any route
            response = error_response(strong_api_error(exc))
        except (DocumentError, QueryError) as error:  # bad document input, found below HTTP
            response = error_response(ApiError(error.code, error.message))
        except web.HTTPException as exc:  # aiohttp's own, e.g. 413 from request.read()
            if exc.status < 400:  # a redirect is not an error
                raise
            response = error_response(from_http_exception(exc))
        except web.RequestPayloadError as exc:
            # The body broke off mid-way or its framing is invalid: the client's fault.
            unreadable = ApiError("invalid_request", f"unreadable request body: {exc}")
            response = error_response(unreadable)
        except WriterClosed:
            response = error_response(ApiError("unavailable", "the node is shutting down"))
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            # aiohttp fails the body's reads with these once the connection is lost (a
            # CancelledError too while the node stops): the client went away mid-body.
            if _client_gone(request, exc):
                log.debug("%s %s: the client went away mid-request", request.method, route)
                observe(request.method, route, CLIENT_CLOSED, time.perf_counter() - started)
                return web.Response(status=CLIENT_CLOSED)  # to no one: aiohttp drops it
            if not isinstance(exc, Exception):
                raise  # the handler itself is cancelled
            response = error_response(_unhandled(node, request, exc))
        except Exception as exc:
            response = error_response(_unhandled(node, request, exc))
        bodies.close_if_body_unsent(request, response)
        observe(request.method, route, response.status, time.perf_counter() - started)
        return response

    return endpoint


CLIENT_CLOSED = 499
"""The status counted (``edgekv_http_requests``) for a request whose client closed the
connection before its answer (nginx's convention): neither a client error nor a
server fault, and no answer is sent."""


def _client_gone(request: web.Request, exc: BaseException) -> bool:
    """Whether ``exc`` comes of the client's connection being lost, not of a fault or
    a cancellation of the handler: the transport is gone, and for a CancelledError
    no one cancelled the handler's task (aiohttp failed the body's read with it)."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        return False  # e.g. a reset connection to PostgreSQL: a fault of the node's
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return True


def _unhandled(node: Node, request: web.Request, exc: Exception) -> ApiError:
    """The answer to an exception no handler expected: storage faults get their own codes."""
    if is_storage_full(exc):
        # A full disk is an operating condition, not a bug: no traceback per write.
        log.warning("write refused, the disk is full: %s %s: %s", request.method, request.path, exc)
        return ApiError(
            "storage_full",
            "the node's disk is full: nothing was written; reads keep working, and writes "
            "succeed again once space is freed",
        )
    if is_corruption(exc):
        return ApiError("storage_corrupt", node.store.health.report_corruption(str(exc)))
    log.exception("unhandled error in %s %s", request.method, request.path)
    return ApiError("internal_error", "internal error; nothing written")


async def healthz(request: web.Request) -> web.Response:
    """Liveness and identity: 200 while the node serves, 503 once its database is found damaged."""
    store = request.app[NODE].store
    if store.health.corruption is not None:
        raise ApiError("storage_corrupt", store.health.corruption)
    return web.json_response({"status": "ok", "node_id": f"{store.node_id:016x}", "seq": store.seq})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = request.app[NODE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every route."""
    return web.json_response(openapi_document())


async def no_route(request: web.Request) -> web.Response:
    """404 for a path no route has; 405 (with ``Allow``) for a method it lacks."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        _, methods = await resource.resolve(request)
        if "*" not in methods:  # the catch-all itself takes every method
            allowed |= methods
    if allowed:
        raise ApiError(
            "method_not_allowed",
            f"{request.method} is not allowed here",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    raise ApiError("not_found", "no such route")


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: the ``100 Continue`` waits until the route reads the body
    (:func:`edgekv.http.bodies.defer_continue`); any other expectation in the error shape."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get(EXPECT, "").lower() != "100-continue":
        return error_response(ApiError("expectation_failed", "Expect may only be 100-continue"))
    bodies.defer_continue(request)
    return None


CATCH_ALL = "/{tail:(?s:.*)}"  # (?s): a path holding a decoded newline is a path too
_PATTERN = re.compile(r"\{(\w+):[^}]+\}")  # "{key:(?s:.+)}" is labelled "{key}" in metrics

RouteSpec = tuple[str, str, Handler | SyncHandler, Access]
"""(method, path, handler, access)."""

SYSTEM_ROUTES: tuple[RouteSpec, ...] = (
    ("GET", "/healthz", healthz, Access.PUBLIC),
    ("GET", "/metrics", metrics, Access.PUBLIC),
    ("GET", "/v1/openapi.json", openapi, Access.PUBLIC),
)


def _route_defs(table: web.RouteTableDef, access: Access) -> Iterable[RouteSpec]:
    for route in table:
        assert isinstance(route, web.RouteDef)
        yield route.method, route.path, route.handler, access


def create_app(node: Node) -> web.Application:
    """Return the aiohttp application serving ``node``."""
    app = web.Application(client_max_size=node.config.max_request_bytes)
    app[NODE] = node
    if node.config.tokens and node.config.cluster_secret is None:
        log.warning(
            "tokens are configured but no cluster_secret: every peer request will be "
            "refused (set cluster_secret_file or EDGEKV_CLUSTER_SECRET to replicate)"
        )
    routes = [
        *SYSTEM_ROUTES,
        *_route_defs(watch_routes.routes, Access.CLIENT),  # before {key} and {id} take _watch
        *_route_defs(kv_routes.routes, Access.CLIENT),
        *_route_defs(doc_routes.routes, Access.CLIENT),
        *_route_defs(counter_routes.routes, Access.CLIENT),
        *_route_defs(set_routes.routes, Access.CLIENT),
        *_route_defs(cluster_routes.routes, Access.CLIENT),
        *_route_defs(operator_routes.routes, Access.CLIENT),
        *_route_defs(cluster_routes.peer_routes, Access.PEER),
    ]
    if node.config.console:  # the web console (docs/console.md) and its admin routes
        routes += [
            *_route_defs(console_routes.routes, Access.PUBLIC),
            *_route_defs(admin_routes.routes, Access.CLIENT),
        ]
        sampler = app[admin_routes.SAMPLER] = Sampler(node)
        app.cleanup_ctx.append(sampler.running)
    for method, path, handler, access in routes:
        wrapped = _endpoint(node, handler, _PATTERN.sub(r"{\1}", path), access)
        if method == "GET":
            app.router.add_get(path, wrapped, expect_handler=expect_continue)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped, expect_handler=expect_continue)
    app.cleanup_ctx.append(doc_compaction.compactor(node.store.documents))
    # Last, so it only takes what no route above matched.
    catch_all = _endpoint(node, no_route, "unmatched", Access.PUBLIC)
    app.router.add_route("*", CATCH_ALL, catch_all, expect_handler=expect_continue)
    return app
