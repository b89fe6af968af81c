"""Request bodies: read within the route's own limit, parsed without stalling others.

Every route that takes a body has a limit derived from the settings (the
table "Bounded resources" in docs/api.md). The limit is compared with
``Content-Length`` before a byte is read, and enforced while a chunked body
is read, so a body over it costs the node at most the limit and is never
parsed. JSON bodies above :data:`PARSE_INLINE_BYTES` (only bulk and
transaction bodies can be that large) are parsed on a worker thread: the
event loop keeps serving while the Python-level work runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from aiohttp import web

from edgekv.config import Config
from edgekv.http.errors import ApiError

T = TypeVar("T")

PARSE_INLINE_BYTES = 1024 * 1024
"""Bodies up to this size are parsed on the loop: a thread hop costs more than the parse."""

SMALL_BODY_BYTES = 64 * 1024
"""The limit of bodies that hold a few small fields (an index declaration)."""

_NAMES_SHOWN = 5
_NAME_CHARS = 64


async def read_within(
    request: web.Request, limit: int, code: str = "payload_too_large", what: str = "request body"
) -> bytes:
    """The request body, or ``code`` (a 413) once it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading;
    a chunked body is refused as soon as the bytes read pass the limit.
    """
    length = request.content_length
    if length is not None:
        if length > limit:
            raise ApiError(code, f"{what} is {length} bytes; the limit is {limit}")
        return await request.read()
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise ApiError(code, f"{what} is over the limit of {limit} bytes")
    return bytes(body)


def get_many_body_limit(config: Config) -> int:
    """The largest get-many body: every key JSON-escaped at worst (6 bytes a byte), plus slack."""
    return config.max_get_many_keys * (6 * config.max_key_bytes + 16) + 1024


async def parse_off_loop(body: bytes, parse: Callable[[bytes], T]) -> T:
    """``parse(body)``: on the loop when small, on a worker thread when large."""
    if len(body) <= PARSE_INLINE_BYTES:
        return parse(body)
    return await asyncio.get_running_loop().run_in_executor(None, parse, body)


def refuse_unknown_fields(
    document: Mapping[str, object], allowed: Iterable[str], where: str = ""
) -> None:
    """Raise ``invalid_json`` naming the fields of ``document`` that are not ``allowed``."""
    extra = set(document).difference(allowed)
    if not extra:
        return
    # Names are shortened: a junk field name can be as large as the body.
    shown = [json.dumps(name[:_NAME_CHARS]) for name in sorted(extra)[:_NAMES_SHOWN]]
    more = f" and {len(extra) - _NAMES_SHOWN} more" if len(extra) > _NAMES_SHOWN else ""
    prefix = f"{where}: " if where else ""
    raise ApiError("invalid_json", f"{prefix}unknown field(s) {', '.join(shown)}{more}")
