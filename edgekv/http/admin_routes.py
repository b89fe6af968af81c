"""Read-only admin routes behind the web console: metrics history, recent changes, names.

All need the admin scope, as ``/v1/cluster/status`` does: they show every
namespace and collection, whatever a token's read scopes name.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from edgekv.console.sampler import Sampler
from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.store.browse import RecentChange

routes = web.RouteTableDef()

SAMPLER = web.AppKey("console_sampler", Sampler)
"""The app's metrics sampler (present when the console is on)."""

MAX_NAMES = 1000
"""Most namespaces or collections one answer lists."""
PREVIEW_BYTES = 256
"""A recent change's value is answered cut to this many bytes."""
MAX_CHANGES = 200
"""Most changes one page of recent changes answers (default 50)."""
SCAN_ROWS = 10_000
"""Most log rows one page of recent changes examines, whatever its filter matches."""


def _admin(request: web.Request) -> Node:
    if not request[PRINCIPAL].allows("admin"):
        raise ApiError("forbidden", "this route needs the admin scope")
    return request.app[NODE]


def _int_parameter(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (len(raw) <= 20 and raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError("invalid_parameter", f"{name} must be an integer from {low} to {high}")
    return int(raw)


@routes.get("/v1/admin/history")
async def history(request: web.Request) -> web.Response:
    """The last hour of this node's metrics, sampled every 5 s, for the console's charts."""
    _admin(request)
    sampler = request.app.get(SAMPLER)
    if sampler is None:
        raise ApiError("not_found", "the console is off on this node (console = false)")
    return web.json_response(sampler.history.document())


@routes.get("/v1/admin/namespaces")
async def namespaces(request: web.Request) -> web.Response:
    """Namespaces holding live keys, with their counts."""
    node = _admin(request)
    rows = node.store.browse.namespaces(time.time(), MAX_NAMES + 1)
    return web.json_response(
        {
            "namespaces": [{"name": ns, "keys": count} for ns, count in rows[:MAX_NAMES]],
            "list_complete": len(rows) <= MAX_NAMES,
        }
    )


@routes.get("/v1/admin/collections")
async def collections(request: web.Request) -> web.Response:
    """Document collections holding live documents, with their counts."""
    node = _admin(request)
    rows = node.store.browse.collections(MAX_NAMES + 1)
    return web.json_response(
        {
            "collections": [{"name": name, "documents": count} for name, count in rows[:MAX_NAMES]],
            "list_complete": len(rows) <= MAX_NAMES,
        }
    )


def _change_json(change: RecentChange) -> dict[str, Any]:
    preview = change.preview
    document: dict[str, Any] = {
        "seq": change.seq,
        "ns": change.ns,
        "key": change.key.decode("utf-8", "replace"),
        "op": "delete" if preview is None else "put",
        "version": f"{change.hlc:016x}{change.node:016x}",
        "origin": f"{change.node:016x}",
        "value_bytes": change.value_bytes,
        "expiration": change.expiration,
    }
    if preview is not None:
        truncated = change.value_bytes is not None and change.value_bytes > len(preview)
        try:
            # A cut may split a character: drop at most its 3 leading bytes.
            text = preview.decode("utf-8") if not truncated else _decode_cut(preview)
            document["preview"], document["preview_kind"] = text, "text"
        except UnicodeDecodeError:
            document["preview"], document["preview_kind"] = preview.hex(), "hex"
        document["truncated"] = truncated
    return document


def _decode_cut(preview: bytes) -> str:
    for cut in range(4):
        try:
            return preview[: len(preview) - cut].decode("utf-8")
        except UnicodeDecodeError:
            if cut == 3:
                raise
    raise AssertionError("unreachable")


@routes.get("/v1/admin/changes")
async def changes(request: web.Request) -> web.Response:
    """Recent key-value changes of the log, newest first, values cut to a preview."""
    node = _admin(request)
    query = request.query
    newest = node.store.seq + 1
    before = _int_parameter(query.get("before"), "before", newest, 1, 2**63 - 1)
    limit = _int_parameter(query.get("limit"), "limit", 50, 1, MAX_CHANGES)
    raw_ns = query.get("ns")
    ns = check.namespace(raw_ns) if raw_ns else None
    prefix_text = check.utf8_query_value(request, query.get("prefix"), "invalid_key")
    prefix = check.prefix(prefix_text, node.config)
    rows, next_before = node.store.browse.recent_changes(
        before, limit, ns, prefix, PREVIEW_BYTES, SCAN_ROWS
    )
    return web.json_response(
        {
            "changes": [_change_json(row) for row in rows],
            "seq": node.store.seq,
            "before": next_before or None,
        }
    )
