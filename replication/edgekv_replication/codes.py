"""The error codes of the EdgeKV HTTP API: one table for server, client and docs.

Every error response has the body ``{"error": {"code": CODE, "message": TEXT}}``
and the HTTP status listed here for ``CODE``. The server raises errors by code,
the client maps codes to exceptions through this table, and
``docs/errors.md`` is checked against it by a test, so the three cannot drift.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorCode(NamedTuple):
    """One documented error: its code, HTTP status and meaning."""

    code: str
    status: int
    description: str


_TABLE = (
    ErrorCode("invalid_request", 400, "The request is malformed; the message says how."),
    ErrorCode("invalid_json", 400, "The request body is not valid JSON of the expected shape."),
    ErrorCode(
        "invalid_unicode",
        400,
        "A JSON string or object key (in a body, the metadata header or a query's where) "
        "holds a lone UTF-16 surrogate such as \\ud800: text must be valid Unicode.",
    ),
    ErrorCode(
        "invalid_namespace",
        400,
        "The namespace (or collection) does not match [A-Za-z0-9_.-]{1,64}, or is '.' or '..'.",
    ),
    ErrorCode("invalid_key", 400, "The key is empty, not UTF-8, or '.' or '..'."),
    ErrorCode("key_too_long", 400, "The key is longer than max_key_bytes (512 bytes by default)."),
    ErrorCode("invalid_metadata", 400, "The metadata is not a JSON object."),
    ErrorCode(
        "invalid_expiration",
        400,
        "ttl or expiration is not a positive integer, lies in the past, or both are given.",
    ),
    ErrorCode("invalid_parameter", 400, "A query parameter such as limit has an invalid value."),
    ErrorCode("invalid_cursor", 400, "The list cursor was not issued by this API."),
    ErrorCode("invalid_bookmark", 400, "The bookmark was not issued by EdgeKV."),
    ErrorCode(
        "invalid_watch_token",
        400,
        "The watch resume token (after= or Last-Event-ID) was not issued by EdgeKV.",
    ),
    ErrorCode(
        "invalid_document_id",
        400,
        "The document id is empty, longer than max_key_bytes, contains '/', starts with '_', "
        "or is '.' or '..'.",
    ),
    ErrorCode(
        "invalid_patch", 400, "The body of a document PATCH is not a JSON merge patch object."
    ),
    ErrorCode(
        "invalid_yupdate",
        400,
        "The body is not a Y update this document can take: it does not decode, depends on "
        "changes the node lacks (sync with ystate first), or stores content that is not JSON.",
    ),
    ErrorCode(
        "document_too_deep", 400, "The document would nest more than 32 levels of objects/arrays."
    ),
    ErrorCode(
        "number_out_of_range",
        400,
        "An integer outside -2**63..2**63-2, or a number that is not finite; send it as a string.",
    ),
    ErrorCode(
        "too_many_indexes",
        400,
        "The collection already has max_indexes_per_collection declared indexes (16 by default).",
    ),
    ErrorCode(
        "counter_overflow",
        400,
        "A counter add is not from -(2**63 - 1) to 2**63 - 1 (a bound: not a signed 64-bit "
        "integer), or would take the counter's value (or this PoP's sum of increments or of "
        "decrements since the last reset that removed them) beyond 64 bits; nothing was added.",
    ),
    ErrorCode(
        "invalid_member",
        400,
        "A set member (or a set listing's prefix, which may be empty) is not a non-empty "
        "string of at most 512 bytes of UTF-8 without NUL.",
    ),
    ErrorCode(
        "too_many_members",
        400,
        "A set request adds and removes more than max_set_request_members members "
        "(1,000 by default); nothing was applied.",
    ),
    ErrorCode("unauthorized", 401, "No bearer token, or a token this node does not know."),
    ErrorCode("forbidden", 403, "The token lacks the scope this operation needs."),
    ErrorCode(
        "untrusted_origin",
        403,
        "Protected mode (no tokens) serves only loopback: the request's Host or Origin header "
        "names another host, as a web page or DNS rebinding would. Use a loopback URL, or "
        "configure tokens.",
    ),
    ErrorCode(
        "not_found",
        404,
        "No such key (absent, deleted or expired), no such document, or no such route.",
    ),
    ErrorCode("method_not_allowed", 405, "The route does not support this HTTP method."),
    ErrorCode(
        "request_timeout",
        408,
        "The request body stopped arriving for body_timeout seconds (30 by default); nothing "
        "was written and the connection is closed.",
    ),
    ErrorCode(
        "metadata_too_large",
        413,
        "The metadata is larger than max_metadata_bytes (1 KiB by default).",
    ),
    ErrorCode(
        "value_too_large", 413, "The value is larger than max_value_bytes (25 MiB by default)."
    ),
    ErrorCode(
        "too_many_operations",
        413,
        "A bulk request has more than max_bulk_operations operations, or a get-many request "
        "more than max_get_many_keys keys.",
    ),
    ErrorCode(
        "document_too_large",
        413,
        "The document would be larger than 1 MiB of compact JSON, or its request body "
        "(JSON or Y update) is larger than 4 MiB.",
    ),
    ErrorCode(
        "payload_too_large",
        413,
        "The request body is larger than the route's body limit (max_request_bytes for bulk "
        "and transactions; see Bounded resources in api.md).",
    ),
    ErrorCode(
        "unsupported_content_encoding",
        415,
        "The request has a Content-Encoding other than identity: request bodies are taken "
        "uncompressed only, so every body limit holds for the bytes stored.",
    ),
    ErrorCode(
        "expectation_failed", 417, "The Expect header holds something other than 100-continue."
    ),
    ErrorCode(
        "rate_limited",
        429,
        "The token made more requests than its rate limit (rate_limit, or the token's own); "
        "retry after the seconds Retry-After names.",
    ),
    ErrorCode(
        "too_many_watchers",
        429,
        "The node already serves max_watchers watch streams, or the token holds "
        "max_watchers_per_token of them here; retry after Retry-After seconds or at another PoP.",
    ),
    ErrorCode(
        "headers_too_large",
        431,
        "The request line or a header is longer than 64 KiB, or the request has more than "
        "128 headers.",
    ),
    ErrorCode(
        "precondition_failed",
        409,
        "A condition of a strong write (If-Match, If-None-Match, a transaction's conditions) "
        "did not hold; nothing was written. The error carries the key's current version.",
    ),
    ErrorCode(
        "set_full",
        409,
        "The add would take the set past max_set_members members (10,000 by default); "
        "nothing was applied.",
    ),
    ErrorCode(
        "counter_out_of_bounds",
        409,
        "A bounded counter add (min or max, strong namespaces) would take the value outside "
        "its bounds; nothing was added. The error carries the current value.",
    ),
    ErrorCode(
        "strong_namespace_required",
        400,
        "Conditions, transactions, a counter add's min/max and ?consistency=strong (of a key "
        "or a counter) need a strong namespace (strong_namespaces, with an upstream).",
    ),
    ErrorCode("internal_error", 500, "An unexpected server fault; nothing was written."),
    ErrorCode(
        "storage_corrupt",
        503,
        "The node found its database file damaged (/healthz answers this too); the "
        "operation was not done. Use another PoP; the operator replaces the node.",
    ),
    ErrorCode(
        "storage_full",
        507,
        "The node's disk is full: the write was not applied. Reads keep working, and "
        "writes succeed again by themselves once space is freed; retry later or elsewhere.",
    ),
    ErrorCode(
        "unavailable", 503, "The node is starting or shutting down; retry elsewhere or later."
    ),
    ErrorCode(
        "upstream_unavailable",
        503,
        "A strong operation could not reach PostgreSQL within upstream_timeout. It was not "
        "applied, unless the connection broke during its commit; retry with a condition.",
    ),
    ErrorCode(
        "upstream_invalid",
        502,
        "A strong operation met a row in PostgreSQL that breaks the API's limits (written "
        "there directly, not through EdgeKV); nothing was applied or answered from it. The "
        "server log names the row; the operator repairs or deletes it in PostgreSQL.",
    ),
    ErrorCode(
        "bookmark_not_reached",
        503,
        "The read carried a bookmark this node has not replicated yet within bookmark_timeout; "
        "retry after Retry-After seconds, here or at the PoP that took the write.",
    ),
)

ERROR_CODES: dict[str, ErrorCode] = {entry.code: entry for entry in _TABLE}
"""Every error code of the API, by code."""
