"""Operator routes under ``/v1/admin``: backup, export and runtime tokens (admin scope).

``GET /v1/admin/backup`` snapshots the database on a thread of its own with
SQLite's backup API (:mod:`edgekv.store.backup`) while the node goes on
serving, then sends the snapshot (by sendfile) with its manifest, checksum
included, in the ``EdgeKV-Backup-Manifest`` header: the backup file is that
manifest's line followed by the body. ``GET /v1/admin/export`` streams live entries
as NDJSON a page at a time. ``/v1/admin/tokens`` lists, creates and revokes
the tokens kept in the node's database (:mod:`edgekv.runtime_tokens`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edgekv.http import bodies
from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.http.state import NODE, PRINCIPAL
from edgekv.node import Node
from edgekv.runtime_tokens import check_request, token_id
from edgekv.store.backup import snapshot
from edgekv.store.crdt_export import CounterCursor, CounterValue, SetCursor, SetMember
from edgekv.store.datadir import snapshot_scratch_path
from edgekv.store.export import DocumentCursor, DocumentRow, ExportCursor, ExportRow

T = TypeVar("T")
routes = web.RouteTableDef()
"""Client routes: a bearer token with the admin scope."""

MANIFEST_HEADER = "EdgeKV-Backup-Manifest"
_BACKUP_LOCKS: weakref.WeakKeyDictionary[Node, asyncio.Lock] = weakref.WeakKeyDictionary()
"""One snapshot at a time per node: two would only share the disk."""
BACKUP_HEADROOM = 64 * 1024 * 1024
"""Free bytes a backup leaves beside its copy of the database, for the node's own writes
meanwhile: a copy that filled the disk would fail them too, until it failed itself."""


def _admin(request: web.Request) -> Node:
    if not request[PRINCIPAL].allows("admin"):
        raise ApiError("forbidden", "this route needs the admin scope")
    return request.app[NODE]


@routes.get("/v1/admin/backup")
async def backup(request: web.Request) -> web.StreamResponse:
    """A consistent snapshot of the database, taken while the node serves, as a backup file."""
    node = _admin(request)
    db_path = node.store.path
    temporary = snapshot_scratch_path(db_path)
    lock = _BACKUP_LOCKS.setdefault(node, asyncio.Lock())
    try:
        # The snapshot only: a download that stalls (its client stops reading) must not
        # hold every later backup back; it holds just its own copy.
        async with lock:
            _check_room(node, db_path)
            manifest = await _in_background_thread(snapshot, db_path, temporary)
        # The snapshot goes out by sendfile, off the event loop's hands; the manifest,
        # which heads the backup file, goes in a header.
        response = web.FileResponse(
            temporary,
            headers={
                "Content-Type": "application/octet-stream",
                MANIFEST_HEADER: manifest.line().decode("ascii").strip(),
            },
        )
        with contextlib.suppress(ConnectionError):  # the client went away: no one to tell
            await response.prepare(request)
        return response
    finally:
        temporary.unlink(missing_ok=True)


def _check_room(node: Node, db_path: Path) -> None:
    """Refuse a backup whose copy would leave less than :data:`BACKUP_HEADROOM` free."""
    needed = node.store.size_bytes()  # the copy is at most the database and its log
    free = shutil.disk_usage(db_path.parent).free
    if free < needed + BACKUP_HEADROOM:
        raise ApiError(
            "storage_full",
            f"no room for the backup's copy of the database: it needs {needed} bytes and "
            f"{BACKUP_HEADROOM} more left for the node's writes, and {free} are free "
            "next to the database; nothing was copied",
        )


async def _in_background_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` on a thread of its own at the lowest CPU priority (Linux threads
    are scheduled one by one): a backup takes only what the node's own work leaves."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        with contextlib.suppress(OSError):  # not Linux: the same thread, unniced
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the waiting request
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=run, name="edgekv-backup", daemon=True).start()
    return await done


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def export_line(row: ExportRow) -> str:
    """One NDJSON line of an export: value in base64, metadata as stored (compact JSON)."""
    return (
        f'{{"ns":{json.dumps(row.ns)},"key":{json.dumps(row.key.decode("utf-8"))},'
        f'"value":"{base64.b64encode(row.value).decode("ascii")}",'
        f'"metadata":{row.metadata or "null"},'
        f'"expiration":{"null" if row.expiration is None else row.expiration}}}\n'
    )


@routes.get("/v1/admin/export")
async def export(request: web.Request) -> web.StreamResponse:
    """Every live entry, then every live document (of one namespace and the collection of
    the same name, with a key or id prefix) as NDJSON, streamed page by page."""
    node = _admin(request)
    query = request.query
    namespace = query.get("namespace")
    prefix = b""
    if namespace is not None:
        namespace = check.namespace(namespace)
        prefix_text = check.utf8_query_value(request, query.get("prefix"), "invalid_key")
        prefix = check.prefix(prefix_text, node.config)
    elif "prefix" in query:
        raise ApiError("invalid_parameter", "prefix needs namespace")
    reader = node.store.database.reader
    cursor = ExportCursor(reader, namespace, prefix)
    documents = DocumentCursor(reader, namespace, prefix.decode("utf-8"))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    with contextlib.suppress(ConnectionError):  # the client went away: stop reading for it
        await response.prepare(request)
        while not cursor.done:
            page = cursor.next_page()
            if page:
                await response.write("".join(map(export_line, page)).encode("utf-8"))
        while not documents.done:
            doc_page = documents.next_page()
            if doc_page:
                await response.write("".join(map(document_line, doc_page)).encode("utf-8"))
        counter_cursor = CounterCursor(reader, namespace, prefix)
        while not counter_cursor.done:
            counter_page = counter_cursor.next_page()
            if counter_page:
                await response.write("".join(map(counter_line, counter_page)).encode("utf-8"))
        set_cursor = SetCursor(reader, namespace, prefix)
        while not set_cursor.done:
            member_page = set_cursor.next_page()
            if member_page:
                await response.write("".join(map(member_line, member_page)).encode("utf-8"))
        await response.write_eof()
    return response


def document_line(row: DocumentRow) -> str:
    """One NDJSON line of an exported document: its JSON as stored (compact)."""
    return (
        f'{{"collection":{json.dumps(row.collection)},"id":{json.dumps(row.id)},'
        f'"document":{row.json}}}\n'
    )


def counter_line(row: CounterValue) -> str:
    """One NDJSON line of an exported counter: its value here, when it stops counting."""
    expiration = "null" if row.expiration is None else row.expiration
    return (
        f'{{"ns":{json.dumps(row.ns)},"counter":{json.dumps(row.key.decode("utf-8"))},'
        f'"value":{row.value},"expiration":{expiration}}}\n'
    )


def member_line(row: SetMember) -> str:
    """One NDJSON line of an exported set member."""
    return (
        f'{{"ns":{json.dumps(row.ns)},"set":{json.dumps(row.key.decode("utf-8"))},'
        f'"member":{json.dumps(row.member)}}}\n'
    )


@routes.get("/v1/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """The config file's tokens and the runtime tokens (names, ids, scopes; never secrets)."""
    node = _admin(request)
    configured = [
        {
            "id": token_id(spec.hash),
            "name": spec.name,
            "scopes": list(spec.scopes),
            "rate_limit": spec.rate_limit,
            "created_ms": None,
            "source": "config",
        }
        for spec in node.auth.config_tokens
    ]
    runtime = [token.as_json() for token in node.runtime_tokens.listed()]
    return web.json_response({"tokens": configured + runtime})


