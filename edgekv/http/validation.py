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

from edgekv.config import NAMESPACE_PATTERN as _NAMESPACE
from edgekv.config import Config
from edgekv.http.errors import ApiError
from edgekv.json_text import NestedTooDeeply, TextNotEncodable, strict_json

_CURSOR = re.compile(r"[A-Za-z0-9_\-]{1,1000}")


def namespace(text: str) -> str:
    """Return a valid namespace name or raise ``invalid_namespace``."""
    if not _NAMESPACE.fullmatch(text):
        raise ApiError(
            "invalid_namespace", f"namespace must match [A-Za-z0-9_.-]{{1,64}}: {text!r}"
        )
    return text


def key(text: object, config: Config) -> bytes:
    """Return the UTF-8 bytes of a valid key, or raise ``invalid_key``/``key_too_long``."""
    if not isinstance(text, str) or not text:
        raise ApiError("invalid_key", "a key is a non-empty string")
    if text in (".", ".."):
        raise ApiError("invalid_key", "'.' and '..' cannot be keys: URLs would rewrite them")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("invalid_key", "a key must be valid UTF-8") from None
    if len(raw) > config.max_key_bytes:
        raise ApiError(
            "key_too_long",
            f"key is {len(raw)} bytes; the limit is {config.max_key_bytes}",
        )
    return raw


_TOO_DEEP = ("invalid_json", "request body nests too deeply")


def json_body(body: bytes, too_deep: tuple[str, str] = _TOO_DEEP) -> Any:
    """Parse a request body with :func:`~edgekv.json_text.strict_json`, or say why not.

    Raises ApiError: ``invalid_unicode`` for a lone surrogate, ``too_deep``
    (code, message) for nesting beyond the parser, ``invalid_json`` otherwise.
    """
    try:
        return strict_json(body)
    except TextNotEncodable as error:
        raise ApiError("invalid_unicode", f"request body: {error}") from None
    except NestedTooDeeply:
        raise ApiError(*too_deep) from None
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
    text = json.dumps(raw, separators=(",", ":"))
    if len(text) > config.max_metadata_bytes:
        raise ApiError(
            "metadata_too_large",
            f"metadata is {len(text)} bytes of JSON; the limit is {config.max_metadata_bytes}",
        )
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
    if not _is_ascii_digits(raw) or not 1 <= int(raw) <= config.max_list_limit:
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
