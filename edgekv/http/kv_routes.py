"""The key-value routes: ``/v1/kv/{ns}`` and ``/v1/kv/{ns}/{key}``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence

from aiohttp import web

from edgekv.auth import Action
from edgekv.http import bodies, strong
from edgekv.http import validation as check
from edgekv.http.bookmarks import write_answer
from edgekv.http.errors import ApiError
from edgekv.http.get_many import answer_pieces
from edgekv.http.sliced import SLICE_BYTES, SlicedPayload
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.store.kv import Entry, Write
from edgekv.upstream.strong import Condition

routes = web.RouteTableDef()
# Registration order is match order within /v1/kv: the hot key routes go first.


def authorized(request: web.Request, action: Action) -> tuple[Node, str]:
    """Return the node and the request's namespace, once the caller may do ``action``
    (the key-value, counter, set and watch routes all check through here)."""
    ns = check.namespace(request.match_info["ns"])
    if not request[PRINCIPAL].allows(action, ns):
        raise ApiError("forbidden", f"this token may not {action} namespace {ns!r}")
    return request.app[NODE], ns


def authorize_read(request: web.Request) -> None:
    """Raise ``forbidden`` unless the caller may read the request's namespace."""
    authorized(request, "read")


@routes.get("/v1/kv/{ns}/{key:(?s:.+)}")  # type: ignore[arg-type]  # sync: see edgekv.http.app
def get_value(request: web.Request) -> web.Response | Awaitable[web.Response]:
    """Return a key's raw value; metadata and expiration in headers."""
    node, ns = authorized(request, "read")
    key = check.path_key(request, node.config)
    if request.query_string and consistency(request) == "strong":
        return _strong_get(node, ns, key)  # a coroutine: the endpoint awaits it
    return _value_response(node.read(ns, key))


def consistency(request: web.Request) -> str:
    """The read's ``consistency`` (``eventual`` unless given), or ``invalid_parameter``."""
    asked = request.query.get("consistency", "eventual")
    if asked not in ("eventual", "strong"):
        raise ApiError("invalid_parameter", "consistency is 'eventual' or 'strong'")
    return asked


async def _strong_get(node: Node, ns: str, key: bytes) -> web.Response:
    return _value_response(await node.read_strong(ns, key))


def _value_response(entry: Entry | None) -> web.Response:
    if entry is None:
        raise ApiError("not_found", "no such key")
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{entry.hlc:016x}{entry.node:016x}"',  # encode_version, inlined: hot path
    }
    if entry.metadata is not None:
        headers["EdgeKV-Metadata"] = entry.metadata
    if entry.expiration is not None:
        headers["EdgeKV-Expiration"] = str(entry.expiration)
    if len(entry.value) > SLICE_BYTES:  # sent without copying the value (see sliced)
        body = SlicedPayload([entry.value], "application/octet-stream")
        return web.Response(body=body, headers=headers)
    return web.Response(body=entry.value, headers=headers)


@routes.put("/v1/kv/{ns}/{key:(?s:.+)}")
async def put_value(request: web.Request) -> web.Response:
    """Store the request body as the key's value."""
    node, ns = authorized(request, "write")
    config = node.config
    key = check.path_key(request, config)
    expiration = (
        check.expiration(request.query.get("ttl"), request.query.get("expiration"))
        if request.query_string  # most writes carry none: skip parsing an empty query
        else None
    )
    metadata = check.metadata_header(request.headers.get("EdgeKV-Metadata"), config)
    value = await bodies.read_within(request, config.max_value_bytes, "value_too_large", "value")
    return await _write_one(request, node, ns, Write(key, value, metadata, expiration))


async def _write_one(request: web.Request, node: Node, ns: str, write: Write) -> web.Response:
    """Write one key, with the condition of its ``If-Match`` / ``If-None-Match`` if any."""
    headers = request.headers
    conditions: Sequence[Condition] = ()
    if "If-Match" in headers or "If-None-Match" in headers:
        node.require_strong(ns, "a conditional write")  # before the header is parsed
        condition = strong.header_condition(request, write.key)
        conditions = () if condition is None else (condition,)
    return write_answer(node, await node.write(ns, [write], conditions))


@routes.delete("/v1/kv/{ns}/{key:(?s:.+)}")
async def delete_value(request: web.Request) -> web.Response:
    """Delete a key (a tombstone that replicates); deleting an absent key succeeds."""
    node, ns = authorized(request, "write")
    key = check.path_key(request, node.config)
    return await _write_one(request, node, ns, Write(key, None))


@routes.get("/v1/kv/{ns}")  # type: ignore[arg-type]  # sync: see edgekv.http.app
def list_keys(request: web.Request) -> web.Response:
    """List live keys in byte order, a page at a time."""
    node, ns = authorized(request, "read")
    query = request.query
    prefix_text = check.utf8_query_value(request, query.get("prefix"), "invalid_key")
    prefix = check.prefix(prefix_text, node.config)
    limit = check.limit(query.get("limit"), node.config)
    after = check.decode_cursor(query.get("cursor"))
    rows, resume_after = node.store.list_page(ns, prefix, after, limit + 1)
    if len(rows) > limit:
        rows, resume_after = rows[:limit], rows[limit - 1].key
    keys = [
        {
            "name": row.key.decode("utf-8"),
            "expiration": row.expiration,
            "metadata": json.loads(row.metadata) if row.metadata else None,
        }
        for row in rows
    ]
    cursor = None if resume_after is None else check.encode_cursor(resume_after)
    return web.json_response({"keys": keys, "list_complete": cursor is None, "cursor": cursor})


