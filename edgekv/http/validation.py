"""Parsing and checking of request parts against the node's limits.

Every check raises :class:`~edgekv.http.errors.ApiError` with a specific
code, and all of them run before a write is queued, so bad input never
half-applies.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from edgekv.config import Config
from edgekv.http.errors import ApiError
from edgekv.json_text import DuplicateName, NestedTooDeeply, TextNotEncodable, strict_json
from edgekv.store.export import RESERVED_PREFIX
from edgekv_replication import intake

_CURSOR = re.compile(r"[A-Za-z0-9_\-]{1,1000}")


def namespace(text: str) -> str:
    """Return a valid namespace name or raise ``invalid_namespace``; ``forbidden`` for a
    reserved one (``_edgekv.``: the node's own, such as its runtime tokens), whatever
    the token: every route that names a namespace or collection takes it from here."""
    try:
        name = intake.check_namespace(text)
    except intake.Refused as refusal:
        raise _api_error(refusal) from None
    if name.startswith(RESERVED_PREFIX):
        raise ApiError("forbidden", f"namespaces starting with {RESERVED_PREFIX} are reserved")
    return name


def key(text: object, config: Config) -> bytes:
    """Return the UTF-8 bytes of a valid key, or raise ``invalid_key``/``key_too_long``."""
    try:
        return intake.check_key_text(text, config.max_key_bytes)
    except intake.Refused as refusal:
        raise _api_error(refusal) from None


def value_size(size: int, config: Config) -> None:
    """Raise ``value_too_large`` for a value of ``size`` bytes over ``max_value_bytes``."""
    try:
        intake.check_value_size(size, config.max_value_bytes)
    except intake.Refused as refusal:
        raise _api_error(refusal) from None


def _api_error(refusal: intake.Refused) -> ApiError:
    return ApiError(refusal.code, refusal.message)


_UNDECODED_ESCAPE = re.compile(r"%(?!25|2F)", re.IGNORECASE)


def path_key(request: web.Request, config: Config) -> bytes:
    """Return the key of a ``/{key}`` route, refusing a path that is not UTF-8 once decoded.

    aiohttp leaves a percent-escape whose bytes are not UTF-8 as the literal text
    ``%FF``, which is also what ``%25FF`` decodes to: two URLs would name one key.
    """
    text = request.match_info["key"]
    if "%" in text:  # rare: only then look at the path as aiohttp decoded it
        require_utf8_path(request, "invalid_key")
    return key(text, config)


def require_utf8_path(request: web.Request, code: str) -> None:
    """Raise ``code`` when the path percent-decodes to bytes that are not UTF-8.

    In ``path_safe`` aiohttp keeps ``%25`` and ``%2F`` encoded and decodes every
    other escape that forms UTF-8; any other ``%`` left is an undecodable escape.
    """
    if _UNDECODED_ESCAPE.search(request.rel_url.path_safe):
        raise ApiError(code, "the path does not percent-decode to UTF-8")


_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def utf8_query_value(request: web.Request, text: str | None, code: str) -> str | None:
    """Return a query parameter's text, or raise ``code`` if the query string is not UTF-8.

    aiohttp decodes an escape that is not UTF-8 in a query to U+FFFD (which
    ``%EF%BF%BD`` also decodes to) and a stray ``%`` to itself (as does ``%25``):
    two query strings would ask for one thing. Only text holding either
    character makes the check parse the raw query string.
    """
    if text and ("\ufffd" in text or "%" in text):
        require_utf8_query(request, code)
    return text


def require_utf8_query(request: web.Request, code: str) -> None:
    """Raise ``code`` when the query string does not percent-decode to UTF-8."""
    raw = request.rel_url.raw_query_string
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(code, "the query string does not percent-decode to UTF-8") from None
    if _STRAY_PERCENT.search(raw):
        raise ApiError(code, "a '%' in the query string is not followed by two hex digits")


_TOO_DEEP = ("invalid_json", "request body nests too deeply")


def json_body(body: bytes, too_deep: tuple[str, str] = _TOO_DEEP) -> Any:
    """Parse a request body with :func:`~edgekv.json_text.strict_json`, or say why not.

    Raises ApiError: ``invalid_unicode`` for a lone surrogate, ``too_deep``
    (code, message) for nesting beyond the parser, ``invalid_json`` otherwise
    (naming the member name an object holds twice).
    """
    try:
        return strict_json(body)
    except TextNotEncodable as error:
        raise ApiError("invalid_unicode", f"request body: {error}") from None
    except NestedTooDeeply:
        raise ApiError(*too_deep) from None
    except DuplicateName as error:
        raise ApiError("invalid_json", f"request body: {error}") from None
    except ValueError:  # UnicodeDecodeError too
        raise ApiError("invalid_json", "request body is not valid JSON") from None


def metadata_header(text: str | None, config: Config) -> str | None:
    """Return the ``EdgeKV-Metadata`` header's object as compact ASCII JSON, or None."""
    if text is None:
        return None
    try:
        raw = strict_json(text)
    except TextNotEncodable as error:
        raise ApiError("invalid_unicode", f"metadata: {error}") from None
    except DuplicateName as error:
        raise ApiError("invalid_metadata", f"metadata: {error}") from None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise ApiError("invalid_metadata", "metadata must be a JSON object")
    return metadata(raw, config)


def metadata(raw: object, config: Config) -> str | None:
    """Return a metadata object (None for none) as compact ASCII JSON."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ApiError("invalid_metadata", "metadata must be a JSON object")
    try:
        # allow_nan=False: 1e999 parses to inf, which json.dumps would write as the
        # non-JSON Infinity that every peer's intake refuses (halting replication).
        text = json.dumps(raw, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ApiError("invalid_metadata", "metadata numbers must be finite") from None
    try:
        intake.check_metadata_size(text, config.max_metadata_bytes)
    except intake.Refused as refusal:
        raise _api_error(refusal) from None
    return text


def expiration(ttl: object, at: object, now: float | None = None) -> int | None:
    """Return the absolute expiration (epoch seconds) from ``ttl`` or ``expiration``.

    Query parameters arrive as strings, JSON fields as integers; a JSON string
    is refused, as the schema says integer.
    """
    if ttl is None and at is None:
        return None
    if ttl is not None and at is not None:
        raise ApiError("invalid_expiration", "give ttl or expiration, not both")
    current = time.time() if now is None else now
    if ttl is not None:
        seconds = _positive_int(ttl, "ttl")
        return int(current) + seconds
    when = _positive_int(at, "expiration")
    if when <= current:
        raise ApiError("invalid_expiration", "expiration lies in the past")
    return when


def _positive_int(raw: object, name: str) -> int:
    if isinstance(raw, bool):
        raise ApiError("invalid_expiration", f"{name} must be a positive integer of seconds")
    if isinstance(raw, str):
        if not _is_ascii_digits(raw) or len(raw) > 12:
            raise ApiError("invalid_expiration", f"{name} must be a positive integer of seconds")
        raw = int(raw)
    if not isinstance(raw, int) or raw <= 0 or raw >= 10**12:
        raise ApiError("invalid_expiration", f"{name} must be a positive integer of seconds")
    return raw


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit() also accepts '²' and other digits that int() refuses.
    return text.isascii() and text.isdigit()


def limit(raw: str | None, config: Config) -> int:
    """Return the list page size: 1 to ``max_list_limit``, that maximum by default."""
    if raw is None:
        return config.max_list_limit
    # The length first: int() refuses more than 4300 digits with a ValueError.
    if not (len(raw) <= 12 and _is_ascii_digits(raw)) or not 1 <= int(raw) <= config.max_list_limit:
        raise ApiError(
            "invalid_parameter", f"limit must be an integer from 1 to {config.max_list_limit}"
        )
    return int(raw)


def encode_cursor(last_key: bytes) -> str:
    """Return the opaque list cursor that resumes after ``last_key``."""
    return base64.urlsafe_b64encode(last_key).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> bytes | None:
    """Return the key a cursor resumes after, or raise ``invalid_cursor``."""
    if not cursor:
        return None
    if not _CURSOR.fullmatch(cursor):
        raise ApiError("invalid_cursor", "cursor was not issued by this API")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise ApiError("invalid_cursor", "cursor was not issued by this API") from None


def prefix(text: str | None, config: Config) -> bytes:
    """Return a list prefix as UTF-8 bytes ('' for none); any key's start is valid."""
    if not text:
        return b""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("invalid_key", "a prefix must be valid UTF-8") from None
    if len(raw) > config.max_key_bytes:
        raise ApiError("key_too_long", f"prefix is longer than {config.max_key_bytes} bytes")
    return raw


def base64_value(raw: object, where: str) -> bytes:
    """Decode a base64 value of a JSON body, or raise ``invalid_json``."""
    if not isinstance(raw, str):
        raise ApiError("invalid_json", f"{where}: value must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_json", f"{where}: value is not valid base64") from None


def json_object(body: bytes) -> Mapping[str, Any]:
    """Parse a JSON object request body, or raise ``invalid_json``."""
    document = json_body(body)
    if not isinstance(document, dict):
        raise ApiError("invalid_json", "request body must be a JSON object")
    return document
