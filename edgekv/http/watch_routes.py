"""Watch routes (SSE): ``GET /v1/kv/{ns}/_watch``, ``/v1/docs/{collection}/_watch``,
``/v1/counters/{ns}/_watch`` and ``/v1/sets/{ns}/_watch``.

The handler only parses and checks the request (scope, filter, resume token,
limits: all before the stream starts, so a refusal has the error shape) and
hands an open :class:`~edgekv.watch.stream.WatchStream` the response to write
to. Registered before the key, document, counter and set routes, whose
``{key}`` would otherwise take ``_watch``.
"""

from __future__ import annotations

import logging
import math

from aiohttp import hdrs, web

from edgekv.http import validation as check
from edgekv.http.doc_routes import authorized as authorized_collection
from edgekv.http.doc_routes import document_id
from edgekv.http.errors import ApiError
from edgekv.http.kv_routes import authorized
from edgekv.http.sse_sink import ResponseSink
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.watch.hub import TooManyWatchers
from edgekv.watch.kinds import WatchFilter
from edgekv.watch.stream import WatchStream
from edgekv_replication.watch_tokens import LAST_EVENT_ID, WatchToken

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_WATCH_KEYS = 100
"""Most ``keys`` one watch names (a longer list is a prefix, or several watches)."""

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and its kin: pass events on as they come
}


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ApiError("invalid_parameter", f"{name} is 'true' or 'false'")


def _token(request: web.Request) -> WatchToken | None:
    text = request.query.get("after") or request.headers.get(LAST_EVENT_ID)
    if not text:
        return None
    try:
        return WatchToken.decode(text.strip())
    except ValueError:
        raise ApiError("invalid_watch_token", "the watch token was not issued by EdgeKV") from None


def _filter(request: web.Request, node: Node, space: str, key_code: str) -> WatchFilter:
    query = request.query
    prefix_text = check.utf8_query_value(request, query.get("prefix"), key_code)
    prefix = check.prefix(prefix_text, node.config)
    texts = query.getall("keys", [])
    if len(texts) > MAX_WATCH_KEYS:
        raise ApiError("invalid_parameter", f"a watch names at most {MAX_WATCH_KEYS} keys")
    keys = None
    if texts:
        if prefix:
            raise ApiError("invalid_parameter", "give prefix or keys, not both")
        for text in texts:
            check.utf8_query_value(request, text, key_code)
        if key_code == "invalid_key":
            keys = frozenset(check.key(text, node.config) for text in texts)
        else:
            limit = node.config.max_key_bytes
            keys = frozenset(document_id(text, limit).encode() for text in texts)
    include_values = _flag(request, "include_values", True)
    return WatchFilter(space, prefix, keys, include_values)


@routes.get("/v1/kv/{ns}/_watch")
async def watch_keys(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of a namespace's changes (under a prefix, or of some keys)."""
    _, ns = authorized(request, "read")
    return await _serve(request, "kv", ns, "invalid_key")


@routes.get("/v1/docs/{collection}/_watch")
async def watch_documents(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of a collection's documents (each event the whole document)."""
    _, collection = authorized_collection(request, "read")
    return await _serve(request, "docs", collection, "invalid_document_id")


@routes.get("/v1/counters/{ns}/_watch")
async def watch_counters(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of a namespace's counters: each changed counter's value now."""
    _, ns = authorized(request, "read")
    return await _serve(request, "counters", ns, "invalid_key")


@routes.get("/v1/sets/{ns}/_watch")
async def watch_sets(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of a namespace's sets: each member added or removed."""
    _, ns = authorized(request, "read")
    return await _serve(request, "sets", ns, "invalid_key")


async def _serve(request: web.Request, kind: str, space: str, key_code: str) -> web.StreamResponse:
    node = request.app[NODE]
    watch = _filter(request, node, space, key_code)
    token = _token(request)
    snapshot = _flag(request, "snapshot", False)
    if request.method == hdrs.METH_HEAD:  # what a GET would answer, and no stream
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        return response
    hub = node.watch
    try:
        watcher = hub.open(kind, watch, request[PRINCIPAL].name)
    except TooManyWatchers as exc:
        retry = str(max(1, math.ceil(node.config.watch_heartbeat)))
        raise ApiError("too_many_watchers", str(exc), headers={"Retry-After": retry}) from None
    try:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        try:
            sink = ResponseSink(request, response)
            stream = WatchStream(hub, node.store, node.store.identity.incarnation, watcher, sink)
            await stream.run(token, snapshot)
        except (ConnectionError, RuntimeError) as exc:
            # The client went (a write found its connection closed, or aiohttp's drain
            # raised ClientConnectionResetError): its last event id resumes it.
            log.debug("watch stream ended: %s", exc)
        except Exception:
            # The stream has begun: no error shape can follow. The client resumes.
            log.exception("watch stream failed")
            if request.transport is not None:
                request.transport.abort()
        return response
    finally:
        hub.close(watcher)
