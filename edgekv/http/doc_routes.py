"""The document routes: ``/v1/docs/{collection}`` and ``/v1/docs/{collection}/{id}``.

A collection name follows the namespace rules, and token scopes name
collections as they name namespaces (``read:users`` reads the collection
``users``). Reads answer the canonical JSON text kept in SQLite without
parsing it again.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from edgekv.auth import Action
from edgekv.documents import indexes, query
from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.bookmarks import write_answer
from edgekv.http.errors import ApiError
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.store.documents import DocWriteResult
from edgekv_replication import intake
from edgekv_replication.documents import MAX_DOCUMENT_BYTES, decode_state_vector
from edgekv_replication.versions import encode_version

routes = web.RouteTableDef()
# Registration order is match order: _indexes before {id}.

DOCUMENT_BODY_BYTES = 4 * MAX_DOCUMENT_BYTES
"""The largest document, patch or Y update body: four times the 1 MiB document limit
leaves room for whitespace and for non-ASCII text sent \\u-escaped (up to 3x), while
refusing, before any parsing, the bodies whose document could never fit."""


async def _document_body(request: web.Request, what: str) -> bytes:
    return await bodies.read_within(request, DOCUMENT_BODY_BYTES, "document_too_large", what)


def authorized(request: web.Request, action: Action) -> tuple[Node, str]:
    """The node and the request's collection, once the caller may do ``action``."""
    collection = check.namespace(request.match_info["collection"])
    if not request[PRINCIPAL].allows(action, collection):
        raise ApiError("forbidden", f"this token may not {action} collection {collection!r}")
    return request.app[NODE], collection


def authorize_read(request: web.Request) -> None:
    """Raise ``forbidden`` unless the caller may read the request's collection."""
    authorized(request, "read")


def document_id(text: str, max_bytes: int) -> str:
    """A valid document id (the rules of the peers' intake), or ``invalid_document_id``."""
    try:
        intake.check_document_id(text.encode(), max_bytes)
    except UnicodeEncodeError:
        raise ApiError("invalid_document_id", "a document id must be valid UTF-8") from None
    except intake.Refused as refusal:
        raise ApiError(refusal.code, refusal.message) from None
    return text


def _target(request: web.Request, action: Action) -> tuple[Node, str, str]:
    node, collection = authorized(request, action)
    text = request.match_info["id"]
    if "%" in text:  # rare: see check.path_key
        check.require_utf8_path(request, "invalid_document_id")
    return node, collection, document_id(text, node.config.max_key_bytes)


_TOO_DEEP = ("document_too_deep", "a document nests at most 32 levels")


def _parse_json(body: bytes) -> Any:
    return check.json_body(body, _TOO_DEEP)


async def _write(node: Node, pending: Awaitable[DocWriteResult]) -> web.Response:
    return write_answer(node, await pending)


def _item(doc_id: str, text: str, hlc: int, node: int) -> str:
    return f'{{"id":{json.dumps(doc_id)},"version":"{encode_version(hlc, node)}","doc":{text}}}'


@routes.get("/v1/docs/{collection}/_indexes")  # type: ignore[arg-type]  # sync read
def list_indexes(request: web.Request) -> web.Response:
    """The indexes declared on a collection."""
    node, collection = authorized(request, "read")
    found = [
        {"field": index.field, "name": index.name, "created_ms": index.created_ms}
        for index in indexes.declared(node.store, collection)
    ]
    return web.json_response({"indexes": found})


@routes.post("/v1/docs/{collection}/_indexes")
async def declare_index(request: web.Request) -> web.Response:
    """Declare an index on a field (201 when created, 200 when it existed).

    Admin only: an index slows every write of the collection and grows the
    database, which is the operator's choice rather than a writer's.
    """
    node = request.app[NODE]
    collection = check.namespace(request.match_info["collection"])
    if not request[PRINCIPAL].allows("admin"):
        raise ApiError("forbidden", "declaring an index needs the admin scope")
    body = _parse_json(await bodies.read_within(request, bodies.SMALL_BODY_BYTES))
    if isinstance(body, dict):
        bodies.refuse_unknown_fields(body, ("field",))
    field = body.get("field") if isinstance(body, dict) else None
    if not isinstance(field, str):
        raise ApiError("invalid_json", 'body must be {"field": "dotted.path"}')
    index, created = await indexes.declare(
        node.store, collection, field, node.config.max_indexes_per_collection
    )
    answer = {"field": index.field, "name": index.name, "created_ms": index.created_ms}
    return web.json_response(answer, status=201 if created else 200)


