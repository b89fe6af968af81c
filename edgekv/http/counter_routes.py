"""The counter routes: ``/v1/counters/{ns}/{key}`` (PN-counters, see docs/api.md).

``GET`` answers ``{"value", "version"}`` (``?consistency=strong``: from
PostgreSQL, strong namespaces only); ``POST {"add": n}`` adds and answers the
value this PoP then sees with the write's bookmark; ``DELETE`` resets
(observed-remove: adds this PoP has not seen survive). Counters use the
namespace's read and write scopes: the value is a read, so a token that may
only write is answered without it, and a bounded add (``min``/``max``, which
a strong namespace takes, atomically in PostgreSQL) needs both scopes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from aiohttp import web

from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.bookmarks import write_answer
from edgekv.http.errors import ApiError
from edgekv.http.kv_routes import authorized, consistency
from edgekv.http.state import PRINCIPAL
from edgekv.node import Node
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
def get_counter(request: web.Request) -> web.Response | Awaitable[web.Response]:
    """The counter's value and version as this PoP holds it (0 and null if never written)."""
    node, ns = authorized(request, "read")
    key = check.path_key(request, node.config)
    if request.query_string and consistency(request) == "strong":
        return _strong_get(node, ns, key)  # a coroutine: the endpoint awaits it
    return _counter_response(*node.counter_value(ns, key))


async def _strong_get(node: Node, ns: str, key: bytes) -> web.Response:
    return _counter_response(*await node.counter_value_strong(ns, key))


def _counter_response(value: int, version: tuple[int, int] | None) -> web.Response:
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
    may_read = request[PRINCIPAL].allows("read", ns)
    if not may_read and (low is not None or high is not None):
        # Whether a bounded add passes, and the value its refusal carries, are reads.
        raise ApiError(
            "forbidden", f"a bounded add reads the counter: this token may not read {ns!r}"
        )
    try:
        written = await node.counter_add(ns, key, amount, expiration, low, high)
    except CounterOverflow as exc:
        # Its message may name the value, which a token that may only write must not see.
        message = str(exc) if may_read else "the add would take the counter beyond 64 bits"
        raise ApiError("counter_overflow", message) from None
    except CounterOutOfBounds as exc:
        raise ApiError("counter_out_of_bounds", str(exc), details={"value": exc.value}) from None
    except RowTooLarge as exc:
        raise ApiError("invalid_request", str(exc)) from None
    node.metrics.writes += 1
    bookmark = Bookmark(node.store.node_id, written.seq, written.hlc).encode()
    # Every field is a number or ASCII hex: the JSON is written directly (hot path).
    # The value is a read: a token that may only write is not told it.
    text = f'{{"bookmark": "{bookmark}"'
    if may_read:
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
        # Present means an integer: a null bound is refused, never read as no bound.
        low, high = (
            intake.check_counter_amount(document[name], name) if name in document else None
            for name in ("min", "max")
        )
    except intake.Refused as refusal:
        raise _refused(refusal) from None
    if low is not None and high is not None and low > high:
        raise ApiError("invalid_json", f"min ({low}) is above max ({high}): no value is allowed")
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
