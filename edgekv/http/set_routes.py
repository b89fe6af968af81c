"""The set routes: ``/v1/sets/{ns}/{key}`` (add-wins observed-remove sets, see docs/api.md).

``GET`` lists members sorted by their UTF-8 bytes (``prefix``, ``limit``,
``cursor``); ``POST {"add": [...], "remove": [...]}`` applies both at once;
``DELETE`` clears (removes every member this PoP has seen). Sets use the
namespace's read and write scopes, and are replicated sets in every
namespace (strong ones too), so ``?consistency=strong`` is refused. A write
answers a token that may not read alike whatever the set holds: a removal
writes a row for every member it names, present or not (as a key-value
delete of an absent key writes a tombstone), and a clear answers such a
token only with a bookmark.
"""

from __future__ import annotations

from aiohttp import web

from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.bookmarks import head_bookmark, write_answer
from edgekv.http.errors import ApiError
from edgekv.http.kv_routes import authorized, consistency
from edgekv.http.state import PRINCIPAL
from edgekv.store.crdts import RowTooLarge, SetFull
from edgekv_replication import intake
from edgekv_replication.orsets import MAX_MEMBER_BYTES, BadMember, check_member
from edgekv_replication.versions import encode_version

routes = web.RouteTableDef()

_MEMBER_JSON_BYTES = 6 * MAX_MEMBER_BYTES + 8
"""A member's most bytes in JSON (every character \\u-escaped), with its quotes and comma."""


@routes.get("/v1/sets/{ns}/{key:(?s:.+)}")  # type: ignore[arg-type]  # sync: see edgekv.http.app
def get_members(request: web.Request) -> web.Response:
    """A page of the set's members, sorted; ``cursor`` resumes after the last one."""
    node, ns = authorized(request, "read")
    key = check.path_key(request, node.config)
    query = request.query
    if request.query_string and consistency(request) == "strong":
        raise ApiError(
            "invalid_parameter",
            "sets are replicated in every namespace, strong ones too: there is no strong read",
        )
    prefix = check.utf8_query_value(request, query.get("prefix"), "invalid_member") or ""
    if prefix:
        try:  # the start of a member, so held to the member rules (but it may be empty)
            check_member(prefix)
        except BadMember as exc:
            raise ApiError("invalid_member", f"prefix: {exc}") from None
    limit = check.limit(query.get("limit"), node.config)
    after_raw = check.decode_cursor(query.get("cursor"))
    try:
        after = None if after_raw is None else after_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_cursor", "cursor was not issued by this API") from None
    page = node.store.crdts.set_page(ns, key, prefix, after, limit)
    cursor = check.encode_cursor(page.members[-1].encode()) if page.more else None
    version = None if page.version is None else encode_version(*page.version)
    return web.json_response(
        {
            "members": page.members,
            "version": version,
            "list_complete": not page.more,
            "cursor": cursor,
        }
    )


@routes.post("/v1/sets/{ns}/{key:(?s:.+)}")
async def update_set(request: web.Request) -> web.Response:
    """Remove ``remove`` and add ``add`` in one write; over a limit, nothing is applied."""
    node, ns = authorized(request, "write")
    config = node.config
    key = check.path_key(request, config)
    most = config.max_set_request_members
    body = await bodies.read_within(request, most * _MEMBER_JSON_BYTES + 1024)
    document = check.json_object(body)
    bodies.refuse_unknown_fields(document, ("add", "remove"))
    try:
        add = intake.check_set_members(document.get("add"), "add")
        remove = intake.check_set_members(document.get("remove"), "remove")
        intake.check_set_request(add, remove, most)
    except intake.Refused as refusal:
        raise ApiError(refusal.code, refusal.message) from None
    if not add and not remove:
        raise ApiError("invalid_json", 'body must be {"add": [...], "remove": [...]}, not empty')
    try:
        written = await node.store.crdts.set_update(ns, key, add, remove, config.max_set_members)
    except SetFull as exc:
        raise ApiError("set_full", str(exc)) from None
    except RowTooLarge as exc:
        raise ApiError("invalid_request", str(exc)) from None
    return write_answer(node, written)


@routes.delete("/v1/sets/{ns}/{key:(?s:.+)}")
async def clear_set(request: web.Request) -> web.Response:
    """Clear: remove every member this PoP has seen (adds it has not seen survive)."""
    node, ns = authorized(request, "write")
    key = check.path_key(request, node.config)
    try:
        written = await node.store.crdts.set_update(
            ns, key, [], [], node.config.max_set_members, True
        )
    except RowTooLarge as exc:
        raise ApiError("invalid_request", str(exc)) from None
    if not request[PRINCIPAL].allows("read", ns):
        # Whether the clear stamped a version tells whether the set held members.
        node.metrics.writes += 1
        return web.json_response({"bookmark": head_bookmark(node)})
    return write_answer(node, written)


SESSION_READS = frozenset({get_members})
"""Reads that honour a session's bookmarks (see :mod:`edgekv.http.bookmarks`)."""