@routes.get("/v1/docs/{collection}/{id}")  # type: ignore[arg-type]  # sync read
def get_document(request: web.Request) -> web.Response:
    """The document's JSON and version."""
    node, collection, doc_id = _target(request, "read")
    found = node.documents.get(collection, doc_id)
    if found is None:
        raise ApiError("not_found", "no such document")
    return web.Response(
        text=_item(doc_id, found.json, found.hlc, found.node),
        content_type="application/json",
        headers={"ETag": f'"{encode_version(found.hlc, found.node)}"'},
    )


@routes.put("/v1/docs/{collection}/{id}")
async def put_document(request: web.Request) -> web.Response:
    """Replace the document with the JSON object in the body (creating it if needed)."""
    node, collection, doc_id = _target(request, "write")
    body = _parse_json(await _document_body(request, "document body"))
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "a document is a JSON object")
    return await _write(node, node.documents.put(collection, doc_id, body))


@routes.patch("/v1/docs/{collection}/{id}")
async def patch_document(request: web.Request) -> web.Response:
    """Apply an RFC 7386 JSON merge patch as Y operations."""
    node, collection, doc_id = _target(request, "write")
    body = _parse_json(await _document_body(request, "merge patch"))
    if not isinstance(body, dict):
        raise ApiError("invalid_patch", "a merge patch of a document is a JSON object")
    return await _write(node, node.documents.patch(collection, doc_id, body))


@routes.delete("/v1/docs/{collection}/{id}")
async def delete_document(request: web.Request) -> web.Response:
    """Delete the document; deleting an absent one succeeds."""
    node, collection, doc_id = _target(request, "write")
    return await _write(node, node.documents.delete(collection, doc_id))


@routes.get("/v1/docs/{collection}/{id}/ystate")  # type: ignore[arg-type]  # sync read
def get_ystate(request: web.Request) -> web.Response:
    """The binary Y update a replica with state vector ``sv`` (base64) is missing."""
    node, collection, doc_id = _target(request, "read")
    state_vector = None
    raw = request.query.get("sv") if request.query_string else None
    if raw:
        try:
            state_vector = base64.urlsafe_b64decode(
                raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)
            )
            decode_state_vector(state_vector)
        except (binascii.Error, ValueError):
            raise ApiError("invalid_parameter", "sv must be a base64 Y state vector") from None
    try:
        update = node.documents.ystate(collection, doc_id, state_vector)
    except ValueError:
        raise ApiError("invalid_parameter", "sv is not a Y state vector") from None
    if update is None:
        raise ApiError("not_found", "no such document")
    return web.Response(body=update, content_type="application/octet-stream")


@routes.post("/v1/docs/{collection}/{id}/yupdate")
async def post_yupdate(request: web.Request) -> web.Response:
    """Apply a binary Y update (from Yjs or pycrdt) after validating it."""
    node, collection, doc_id = _target(request, "write")
    update = await _document_body(request, "Y update")
    if not update:
        raise ApiError("invalid_yupdate", "the body must be a binary Y update")
    return await _write(node, node.documents.apply_client_update(collection, doc_id, update))


@routes.get("/v1/docs/{collection}")  # type: ignore[arg-type]  # sync read
def query_documents(request: web.Request) -> web.Response:
    """A page of documents matching every ``where``, in ``order_by`` order."""
    node, collection = authorized(request, "read")
    params = request.query
    where = params.getall("where", [])
    for text in where:
        check.utf8_query_value(request, text, "invalid_parameter")
    page = query.build(
        collection,
        where,
        params.get("order_by"),
        query.parse_limit(params.get("limit")),
        params.get("cursor"),
    )
    body = query.answer(node.documents.query_rows, page, node.config.max_query_bytes)
    return web.Response(text=body, content_type="application/json")


SESSION_READS = frozenset({get_document, query_documents, get_ystate})
"""Reads that honour a session's bookmarks (see :mod:`edgekv.http.bookmarks`)."""