@routes.post("/v1/kv/{ns}/_bulk")
async def bulk(request: web.Request) -> web.Response:
    """Apply up to ``max_bulk_operations`` puts and deletes atomically."""
    node, ns = authorized(request, "write")
    body = await bodies.read_within(request, node.config.max_request_bytes)
    writes = await bodies.parse_off_loop(body, lambda document: _bulk_writes(document, node))
    return write_answer(node, await node.write(ns, writes), len(writes))


@routes.post("/v1/kv/{ns}/_txn")
async def transaction(request: web.Request) -> web.Response:
    """Check conditions and apply puts and deletes in one linearizable transaction."""
    node, ns = authorized(request, "write")
    node.require_strong(ns, "a transaction")
    body = await bodies.read_within(request, node.config.max_request_bytes)
    conditions, writes = await bodies.parse_off_loop(
        body, lambda document: _transaction(document, node)
    )
    return write_answer(node, await node.write(ns, writes, conditions), len(writes))


def _bulk_writes(document: Mapping[str, object], node: Node) -> list[Write]:
    """The writes of a bulk body (on a worker thread when the body is large)."""
    bodies.refuse_unknown_fields(document, ("operations",))
    return _operations(document, node)


def _transaction(document: Mapping[str, object], node: Node) -> tuple[list[Condition], list[Write]]:
    """The conditions and writes of a transaction body (on a worker thread when large)."""
    bodies.refuse_unknown_fields(document, ("conditions", "operations"))
    conditions = strong.transaction_conditions(document, node)
    if len(conditions) > node.config.max_bulk_operations:
        raise ApiError(
            "too_many_operations",
            f"{len(conditions)} conditions; the limit is {node.config.max_bulk_operations}",
        )
    return conditions, _operations(document, node)


def _operations(document: Mapping[str, object], node: Node) -> list[Write]:
    """The writes of a bulk or transaction body's ``operations``."""
    operations = document.get("operations")
    if not isinstance(operations, list) or not operations:
        raise ApiError("invalid_json", 'body must be {"operations": [...]} with at least one')
    if len(operations) > node.config.max_bulk_operations:
        raise ApiError(
            "too_many_operations",
            f"{len(operations)} operations; the limit is {node.config.max_bulk_operations}",
        )
    return [_bulk_write(index, op, node) for index, op in enumerate(operations)]


_DELETE_FIELDS = frozenset({"op", "key"})
_PUT_FIELDS = frozenset({"op", "key", "value", "metadata", "ttl", "expiration"})


def _bulk_write(index: int, op: object, node: Node) -> Write:
    where = f"operations[{index}]"
    if not isinstance(op, Mapping):
        raise ApiError("invalid_json", f"{where} must be an object")
    kind = op.get("op")
    try:
        key = check.key(op.get("key"), node.config)
        if kind == "delete":
            bodies.refuse_unknown_fields(op, _DELETE_FIELDS)
            return Write(key, None)
        if kind != "put":
            raise ApiError("invalid_json", 'op must be "put" or "delete"')
        bodies.refuse_unknown_fields(op, _PUT_FIELDS)
        value = check.base64_value(op.get("value"), "value")
        check.value_size(len(value), node.config)
        ttl, at = op.get("ttl"), op.get("expiration")
        if isinstance(ttl, str) or isinstance(at, str):
            raise ApiError("invalid_expiration", "ttl and expiration are integers of seconds")
        return Write(
            key, value, check.metadata(op.get("metadata"), node.config), check.expiration(ttl, at)
        )
    except ApiError as error:
        raise ApiError(error.code, f"{where}: {error.message}") from None


@routes.post("/v1/kv/{ns}/_get")
async def get_many(request: web.Request) -> web.Response:
    """Read up to ``max_get_many_keys`` keys at once, inlining at most ``max_get_many_bytes``."""
    node, ns = authorized(request, "read")
    config = node.config
    document = check.json_object(
        await bodies.read_within(request, bodies.get_many_body_limit(config))
    )
    bodies.refuse_unknown_fields(document, ("keys",))
    names = document.get("keys")
    if not isinstance(names, list) or not names:
        raise ApiError("invalid_json", 'body must be {"keys": [...]} with at least one key')
    if len(names) > node.config.max_get_many_keys:
        raise ApiError(
            "too_many_operations",
            f"{len(names)} keys; the limit is {node.config.max_get_many_keys}",
        )
    keys = [check.key(name, config) for name in names]
    pieces = answer_pieces(node.store, ns, names, keys, config.max_get_many_bytes)
    return web.Response(body=SlicedPayload(pieces, "application/json"))


SESSION_READS = frozenset({get_value, list_keys, get_many})
"""Reads that honour a session's bookmarks (see :mod:`edgekv.http.bookmarks`)."""
