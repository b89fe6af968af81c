"""The OpenAPI paths of the web console: its static files and the admin routes behind it."""

from __future__ import annotations

from typing import Any

from edgekv.http.openapi_parts import AUTH_ERRORS, BAD_INPUT, error


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _admin_get(summary: str, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "JSON document"}, **AUTH_ERRORS},
    }
    if parameters:
        operation["parameters"] = parameters
        operation["responses"].update(BAD_INPUT)
    return {"get": operation}


PATHS: dict[str, Any] = {
    "/ui": {"get": {"summary": "Redirect to /ui/", "responses": {"302": {"description": "/ui/"}}}},
    "/ui/": {
        "get": {
            "summary": "The web console's page (no token: it holds no data)",
            "responses": {"200": {"description": "text/html"}},
        }
    },
    "/ui/{name}": {
        "get": {
            "summary": "One of the web console's scripts or its style sheet",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "text/javascript or text/css"},
                "404": error("not_found: no such console file"),
            },
        }
    },
    "/v1/admin/history": _admin_get(
        "The last hour of this node's metrics, a sample every 5 s (admin)"
    ),
    "/v1/admin/namespaces": _admin_get("Namespaces holding live keys, with counts (admin)"),
    "/v1/admin/collections": _admin_get("Document collections, with counts (admin)"),
    "/v1/admin/changes": _admin_get(
        "Recent key-value changes of the log, newest first, values cut to 256 bytes (admin)",
        [
            _query("before", "seq to page below (the previous page's before)", {"type": "integer"}),
            _query("limit", "1 to 200 (default 50)", {"type": "integer"}),
            _query("ns", "only this namespace", {"type": "string"}),
            _query("prefix", "only keys starting with this", {"type": "string"}),
        ],
    ),
}
"""Paths the console adds; absent from a node started with ``console = false``."""
