"""Pieces every part of the OpenAPI document uses (key-value, cluster, documents)."""

from __future__ import annotations

from typing import Any


def error(description: str) -> dict[str, Any]:
    """A response with the one error shape."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def json_of(schema: str, description: str = "OK") -> dict[str, Any]:
    """A JSON response of the named component schema."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


AUTH_ERRORS = {"401": error("unauthorized"), "403": error("forbidden")}
BAD_INPUT = {"400": error("invalid input (see code)")}
NOT_REACHED = {"503": error("bookmark_not_reached: the session's writes are not here yet")}
BOOKMARK = {
    "name": "EdgeKV-Bookmark",
    "in": "header",
    "description": "Session bookmarks, comma-separated: answer only once they are replicated.",
    "schema": {"type": "string"},
}
