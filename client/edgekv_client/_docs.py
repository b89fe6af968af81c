"""The I/O-free core of document collections: requests and answers for both clients.

``client.docs("users")`` returns a collection handle (:class:`edgekv_client.Collection`
or :class:`edgekv_client.AsyncCollection`); both build their requests and
read their answers here, so the two cannot differ. The handle sends through
its client, so a session's bookmarks apply to documents as to key-value
entries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from edgekv_client._core import Request, build_request

MERGE_PATCH_TYPE = "application/merge-patch+json"
"""The media type of an RFC 7386 merge patch."""

Filter = str | tuple[str, str, Any]
"""A ``where`` filter: ``"age>=30"`` as the API reads it, or ``("age", ">=", 30)``."""

Where = Filter | Mapping[str, Any] | Iterable[Filter]
"""Filters that all hold: one filter, a list of them, or ``{field: value}`` for equality."""

_OPERATORS = frozenset({"==", "=", "!=", "<", "<=", ">", ">="})
MAX_PAGE = 1000
"""The largest page a node answers."""


class Document(NamedTuple):
    """A document as read: its id, JSON object and version (the ``ETag``)."""

    id: str
    doc: dict[str, Any]
    version: str


class DocumentPage(NamedTuple):
    """One page of a query: the documents, and the cursor of the next page."""

    documents: list[Document]
    list_complete: bool
    cursor: str | None


def collection_path(collection: str) -> str:
    """The path of a collection (percent-encoded)."""
    return f"/v1/docs/{quote(collection, safe='')}"


def document_path(collection: str, doc_id: str) -> str:
    """The path of one document (the id is percent-encoded whole: ``/`` is not allowed in it)."""
    return f"{collection_path(collection)}/{quote(doc_id, safe='')}"


def _json_request(method: str, path: str, body: object, token: str | None) -> Request:
    if isinstance(body, Mapping):
        body = dict(body)  # anything else is sent as given, for the node to refuse
    # Documents are JSON objects: sent as compact UTF-8 JSON, numbers as Python holds them.
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    content_type = MERGE_PATCH_TYPE if method == "PATCH" else "application/json"
    request = build_request(method, path, token, body=raw, headers={"Content-Type": content_type})
    # A replace and a merge patch give the same document however often they are applied.
    return request._replace(idempotent=True)


def get_request(collection: str, doc_id: str, token: str | None) -> Request:
    """GET of one document."""
    return build_request("GET", document_path(collection, doc_id), token)


def put_request(
    collection: str, doc_id: str, document: Mapping[str, Any], token: str | None
) -> Request:
    """PUT: replace the document with ``document`` (creating it if needed)."""
    return _json_request("PUT", document_path(collection, doc_id), document, token)


def patch_request(
    collection: str, doc_id: str, patch: Mapping[str, Any], token: str | None
) -> Request:
    """PATCH: apply an RFC 7386 merge patch (``None`` removes a field)."""
    return _json_request("PATCH", document_path(collection, doc_id), patch, token)


def delete_request(collection: str, doc_id: str, token: str | None) -> Request:
    """DELETE of one document (succeeds when absent)."""
    return build_request("DELETE", document_path(collection, doc_id), token)


def index_request(collection: str, field: str, token: str | None) -> Request:
    """Declare an index on ``field`` (a dotted path) that queries use."""
    request = build_request(
        "POST", f"{collection_path(collection)}/_indexes", token, json_body={"field": field}
    )
    return request._replace(idempotent=True)  # declaring an existing index changes nothing


def indexes_request(collection: str, token: str | None) -> Request:
    """The indexes declared on a collection."""
    return build_request("GET", f"{collection_path(collection)}/_indexes", token)


def filter_text(item: Filter) -> str:
    """A filter as the API's ``where`` parameter reads it.

    A tuple's value is sent as a JSON literal, so ``("zip", "==", "0150")``
    compares with the string ``"0150"``, never the number 150.
    """
    if isinstance(item, str):
        return item
    field, op, value = item
    if op not in _OPERATORS:
        raise ValueError(f"unknown operator {op!r}: use one of == != < <= > >=")
    return f"{field}{op}{json.dumps(value, ensure_ascii=False)}"


def filters(where: Where) -> list[str]:
    """Every filter of ``where`` as a ``where`` parameter."""
    if isinstance(where, str):
        return [where]
    if isinstance(where, tuple) and len(where) == 3 and where[1] in _OPERATORS:
        field, op, value = where  # one (field, op, value): "==" alone is no filter
        return [filter_text((str(field), str(op), value))]
    if isinstance(where, Mapping):
        return [filter_text((field, "==", value)) for field, value in where.items()]
    return [filter_text(item) for item in where]


def query_request(
    collection: str,
    where: Where,
    order_by: str | None,
    limit: int | None,
    cursor: str | None,
    token: str | None,
) -> Request:
    """One page of a query: every filter holds, ordered by ``order_by`` (``-field``: descending)."""
    pairs = [("where", text) for text in filters(where)]
    pairs += [
        (name, str(value))
        for name, value in (("order_by", order_by), ("limit", limit), ("cursor", cursor))
        if value is not None
    ]
    path = collection_path(collection)
    if pairs:
        path = f"{path}?{urlencode(pairs)}"
    return build_request("GET", path, token)


def document_from_json(answer: Mapping[str, Any]) -> Document:
    """The document of a GET answer (or of one query item)."""
    return Document(answer["id"], answer["doc"], answer["version"])


def page_from_json(answer: Mapping[str, Any]) -> DocumentPage:
    """The page of a query answer."""
    return DocumentPage(
        [document_from_json(item) for item in answer["documents"]],
        answer["list_complete"],
        answer["cursor"],
    )


def next_page_limit(limit: int | None, page_size: int | None, returned: int) -> int | None:
    """The ``limit`` of the next page, when at most ``limit`` documents are wanted in all
    and ``returned`` have been; None leaves the node's default page size."""
    if limit is None:
        return page_size
    left = min(limit - returned, MAX_PAGE)
    return left if page_size is None else min(page_size, left)
