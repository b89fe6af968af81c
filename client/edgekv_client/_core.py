"""The I/O-free core shared by the clients: building requests, decoding answers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

from edgekv_client.errors import TransportError, Unavailable, error_for

USER_AGENT = "edgekv-client/0.1"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
RETRY_BASE_SECONDS = 0.05


def retry_delay(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, with full jitter."""
    import random  # only when a retry happens: keeps `import edgekv_client` light

    return random.uniform(0, RETRY_BASE_SECONDS * 2**attempt)


def should_retry(request: Request, error: Exception) -> bool:
    """Whether a failed request may be sent again: idempotent, and the node unreachable
    or stopping (never a 4xx, never a write that may have been applied)."""
    if not request.idempotent:
        return False
    return isinstance(error, TransportError) or (
        isinstance(error, Unavailable) and error.code == "unavailable"
    )


class Request(NamedTuple):
    """One HTTP request, ready for a transport."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    idempotent: bool = False
    """Safe to send again after a connection failure (GET, PUT, DELETE, get-many)."""


class Entry(NamedTuple):
    """A value with its metadata, expiration (epoch seconds) and version."""

    value: bytes
    metadata: dict[str, Any] | None
    expiration: int | None
    version: str | None


class ListPage(NamedTuple):
    """One page of a key listing."""

    keys: list[dict[str, Any]]
    list_complete: bool
    cursor: str | None


def split_url(url: str) -> tuple[str, str, int, str]:
    """Return ``(scheme, host, port, base_path)`` of a node URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


# Keys and namespaces made only of these need no percent-encoding (quote() would
# return them unchanged): checking that is a third of quote()'s cost on the GET path.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~/-]+")


@lru_cache(maxsize=256)
def namespace_path(namespace: str) -> str:
    """Return ``/v1/kv/{namespace}/`` (percent-encoded; a client uses few namespaces)."""
    return f"/v1/kv/{quote(namespace, safe='')}/"


def key_path(namespace: str, key: str) -> str:
    """Return the path of a key (percent-encoded; '/' kept readable).

    The keys the API refuses and a URL cannot carry (an empty key would name the
    namespace's listing) raise ``invalid_key`` here, before anything is sent.
    """
    if _UNRESERVED.fullmatch(key) is None:
        if key == "":
            raise error_for("invalid_key", "a key is a non-empty string other than . and ..", 400)
        key = quote(key, safe="/")
    elif key in (".", ".."):
        raise error_for(
            "invalid_key", f"a key is a non-empty string other than . and ..: {key!r}", 400
        )
    return namespace_path(namespace) + key


def build_request(
    method: str,
    path: str,
    token: str | None,
    *,
    query: Mapping[str, str | int | None] | None = None,
    body: bytes | None = None,
    json_body: object = None,
    headers: Mapping[str, str] | None = None,
) -> Request:
    """Return a request with auth, content type and query string in place."""
    all_headers = {"User-Agent": USER_AGENT}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = json.dumps(json_body).encode("utf-8")
        all_headers["Content-Type"] = "application/json"
    elif body is not None:
        all_headers["Content-Type"] = "application/octet-stream"
    if headers:
        all_headers.update(headers)
    if query:
        pairs = {k: str(v) for k, v in query.items() if v is not None}
        if pairs:
            path = f"{path}?{urlencode(pairs)}"
    return Request(method, path, all_headers, body, method in _IDEMPOTENT)


def put_request(
    namespace: str,
    key: str,
    value: bytes | str,
    token: str | None,
    *,
    ttl: int | None = None,
    expiration: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> Request:
    """Return the request that writes ``value`` to ``key`` (conditionally, when asked)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    headers = condition_headers(if_match, if_none_match)
    if metadata is not None:
        # ASCII JSON: header values must be ASCII.
        headers["EdgeKV-Metadata"] = json.dumps(dict(metadata), separators=(",", ":"))
    request = build_request(
        "PUT",
        key_path(namespace, key),
        token,
        query={"ttl": ttl, "expiration": expiration},
        body=raw,
        headers=headers,
    )
    return _unless_conditional(request)


def condition_headers(if_match: str | None, if_none_match: bool) -> dict[str, str]:
    """``If-Match`` (a version, or ``*``) or ``If-None-Match: *`` (strong namespaces)."""
    if if_match is not None and if_none_match:
        raise ValueError("give if_match or if_none_match, not both")
    if if_none_match:
        return {"If-None-Match": "*"}
    if if_match is not None:
        return {"If-Match": if_match if if_match == "*" else f'"{if_match}"'}
    return {}


def _unless_conditional(request: Request) -> Request:
    # A conditional write that may have been applied must not be sent again:
    # the retry would fail its own condition and report the success as a conflict.
    if "If-Match" in request.headers or "If-None-Match" in request.headers:
        return request._replace(idempotent=False)
    return request


def bulk_body(operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the ``_bulk`` body; values given as bytes or str are base64-encoded."""
    import base64  # bulk and get-many only: keeps `import edgekv_client` light

    encoded = []
    for op in operations:
        item = dict(op)
        value = item.get("value")
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, bytes):
            item["value"] = base64.b64encode(value).decode("ascii")
        encoded.append(item)
    return {"operations": encoded}


def raise_for_error(status: int, body: bytes) -> None:
    """Raise the mapped exception when ``status`` is an error."""
    if status < 400:
        return
    details: dict[str, Any] = {}
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        details = {k: v for k, v in error.items() if k not in ("code", "message")}
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = (
            ("unavailable" if status >= 500 else "invalid_request"),
            body[:200].decode("utf-8", "replace"),
        )
    raise error_for(code, message, status, details)