@routes.post("/v1/admin/tokens")
async def create_token(request: web.Request) -> web.Response:
    """Create a runtime token; the answer holds the token itself, shown this once."""
    node = _admin(request)
    document = check.json_object(await bodies.read_within(request, bodies.SMALL_BODY_BYTES))
    bodies.refuse_unknown_fields(document, ("name", "scopes", "rate_limit"))
    try:
        name, scopes, rate_limit = check_request(
            document.get("name"), document.get("scopes"), document.get("rate_limit")
        )
    except ValueError as exc:
        raise ApiError("invalid_json", str(exc)) from None
    secret, token = await node.runtime_tokens.create(
        name, scopes, rate_limit, node.store.clock.wall_ms()
    )
    return web.json_response({"token": secret, **token.as_json()})


@routes.delete("/v1/admin/tokens/{id_or_name}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke the runtime tokens with this id or name; the revoke replicates to every PoP."""
    node = _admin(request)
    wanted = request.match_info["id_or_name"]
    revoked = await node.runtime_tokens.revoke(wanted)
    if not revoked:
        if any(wanted in (token_id(s.hash), s.name) for s in node.auth.config_tokens):
            raise ApiError(
                "invalid_parameter",
                "that token is in the config file: remove it there and send the node SIGHUP",
            )
        raise ApiError("not_found", "no runtime token has this id or name")
    return web.json_response({"revoked": [token.as_json() for token in revoked]})
