"""The OpenAPI description of the document routes (merged by :mod:`edgekv.http.openapi`)."""

from __future__ import annotations

from typing import Any

from edgekv.http.openapi_parts import AUTH_ERRORS as _AUTH
from edgekv.http.openapi_parts import BAD_INPUT as _BAD
from edgekv.http.openapi_parts import BOOKMARK as _BOOKMARK
from edgekv.http.openapi_parts import NOT_REACHED as _NOT_REACHED
from edgekv.http.openapi_parts import error as _error
from edgekv.http.openapi_parts import json_of as _json

_COLLECTION = {
    "name": "collection",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$"},
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "1-512 bytes of UTF-8; no '/', not starting with '_'.",
    "schema": {"type": "string"},
}
_WRITTEN = {"200": _json("WriteResult"), **_BAD, **_AUTH}
_JSON_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}

SCHEMAS: dict[str, Any] = {
    "Document": {
        "type": "object",
        "required": ["id", "version", "doc"],
        "properties": {
            "id": {"type": "string"},
            "version": {"type": "string", "description": "The newest write merged in."},
            "doc": {"type": "object"},
        },
    },
    "DocumentPage": {
        "type": "object",
        "required": ["documents", "list_complete", "cursor"],
        "properties": {
            "documents": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}},
            "list_complete": {"type": "boolean"},
            "cursor": {"type": ["string", "null"]},
        },
    },
    "DocumentIndex": {
        "type": "object",
        "properties": {
            "field": {"type": "string"},
            "name": {"type": "string"},
            "created_ms": {"type": "integer"},
        },
    },
}

PATHS: dict[str, Any] = {
    "/v1/docs/{collection}": {
        "get": {
            "summary": "Query documents: where, order_by, limit, cursor",
            "parameters": [
                _COLLECTION,
                {
                    "name": "where",
                    "in": "query",
                    "description": "field==value, !=, <, <=, >, >= (repeatable; all hold)",
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "explode": True,
                },
                {
                    "name": "order_by",
                    "in": "query",
                    "description": "field, or -field for descending",
                    "schema": {"type": "string"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                _BOOKMARK,
            ],
            "responses": {"200": _json("DocumentPage"), **_BAD, **_AUTH, **_NOT_REACHED},
        }
    },
    "/v1/docs/{collection}/_indexes": {
        "get": {
            "summary": "The indexes declared on a collection",
            "parameters": [_COLLECTION],
            "responses": {"200": {"description": "{indexes: [...]}"}, **_BAD, **_AUTH},
        },
        "post": {
            "summary": "Declare an index on a field (expression index over the JSON)",
            "parameters": [_COLLECTION],
            "requestBody": _JSON_BODY,
            "responses": {
                "200": _json("DocumentIndex", "existed"),
                "201": _json("DocumentIndex", "created"),
                **_BAD,
                **_AUTH,
            },
        },
    },
    "/v1/docs/{collection}/{id}": {
        "get": {
            "summary": "Read a document and its version",
            "parameters": [_COLLECTION, _ID, _BOOKMARK],
            "responses": {
                "200": _json("Document"),
                **_BAD,
                **_AUTH,
                "404": _error("absent or deleted"),
                **_NOT_REACHED,
            },
        },
        "put": {
            "summary": "Replace a document (JSON object, at most 1 MiB and 32 levels)",
            "parameters": [_COLLECTION, _ID],
            "requestBody": _JSON_BODY,
            "responses": {**_WRITTEN, "413": _error("document_too_large")},
        },
        "patch": {
            "summary": "Apply an RFC 7386 JSON merge patch, merged field by field",
            "parameters": [_COLLECTION, _ID],
            "requestBody": {
                "required": True,
                "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
            },
            "responses": {
                **_WRITTEN,
                "404": _error("absent or deleted"),
                "413": _error("document_too_large"),
            },
        },
        "delete": {
            "summary": "Delete a document (idempotent; wins over concurrent writes)",
            "parameters": [_COLLECTION, _ID],
            "responses": _WRITTEN,
        },
    },
    "/v1/docs/{collection}/{id}/ystate": {
        "get": {
            "summary": "The Y update a replica with state vector sv is missing",
            "parameters": [
                _COLLECTION,
                _ID,
                {
                    "name": "sv",
                    "in": "query",
                    "description": "base64 (standard or URL-safe) Y state vector; none: all",
                    "schema": {"type": "string"},
                },
                _BOOKMARK,
            ],
            "responses": {
                "200": {"description": "binary Y update (v1 encoding)", "content": _BINARY},
                **_BAD,
                **_AUTH,
                "404": _error("never written"),
                **_NOT_REACHED,
            },
        }
    },
    "/v1/docs/{collection}/{id}/yupdate": {
        "post": {
            "summary": "Apply a binary Y update (Yjs, pycrdt) after validating it",
            "parameters": [_COLLECTION, _ID],
            "requestBody": {"required": True, "content": _BINARY},
            "responses": {**_WRITTEN, "413": _error("document_too_large")},
        }
    },
}