def decode_json(body: bytes) -> Any:
    """Decode a JSON answer, or raise TransportError."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise TransportError(f"node answered invalid JSON: {exc}") from None


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Answer headers keyed by lower-case name (header names ignore case)."""
    return {name.lower(): value for name, value in items}


def entry_from_response(body: bytes, headers: Mapping[str, str]) -> Entry:
    """Return the entry of a GET answer (``headers`` keyed by lower-case name)."""
    metadata = headers.get("edgekv-metadata")
    expiration = headers.get("edgekv-expiration")
    etag = headers.get("etag")
    return Entry(
        body,
        json.loads(metadata) if metadata else None,
        int(expiration) if expiration else None,
        etag.strip('"') if etag else None,
    )


def entry_from_json(item: Mapping[str, Any]) -> Entry:
    """Return an entry of a ``_get`` answer."""
    import base64

    return Entry(
        base64.b64decode(item["value"]),
        item.get("metadata"),
        item.get("expiration"),
        item.get("version"),
    )


# -- one request builder and one answer parser per operation, for both clients --


def get_request(
    namespace: str, key: str, token: str | None, consistency: str | None = None
) -> Request:
    """GET of one key (``consistency="strong"``: from the upstream, linearizable).

    :func:`build_request`'s result, built directly: this is the hot path of both clients.
    """
    path = key_path(namespace, key)
    if consistency is not None:
        path += "?" + urlencode({"consistency": consistency})
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Request("GET", path, headers, None, True)


def delete_request(
    namespace: str, key: str, token: str | None, if_match: str | None = None
) -> Request:
    """DELETE of one key (if its version is ``if_match``, when given)."""
    headers = condition_headers(if_match, False)
    return _unless_conditional(
        build_request("DELETE", key_path(namespace, key), token, headers=headers)
    )


def transaction_request(
    namespace: str,
    operations: Iterable[Mapping[str, Any]],
    conditions: Iterable[Mapping[str, Any]],
    token: str | None,
) -> Request:
    """A strong namespace's transaction: conditions, then puts and deletes."""
    body = {"conditions": [dict(c) for c in conditions], **bulk_body(operations)}
    return build_request("POST", f"/v1/kv/{quote(namespace, safe='')}/_txn", token, json_body=body)


def list_request(
    namespace: str, prefix: str, limit: int | None, cursor: str | None, token: str | None
) -> Request:
    """One page of a listing."""
    return build_request(
        "GET",
        f"/v1/kv/{quote(namespace, safe='')}",
        token,
        query={"prefix": prefix or None, "limit": limit, "cursor": cursor},
    )


def page_from_json(answer: Mapping[str, Any]) -> ListPage:
    """The page of a listing answer."""
    return ListPage(answer["keys"], answer["list_complete"], answer["cursor"])


def get_many_request(namespace: str, keys: Iterable[str], token: str | None) -> Request:
    """Reading up to 100 keys at once (idempotent, though a POST)."""
    request = build_request(
        "POST", f"/v1/kv/{quote(namespace, safe='')}/_get", token, json_body={"keys": list(keys)}
    )
    return Request(request.method, request.path, request.headers, request.body, True)


def entries_from_json(answer: Mapping[str, Any]) -> dict[str, Entry | None]:
    """The entries of a get-many answer, but for those in :func:`omitted_from`."""
    return {
        name: (entry_from_json(item) if item else None)
        for name, item in answer["entries"].items()
        if not _is_omitted(item)
    }


def omitted_from(answer: Mapping[str, Any]) -> list[str]:
    """The names whose values a get-many answer left out (over the node's answer budget,
    ``{"value": null, "value_bytes": N}``): the caller fetches each with a GET."""
    return [name for name, item in answer["entries"].items() if _is_omitted(item)]


def _is_omitted(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("value") is None


def bulk_request(
    namespace: str, operations: Iterable[Mapping[str, Any]], token: str | None
) -> Request:
    """Atomic puts and deletes."""
    return build_request(
        "POST",
        f"/v1/kv/{quote(namespace, safe='')}/_bulk",
        token,
        json_body=bulk_body(operations),
    )


class Namespace:
    """A handle on one namespace: the client's methods with the namespace filled in.

    >>> flags = client.namespace("flags")  # doctest: +SKIP
    >>> flags.put("beta", "on"); flags.get("beta")  # doctest: +SKIP
    b'on'

    Works for both clients: with an ``AsyncClient`` the methods are awaited.
    """

    METHODS = frozenset(
        {"get", "get_with_metadata", "get_json", "put", "put_json", "delete", "list",
         "list_page", "get_many", "bulk"}
    )  # fmt: skip

    def __init__(self, client: object, name: str) -> None:
        """Bind ``client``'s key-value methods to namespace ``name``."""
        self.client = client
        self.name = name

    def __getattr__(self, method: str) -> Any:
        if method not in self.METHODS:
            raise AttributeError(method)
        bound = getattr(self.client, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return bound(self.name, *args, **kwargs)

        call.__doc__ = bound.__doc__
        return call

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def dump_json(value: object) -> bytes:
    """A value as compact UTF-8 JSON, for ``put_json``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_json(raw: bytes | None) -> Any:
    """A ``get_json`` answer: the decoded value, or None when absent."""
    return None if raw is None else json.loads(raw)
