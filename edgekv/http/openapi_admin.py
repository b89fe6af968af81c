"""The OpenAPI of the operator routes under ``/v1/admin`` (:mod:`edgekv.http.operator_routes`)."""

from __future__ import annotations

from typing import Any

from edgekv.http.openapi_parts import AUTH_ERRORS, BAD_INPUT, error

_ID = {"name": "id_or_name", "in": "path", "required": True, "schema": {"type": "string"}}
_TOKEN = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the first 12 hex digits of the token's hash"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "rate_limit": {"type": ["number", "null"]},
        "created_ms": {"type": ["integer", "null"]},
        "source": {"enum": ["config", "runtime"]},
    },
}

PATHS: dict[str, Any] = {
    "/v1/admin/backup": {
        "get": {
            "summary": "A consistent snapshot of the database, taken while the node serves "
            "(admin): the SQLite file, its manifest (JSON, with its sha256) in the "
            "EdgeKV-Backup-Manifest header",
            "responses": {
                "200": {
                    "description": "backup file",
                    "content": {"application/octet-stream": {}},
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/export": {
        "get": {
            "summary": "Every live key as NDJSON, streamed (admin): ns, key, value (base64), "
            "metadata, expiration",
            "parameters": [
                {"name": "namespace", "in": "query", "schema": {"type": "string"}},
                {"name": "prefix", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "NDJSON", "content": {"application/x-ndjson": {}}},
                **BAD_INPUT,
                **AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/tokens": {
        "get": {
            "summary": "The config file's and the runtime tokens (admin; never secrets)",
            "responses": {
                "200": {
                    "description": "tokens",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"tokens": {"type": "array", "items": _TOKEN}},
                            }
                        }
                    },
                },
                **AUTH_ERRORS,
            },
        },
        "post": {
            "summary": "Create a runtime token, replicated to every PoP (admin); the answer "
            "holds the token, shown once",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["name", "scopes"],
                            "properties": {
                                "name": {"type": "string"},
                                "scopes": {"type": "array", "items": {"type": "string"}},
                                "rate_limit": {"type": ["number", "null"]},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "the token and its listing"},
                **BAD_INPUT,
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/admin/tokens/{id_or_name}": {
        "delete": {
            "summary": "Revoke runtime tokens by id or name; every PoP refuses them once the "
            "revoke reaches it (admin)",
            "parameters": [_ID],
            "responses": {
                "200": {"description": "revoked"},
                **BAD_INPUT,
                **AUTH_ERRORS,
                "404": error("no runtime token has this id or name"),
            },
        }
    },
}
