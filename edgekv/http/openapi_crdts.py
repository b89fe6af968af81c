"""The OpenAPI description of the counter and set routes (merged by :mod:`edgekv.http.openapi`)."""

from __future__ import annotations

from typing import Any

from edgekv.http.openapi_parts import AUTH_ERRORS as _AUTH
from edgekv.http.openapi_parts import BAD_INPUT as _BAD
from edgekv.http.openapi_parts import BOOKMARK as _BOOKMARK
from edgekv.http.openapi_parts import NOT_REACHED as _NOT_REACHED
from edgekv.http.openapi_parts import error as _error
from edgekv.http.openapi_parts import json_of as _json

_NS = {
    "name": "ns",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$"},
}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "1 to max_key_bytes bytes of UTF-8; not '.' or '..'.",
    "schema": {"type": "string"},
}
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_VERSION = {"type": ["string", "null"], "description": "The newest write merged in; null if none."}
_CONSISTENCY = {
    "name": "consistency",
    "in": "query",
    "schema": {"type": "string", "enum": ["eventual", "strong"], "default": "eventual"},
}
_STRONG_READ = {
    **_CONSISTENCY,
    "description": "strong: read from PostgreSQL (strong namespaces only, else 400 "
    "strong_namespace_required).",
}
_NO_STRONG_READ = {
    **_CONSISTENCY,
    "description": "Only eventual: sets are replicated in every namespace (strong: 400 "
    "invalid_parameter).",
}
_UPSTREAM = {
    "502": _error("upstream_invalid (strong namespaces)"),
    "503": _error("upstream_unavailable (strong namespaces) or bookmark_not_reached"),
}

SCHEMAS: dict[str, Any] = {
    "Counter": {
        "type": "object",
        "required": ["value", "version"],
        "properties": {"value": {"type": "integer"}, "version": _VERSION},
    },
    "CounterAdd": {
        "type": "object",
        "required": ["add"],
        "additionalProperties": False,
        "properties": {
            "add": {"type": "integer", "minimum": -(2**63 - 1), "maximum": 2**63 - 1},
            "ttl": {"type": "integer", "minimum": 1, "description": "Seconds (this PoP's adds)."},
            "expiration": {"type": "integer", "minimum": 1, "description": "Epoch seconds."},
            "min": {
                **_INT64,
                "description": "Strong namespaces only: the lowest value allowed (not null; "
                "needs read scope too).",
            },
            "max": {
                **_INT64,
                "description": "Strong namespaces only: the highest value allowed (not null, "
                "not below min; needs read scope too).",
            },
        },
    },
    "CounterWritten": {
        "type": "object",
        "required": ["bookmark"],
        "properties": {
            "value": {
                "type": "integer",
                "description": "The value this PoP sees after the add; only to a token that "
                "may also read the namespace.",
            },
            "bookmark": {"type": "string", "description": "Opaque; read-your-writes."},
            "version": {"type": "string"},
        },
    },
    "SetPage": {
        "type": "object",
        "required": ["members", "version", "list_complete", "cursor"],
        "properties": {
            "members": {"type": "array", "items": {"type": "string"}},
            "version": _VERSION,
            "list_complete": {"type": "boolean"},
            "cursor": {"type": ["string", "null"]},
        },
    },
    "SetUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "add": {"type": "array", "items": {"type": "string", "maxLength": 512}},
            "remove": {"type": "array", "items": {"type": "string", "maxLength": 512}},
        },
    },
}


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


PATHS: dict[str, Any] = {
    "/v1/counters/{ns}/{key}": {
        "get": {
            "summary": "A counter's value and version at this PoP (0 and null if never written)",
            "parameters": [_NS, _KEY, _STRONG_READ, _BOOKMARK],
            "responses": {"200": _json("Counter"), **_BAD, **_AUTH, **_UPSTREAM},
        },
        "post": {
            "summary": "Add a signed 64-bit integer; answers the value this PoP then sees",
            "parameters": [_NS, _KEY],
            "requestBody": _body("CounterAdd"),
            "responses": {
                "200": _json("CounterWritten"),
                **_BAD,
                **_AUTH,
                "409": _error("counter_out_of_bounds (strong namespaces, min/max)"),
                **_UPSTREAM,
            },
        },
        "delete": {
            "summary": "Reset: remove every contribution this PoP has seen (observed-remove)",
            "parameters": [_NS, _KEY],
            "responses": {"200": _json("WriteResult"), **_BAD, **_AUTH, **_UPSTREAM},
        },
    },
    "/v1/sets/{ns}/{key}": {
        "get": {
            "summary": "A page of a set's members, sorted by UTF-8 bytes",
            "parameters": [
                _NS,
                _KEY,
                {
                    "name": "prefix",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "Held to the member rules but for being empty (else 400 "
                    "invalid_member).",
                },
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                _NO_STRONG_READ,
                _BOOKMARK,
            ],
            "responses": {"200": _json("SetPage"), **_BAD, **_AUTH, **_NOT_REACHED},
        },
        "post": {
            "summary": "Remove and add members in one write (add wins over unseen removes)",
            "parameters": [_NS, _KEY],
            "requestBody": _body("SetUpdate"),
            "responses": {
                "200": _json("WriteResult"),
                **_BAD,
                **_AUTH,
                "409": _error("set_full: past max_set_members; nothing applied"),
                "413": _error("payload_too_large"),
            },
        },
        "delete": {
            "summary": "Clear: remove every member this PoP has seen (observed-remove)",
            "parameters": [_NS, _KEY],
            "responses": {"200": _json("WriteResult"), **_BAD, **_AUTH},
        },
    },
}
