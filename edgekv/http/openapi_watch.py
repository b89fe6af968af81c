"""The OpenAPI description of the watch routes (Server-Sent Events), merged by
:mod:`edgekv.http.openapi`.

OpenAPI has no type for an event stream: the response is ``text/event-stream``
and its events are described in words and by the ``WatchEvent`` schema of
their ``data`` (docs/api.md, "Watch").
"""

from __future__ import annotations

from typing import Any

from edgekv.http.openapi_parts import AUTH_ERRORS as _AUTH
from edgekv.http.openapi_parts import BAD_INPUT as _BAD
from edgekv.http.openapi_parts import error as _error

_SPACE = {
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$"},
}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


_PARAMETERS = [
    _query("prefix", "Only keys (document ids) starting with it.", {"type": "string"}),
    _query(
        "keys",
        "Only these keys (document ids); repeat the parameter, at most 100. Not with prefix.",
        {"type": "array", "items": {"type": "string"}},
    ),
    _query(
        "include_values",
        "Values in events (default true); false gives value_bytes instead.",
        {"type": "boolean"},
    ),
    _query(
        "snapshot",
        "First every matching live key, then a ready event, then the changes (without a token).",
        {"type": "boolean"},
    ),
    _query("after", "Resume token (an event id); as Last-Event-ID.", {"type": "string"}),
    {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "Resume token: the id of the last event received, at this or any PoP.",
        "schema": {"type": "string"},
    },
]

_STREAM = {
    "description": (
        "An event stream: `change` events (data: WatchEvent, id: resume token), one `ready` "
        "event once the snapshot or catch-up is sent, heartbeat comments (with an id line when "
        "the log moved on), and at most one closing event: `relist` (the token cannot be "
        "served without a gap: list again) or `cut` (the watcher fell behind or the node stops: "
        "resume from the last id)."
    ),
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/WatchEvent"}}},
}

_RESPONSES = {
    "200": _STREAM,
    **_BAD,
    **_AUTH,
    "429": _error("too_many_watchers: over max_watchers or max_watchers_per_token"),
}

SCHEMAS: dict[str, Any] = {
    "WatchEvent": {
        "type": "object",
        "description": "The data of a change event.",
        "required": ["key", "op", "version", "bookmark"],
        "properties": {
            "key": {"type": "string", "description": "The key, or the document id."},
            "op": {"type": "string", "enum": ["put", "delete", "expire"]},
            "version": {"type": "string", "description": "The state's version (32 hex digits)."},
            "value": {
                "description": "Base64 of the value (key-value), the document itself (documents)."
            },
            "value_bytes": {
                "type": "integer",
                "description": "Size of a value left out (over watch_value_bytes, or not asked).",
            },
            "metadata": {"type": ["object", "null"]},
            "expiration": {"type": ["integer", "null"]},
            "bookmark": {
                "type": "string",
                "description": "Read-your-writes bookmark of this change at this PoP.",
            },
        },
    }
}

PATHS: dict[str, Any] = {
    "/v1/kv/{ns}/_watch": {
        "get": {
            "summary": "Watch a namespace's changes (Server-Sent Events, resumable at any PoP)",
            "parameters": [{"name": "ns", **_SPACE}, *_PARAMETERS],
            "responses": _RESPONSES,
        }
    },
    "/v1/docs/{collection}/_watch": {
        "get": {
            "summary": "Watch a collection's documents (Server-Sent Events, resumable at any PoP)",
            "parameters": [{"name": "collection", **_SPACE}, *_PARAMETERS],
            "responses": _RESPONSES,
        }
    },
}


def _stream_of(schema: str) -> dict[str, Any]:
    """The responses of a watch whose change events carry ``schema``."""
    stream = {
        **_STREAM,
        "content": {"text/event-stream": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    return {**_RESPONSES, "200": stream}


# Counters and sets: no values to leave out (include_values has no effect).
_CRDT_PARAMETERS = [p for p in _PARAMETERS if p["name"] != "include_values"]

SCHEMAS["CounterWatchEvent"] = {
    "type": "object",
    "description": "The data of a counter's change event: its value at this PoP when sent.",
    "required": ["key", "op", "value", "version", "bookmark"],
    "properties": {
        "key": {"type": "string"},
        "op": {"type": "string", "enum": ["update"]},
        "value": {"type": "integer", "format": "int64"},
        "version": {"type": "string", "description": "The counter's version (32 hex digits)."},
        "bookmark": {"type": "string"},
    },
}
SCHEMAS["SetWatchEvent"] = {
    "type": "object",
    "description": "The data of a set's change event: a member in the set now (add) or not.",
    "required": ["key", "member", "op", "version", "bookmark"],
    "properties": {
        "key": {"type": "string"},
        "member": {"type": "string"},
        "op": {"type": "string", "enum": ["add", "remove"]},
        "version": {"type": "string", "description": "The member's version (32 hex digits)."},
        "bookmark": {"type": "string"},
    },
}
PATHS["/v1/counters/{ns}/_watch"] = {
    "get": {
        "summary": "Watch a namespace's counters: each changed counter's value (SSE)",
        "parameters": [{"name": "ns", **_SPACE}, *_CRDT_PARAMETERS],
        "responses": _stream_of("CounterWatchEvent"),
    }
}
PATHS["/v1/sets/{ns}/_watch"] = {
    "get": {
        "summary": "Watch a namespace's sets: each member added or removed (SSE)",
        "parameters": [{"name": "ns", **_SPACE}, *_CRDT_PARAMETERS],
        "responses": _stream_of("SetWatchEvent"),
    }
}
