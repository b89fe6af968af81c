"""The counter routes: ``/v1/counters/{ns}/{key}`` (PN-counters, see docs/api.md).

``GET`` answers ``{"value", "version"}``; ``POST {"add": n}`` adds and answers
the value this PoP then sees with the write's bookmark; ``DELETE`` resets
(observed-remove: adds this PoP has not seen survive). Counters use the
namespace's read and write scopes. In a strong namespace an add runs in
PostgreSQL and may carry bounds (``min``/``max``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.bookmarks import write_answer
from edgekv.http.errors import ApiError
from edgekv.http.kv_routes import authorized
from edgekv.store.crdts import RowTooLarge
from edgekv_replication import intake
from edgekv_replication.bookmarks import Bookmark
from edgekv_replication.counters import CounterOutOfBounds, CounterOverflow
from edgekv_replication.versions import encode_version

routes = web.RouteTableDef()

COUNTER_BODY_BYTES = 4096
"""Far above the largest valid body (five 64-bit integers); refused before parsing."""
_FIELDS = ("add", "ttl", "expiration", "min", "max")


def _refused(refusal: intake.Refused) -> ApiError:
    return ApiError(refusal.code, refusal.message)


@routes.get("/v1/counters/{ns}/{key:(?s:.+)}")  # type: ignore[arg-type]  # sync: see edgekv.http.app
def get_counter(request: web.Request) -> web.Response:
    """The counter's value and version as this PoP holds it (0 and null if never written)."""
    node, ns = authorized(request, "read")
    key = check.path_key(request, node.config)
    value, version = node.counter_value(ns, key)
    # Both fields are plain: the JSON is written directly, on a hot read path.
    text = "null" if version is None else f'"{encode_version(*version)}"'
    return web.Response(
        text=f'{{"value": {value}, "version": {text}}}', content_type="application/json"
    )


@routes.post("/v1/counters/{ns}/{key:(?s:.+)}")
async def add_to_counter(request: web.Request) -> web.Response:
    """Add a signed 64-bit integer; answer the value this PoP then sees."""
    node, ns = authorized(request, "write")
    key = check.path_key(request, node.config)
    document = check.json_object(await bodies.read_within(request, COUNTER_BODY_BYTES))
    amount, expiration, low, high = _add_request(document)
    try:
        written = await node.counter_add(ns, key, amount, expiration, low, high)
    except CounterOverflow as exc:
        raise ApiError("counter_overflow", str(exc)) from None
    except CounterOutOfBounds as exc:
        raise ApiError("counter_out_of_bounds", str(exc), details={"value": exc.value}) from None
    except RowTooLarge as exc:
        raise ApiError("invalid_request", str(exc)) from None
    node.metrics.writes += 1
    bookmark = Bookmark(node.store.node_id, written.seq, written.hlc).encode()
    # Every field is a number or ASCII hex: the JSON is written directly (hot path).
    text = f'{{"value": {written.value}, "bookmark": "{bookmark}"'
    if written.hlc:
        text += f', "version": "{encode_version(written.hlc, written.node)}"'
    return web.Response(text=text + "}", content_type="application/json")


def _add_request(document: Mapping[str, Any]) -> tuple[int, int | None, int | None, int | None]:
    bodies.refuse_unknown_fields(document, _FIELDS)
    if "add" not in document:
        raise ApiError("invalid_json", 'body must be {"add": n}')
    try:
        amount = intake.check_counter_amount(document["add"])
        low, high = (
            None
            if document.get(name) is None
            else intake.check_counter_amount(document[name], name)
            for name in ("min", "max")
        )
    except intake.Refused as refusal:
        raise _refused(refusal) from None
    ttl, at = document.get("ttl"), document.get("expiration")
    if isinstance(ttl, str) or isinstance(at, str):
        raise ApiError("invalid_expiration", "ttl and expiration are integers of seconds")
    return amount, check.expiration(ttl, at), low, high


@routes.delete("/v1/counters/{ns}/{key:(?s:.+)}")
async def reset_counter(request: web.Request) -> web.Response:
    """Reset: remove every contribution this PoP has seen (adds it has not seen survive)."""
    node, ns = authorized(request, "write")
    key = check.path_key(request, node.config)
    try:
        return write_answer(node, await node.counter_reset(ns, key))
    except RowTooLarge as exc:
        raise ApiError("invalid_request", str(exc)) from None


SESSION_READS = frozenset({get_counter})
"""Reads that honour a session's bookmarks (see :mod:`edgekv.http.bookmarks`)."""
