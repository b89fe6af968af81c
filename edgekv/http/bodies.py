"""Request bodies: read within the route's own limit, parsed without stalling others.

Every route that takes a body has a limit derived from the settings (the
table "Bounded resources" in docs/api.md). The limit is compared with
``Content-Length`` before a byte is read, and enforced while a chunked body
is read, so a body over it costs the node at most the limit and is never
parsed. A body that stops arriving for ``body_timeout`` seconds is answered
408 ``request_timeout`` and its connection closed (the wait is per read, as
nginx's ``client_body_timeout``: a large body on a slow link is not cut, a
stalled one is). Bodies are never inflated: a ``Content-Encoding`` other than
identity is refused (415), so each limit holds for the bytes the node keeps.
JSON bodies above :data:`PARSE_INLINE_BYTES` (only bulk and transaction
bodies can be that large) are parsed on a worker thread, one member or array
element per decoder call: ``json.loads`` does not release the interpreter, so
a thread would not help if it parsed 100 MiB in one call.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.hdrs import CONTENT_ENCODING

from edgekv.config import Config
from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.http.protocol import NodeProtocol
from edgekv.http.state import NODE
from edgekv.json_text import DECODER, may_hold_surrogate
from edgekv_replication.json_objects import duplicate

T = TypeVar("T")

PARSE_INLINE_BYTES = 1024 * 1024
"""Bodies up to this size are parsed on the loop: a thread hop costs more than the parse."""

SMALL_BODY_BYTES = 64 * 1024
"""The limit of bodies that hold a few small fields (an index declaration)."""

_NAMES_SHOWN = 5
_NAME_CHARS = 64

_CONTINUE_DUE = "edgekv.continue_due"
"""Request key: the client sent ``Expect: 100-continue`` and has not been told to go on."""


def defer_continue(request: web.Request) -> None:
    """Hold back ``100 Continue`` until the route reads the body: a request refused
    before (401, 403, 413...) is answered at once, and its client never sends the body."""
    request[_CONTINUE_DUE] = True


def close_if_body_unsent(request: web.Request, response: web.StreamResponse) -> None:
    """Close the connection after ``response`` when the client still holds back its body
    (it was never told to continue): aiohttp would wait up to 10 s for a body that is
    not coming before taking the next request."""
    if request.get(_CONTINUE_DUE) and not request.content.is_eof():
        response.force_close()
        if isinstance(request.protocol, NodeProtocol):
            request.protocol.close_unread()


async def _send_continue(request: web.Request) -> None:
    if request.pop(_CONTINUE_DUE, False):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp does: the response proper is still to come


async def read_within(
    request: web.Request, limit: int, code: str = "payload_too_large", what: str = "request body"
) -> bytes:
    """The request body, or ``code`` (a 413) once it is known to exceed ``limit`` bytes.

    A body with a ``Content-Encoding`` (gzip, deflate, br...) is refused with
    ``unsupported_content_encoding`` before a byte is read.

    A declared ``Content-Length`` over the limit is refused before reading;
    a chunked body is refused as soon as the bytes read pass the limit.
    ``request_timeout`` once no byte has come for ``body_timeout`` seconds.
    """
    encoding = request.headers.get(CONTENT_ENCODING)
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        # The server does not inflate bodies (auto_decompress=False in edgekv.http.protocol):
        # a 60 KB gzip body would become a 60 MiB value past every limit below.
        raise ApiError(
            "unsupported_content_encoding",
            f"Content-Encoding {encoding[:32]!r} is not accepted; send the body uncompressed",
        )
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(code, f"{what} is {length} bytes; the limit is {limit}")
    await _send_continue(request)  # every check that needs no body has passed
    content = request.content
    if content.is_eof() and length is not None:
        # The usual small body came with the head: nothing to wait for, no timer.
        return await request.read()
    timeout = request.app[NODE].config.body_timeout
    loop = asyncio.get_running_loop()
    body = bytearray()
    try:
        async with asyncio.timeout(timeout) as deadline:
            while chunk := await content.readany():
                body += chunk
                if len(body) > limit:
                    raise ApiError(code, f"{what} is over the limit of {limit} bytes")
                deadline.reschedule(loop.time() + timeout)
    except TimeoutError:
        raise _stalled(request, what, len(body), timeout) from None
    return bytes(body)


def _stalled(request: web.Request, what: str, received: int, timeout: float) -> ApiError:
    """The answer to a body that stopped arriving, on a connection that closes once it
    is sent (aiohttp would first wait up to 10 s more for the rest of the body)."""
    protocol = request.protocol
    if isinstance(protocol, NodeProtocol):
        protocol.close_unread()
    return ApiError(
        "request_timeout",
        f"no byte of the {what} came for {timeout:g} s ({received} bytes came); "
        "nothing was written",
        headers={"Connection": "close"},
    )


def get_many_body_limit(config: Config) -> int:
    """The largest get-many body: every key JSON-escaped at worst (6 bytes a byte), plus slack."""
    return config.max_get_many_keys * (6 * config.max_key_bytes + 16) + 1024


async def parse_off_loop(body: bytes, build: Callable[[Mapping[str, Any]], T]) -> T:
    """``build`` applied to the body's JSON object: parsed whole on the loop when the body
    is small, in steps on a worker thread (``build`` too) when it is large."""
    if len(body) <= PARSE_INLINE_BYTES:
        return build(check.json_object(body))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: build(json_object_in_steps(body)))


def json_object_in_steps(body: bytes) -> Mapping[str, Any]:
    """:func:`~edgekv.http.validation.json_object`, one member and one array element per
    decoder call: a thread parsing a 100 MiB body lets the event loop run between them,
    where one ``json.loads`` would hold the interpreter for the whole body. Anything the
    stepped reading does not expect is parsed again whole, for the exact error."""
    try:
        text = body.decode("utf-8")
        if may_hold_surrogate(text):
            # Rare: the whole parse decides whether it is a lone surrogate (invalid_unicode).
            return check.json_object(body)
        document, end = _object_in_steps(text, _skip(text, 0))
        if _skip(text, end) != len(text):
            raise ValueError("trailing data")
        return document
    except (ValueError, IndexError, RecursionError):
        return check.json_object(body)


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _object_in_steps(text: str, at: int) -> tuple[dict[str, Any], int]:
    if text[at] != "{":
        raise ValueError("not an object")
    document: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text[at] == "}":
        return document, at + 1
    while True:
        name, at = DECODER.raw_decode(text, at)
        if not isinstance(name, str):
            raise ValueError("a member name is a string")
        at = _skip(text, at)
        if text[at] != ":":
            raise ValueError("':' expected")
        if name in document:
            raise duplicate(name)  # a ValueError: the whole parse gives the exact error
        at = _skip(text, at + 1)
        if text[at] == "[":
            document[name], at = _array_in_steps(text, at)
        else:
            document[name], at = DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] == "}":
            return document, at + 1
        if text[at] != ",":
            raise ValueError("',' expected")
        at = _skip(text, at + 1)


def _array_in_steps(text: str, at: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    at = _skip(text, at + 1)
    if text[at] == "]":
        return items, at + 1
    while True:
        item, at = DECODER.raw_decode(text, at)
        items.append(item)
        at = _skip(text, at)
        if text[at] == "]":
            return items, at + 1
        if text[at] != ",":
            raise ValueError("',' expected")
        at = _skip(text, at + 1)


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
