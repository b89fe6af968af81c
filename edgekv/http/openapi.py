"""The OpenAPI 3.1 document of the node's HTTP API.

Kept next to the routes and checked by a test against the app's router, so a
route cannot be added without being described.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from edgekv import __version__
from edgekv.http import openapi_admin as admin_spec
from edgekv.http import openapi_console as console_spec
from edgekv.http import openapi_crdts as crdts_spec
from edgekv.http import openapi_documents as documents_spec
from edgekv.http import openapi_watch as watch_spec
from edgekv.http.openapi_parts import AUTH_ERRORS as _AUTH_ERRORS
from edgekv.http.openapi_parts import BAD_INPUT as _BAD
from edgekv.http.openapi_parts import BOOKMARK as _BOOKMARK
from edgekv.http.openapi_parts import NOT_REACHED as _NOT_REACHED
from edgekv.http.openapi_parts import error as _error
from edgekv.http.openapi_parts import json_of as _json
from edgekv_replication.codes import ERROR_CODES

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
    "description": "1-512 bytes of UTF-8, percent-encoded; may contain '/'.",
    "schema": {"type": "string"},
}


@cache
def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document (built once)."""
    error_codes = sorted(ERROR_CODES)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "EdgeKV node API",
            "version": __version__,
            "description": "Key-value and document store of one EdgeKV point of presence.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": error_codes},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "WriteResult": {
                    "type": "object",
                    "required": ["bookmark"],
                    "properties": {
                        "bookmark": {"type": "string", "description": "Opaque; read-your-writes."},
                        "version": {"type": "string", "description": "The entry's version."},
                    },
                },
                "KeyList": {
                    "type": "object",
                    "required": ["keys", "list_complete", "cursor"],
                    "properties": {
                        "keys": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "expiration": {"type": ["integer", "null"]},
                                    "metadata": {"type": ["object", "null"]},
                                },
                            },
                        },
                        "list_complete": {"type": "boolean"},
                        "cursor": {"type": ["string", "null"]},
                    },
                },
                "BulkRequest": {
                    "type": "object",
                    "required": ["operations"],
                    "properties": {
                        "operations": {
                            "type": "array",
                            "maxItems": 10000,
                            "items": {
                                "type": "object",
                                "required": ["op", "key"],
                                "properties": {
                                    "op": {"enum": ["put", "delete"]},
                                    "key": {"type": "string"},
                                    "value": {"type": "string", "contentEncoding": "base64"},
                                    "metadata": {"type": "object"},
                                    "ttl": {"type": "integer", "minimum": 1},
                                    "expiration": {"type": "integer"},
                                },
                            },
                        }
                    },
                },
                **documents_spec.SCHEMAS,
                **crdts_spec.SCHEMAS,
                **watch_spec.SCHEMAS,
                "GetManyRequest": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "GetManyResult": {
                    "type": "object",
                    "properties": {
                        "entries": {
                            "type": "object",
                            "additionalProperties": {
                                "type": ["object", "null"],
                                "properties": {
                                    "value": {
                                        "type": ["string", "null"],
                                        "contentEncoding": "base64",
                                        "description": "null: left out of the answer "
                                        "(max_get_many_bytes); GET the key",
                                    },
                                    "value_bytes": {"type": "integer"},
                                    "metadata": {"type": ["object", "null"]},
                                    "expiration": {"type": ["integer", "null"]},
                                    "version": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness and node identity",
                    "security": [],
                    "responses": {
                        "200": {"description": "serving"},
                        "503": {"description": "storage_corrupt: the database file is damaged"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
            "/v1/peer/stream": {
                "get": {
                    "summary": "Peer pull stream (WebSocket, msgpack envelope)",
                    "description": "For EdgeKV peers only; authenticated by the "
                    "EdgeKV-Cluster-Secret header.",
                    "security": [],
                    "parameters": [
                        {
                            "name": "EdgeKV-Cluster-Secret",
                            "in": "header",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "101": {"description": "switching to WebSocket"},
                        "401": _error("unauthorized"),
                    },
                }
            },
            "/v1/cluster/status": {
                "get": {
                    "summary": "This node and every member: state, lag, clock offset (admin)",
                    "description": "With regions, `region` in `node` and in every member, "
                    "`direct` per member, and with a NATS backbone a `backbone` object "
                    "(state, url, stream, published_seq, lag_changes, pending_messages, "
                    "lag_ms, last_contact_ms, last_error).",
                    "responses": {
                        "200": {"description": "status document"},
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/cluster/members/{node_id}": {
                "delete": {
                    "summary": "Remove a dead member (admin)",
                    "parameters": [
                        {
                            "name": "node_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "removed"},
                        **_AUTH_ERRORS,
                        "404": _error("no such member"),
                    },
                }
            },
            **documents_spec.PATHS,
            **crdts_spec.PATHS,
            **console_spec.PATHS,
            **admin_spec.PATHS,
            **watch_spec.PATHS,
            "/v1/kv/{ns}": {
                "get": {
                    "summary": "List keys in byte order, a page at a time",
                    "parameters": [
                        _NS,
                        {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        _BOOKMARK,
                    ],
                    "responses": {
                        "200": _json("KeyList"),
                        **_BAD,
                        **_AUTH_ERRORS,
                        **_NOT_REACHED,
                    },
                }
            },
            "/v1/kv/{ns}/_bulk": {
                "post": {
                    "summary": "Apply puts and deletes atomically",
                    "parameters": [_NS],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/BulkRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("WriteResult"),
                        **_BAD,
                        **_AUTH_ERRORS,
                        "413": _error("too many operations or too large"),
                    },
                }
            },
            "/v1/kv/{ns}/_txn": {
                "post": {
                    "summary": "Strong namespaces: conditions, then puts and deletes, linearizably",
                    "description": 'Body: {"conditions": [{"key", "version"} or '
                    '{"key", "exists": bool}], "operations": [as in _bulk]}. '
                    "Runs in one PostgreSQL transaction.",
                    "parameters": [_NS],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": _json("WriteResult"),
                        **_BAD,
                        **_AUTH_ERRORS,
                        "409": _error("precondition_failed: a condition did not hold"),
                        "413": _error("too many operations or too large"),
                        "503": _error("upstream_unavailable"),
                    },
                }
            },
            "/v1/kv/{ns}/_get": {
                "post": {
                    "summary": "Read many keys at once",
                    "parameters": [_NS, _BOOKMARK],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/GetManyRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("GetManyResult"),
                        **_BAD,
                        **_AUTH_ERRORS,
                        "413": _error("too many keys, or a body over its limit"),
                        **_NOT_REACHED,
                    },
                }
            },
            "/v1/kv/{ns}/{key}": {
                "get": {
                    "summary": "Read a value",
                    "parameters": [_NS, _KEY, _BOOKMARK],
                    "responses": {
                        "200": {
                            "description": "The raw value",
                            "headers": {
                                "EdgeKV-Metadata": {
                                    "schema": {"type": "string"},
                                    "description": "JSON object",
                                },
                                "EdgeKV-Expiration": {
                                    "schema": {"type": "integer"},
                                    "description": "epoch seconds",
                                },
                                "ETag": {"schema": {"type": "string"}, "description": "version"},
                            },
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        **_BAD,
                        **_AUTH_ERRORS,
                        "404": _error("absent, deleted or expired"),
                        **_NOT_REACHED,
                    },
                },
                "put": {
                    "summary": "Write a value",
                    "parameters": [
                        _NS,
                        _KEY,
                        {"name": "ttl", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                        {
                            "name": "expiration",
                            "in": "query",
                            "schema": {"type": "integer"},
                            "description": "epoch seconds",
                        },
                        {
                            "name": "EdgeKV-Metadata",
                            "in": "header",
                            "schema": {"type": "string"},
                            "description": "JSON object, at most 1 KiB",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("WriteResult"),
                        **_BAD,
                        **_AUTH_ERRORS,
                        "413": _error("value or metadata too large"),
                    },
                },
                "delete": {
                    "summary": "Delete a key (idempotent)",
                    "parameters": [_NS, _KEY],
                    "responses": {"200": _json("WriteResult"), **_BAD, **_AUTH_ERRORS},
                },
            },
        },
    }
