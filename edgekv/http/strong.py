"""Strong namespaces in the HTTP API: conditions, transactions and strong reads.

Writes to a strong namespace run in a PostgreSQL transaction through the
upstream connector and are applied locally once committed; a failed condition
answers 409 ``precondition_failed`` with the key's current version. Conditions
(``If-Match``, ``If-None-Match: *``), ``POST /v1/kv/{ns}/_txn`` and
``?consistency=strong`` are refused on eventual namespaces, where they could
not be kept across PoPs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.node import Node
from edgekv.store.kv import Entry, Write, WriteResult
from edgekv.upstream.connector import Upstream, UpstreamUnavailable
from edgekv.upstream.strong import Condition, InvalidUpstreamRow, PreconditionFailed
from edgekv_replication.versions import decode_version, encode_version


def strong_upstream(node: Node, ns: str) -> Upstream | None:
    """The connector when ``ns`` is a strong namespace here, else None."""
    upstream = node.upstream
    return upstream if upstream is not None and upstream.is_strong(ns) else None


def require_strong(node: Node, ns: str, what: str) -> Upstream:
    """The connector of strong namespace ``ns``, or raise ``strong_namespace_required``."""
    upstream = strong_upstream(node, ns)
    if upstream is None:
        raise ApiError(
            "strong_namespace_required",
            f"{what} needs a strong namespace; {ns!r} is eventually consistent "
            "(declare it in strong_namespaces, with an upstream)",
        )
    return upstream


def header_condition(request: web.Request, key: bytes) -> Condition | None:
    """The condition of ``If-Match`` / ``If-None-Match: *``, if the request has one."""
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if if_match is not None and if_none_match is not None:
        raise ApiError("invalid_request", "give If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError("invalid_request", 'If-None-Match takes only "*" (create only)')
        return Condition(key, exists=False)
    if if_match is not None:
        text = if_match.strip()
        if text == "*":
            return Condition(key, exists=True)
        return Condition(key, version=_version(text.strip('"'), "If-Match"))
    return None


def _version(text: object, where: str) -> tuple[int, int]:
    if not isinstance(text, str):
        raise ApiError("invalid_request", f"{where} must be a version string")
    try:
        return decode_version(text)
    except ValueError:
        raise ApiError("invalid_request", f"{where}: {text!r} is not an EdgeKV version") from None


async def write(
    node: Node,
    upstream: Upstream,
    ns: str,
    writes: Sequence[Write],
    conditions: Sequence[Condition],
) -> WriteResult:
    """Run a strong write and map its failures to API errors."""
    try:
        return await upstream.strong_write(ns, writes, conditions)
    except PreconditionFailed as failed:
        first = failed.failures[0]
        current = None if first.current is None else encode_version(*first.current)
        raise ApiError(
            "precondition_failed",
            f"condition on key {first.key.decode('utf-8', 'replace')!r} does not hold",
            details={
                "version": current,
                "failed": [
                    {
                        "key": f.key.decode("utf-8", "replace"),
                        "version": None if f.current is None else encode_version(*f.current),
                    }
                    for f in failed.failures
                ],
            },
        ) from None
    except UpstreamUnavailable as exc:
        raise unavailable(exc) from None
    except InvalidUpstreamRow as exc:
        raise ApiError("upstream_invalid", str(exc)) from None


def unavailable(exc: UpstreamUnavailable) -> ApiError:
    """The 503 of a strong operation that could not reach PostgreSQL."""
    return ApiError("upstream_unavailable", str(exc), headers={"Retry-After": "1"})


async def read(node: Node, ns: str, key: bytes) -> Entry | None:
    """A linearizable read of ``(ns, key)`` from PostgreSQL."""
    upstream = require_strong(node, ns, "consistency=strong")
    try:
        return await upstream.strong_read(ns, key)
    except UpstreamUnavailable as exc:
        raise unavailable(exc) from None
    except InvalidUpstreamRow as exc:
        raise ApiError("upstream_invalid", str(exc)) from None


def transaction_conditions(document: Mapping[str, object], node: Node) -> list[Condition]:
    """The ``conditions`` of a ``_txn`` body: ``{"key", "version"}`` or ``{"key", "exists"}``."""
    raw = document.get("conditions", [])
    if not isinstance(raw, list):
        raise ApiError("invalid_json", "conditions must be a list")
    conditions = []
    for index, item in enumerate(raw):
        where = f"conditions[{index}]"
        if not isinstance(item, Mapping):
            raise ApiError("invalid_json", f"{where} must be an object")
        extra = set(item) - {"key", "version", "exists"}
        if extra:
            raise ApiError("invalid_json", f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        try:
            key = check.key(item.get("key"), node.config)
        except ApiError as error:
            raise ApiError(error.code, f"{where}: {error.message}") from None
        version, exists = item.get("version"), item.get("exists")
        if (version is None) == (exists is None):
            raise ApiError("invalid_json", f"{where} needs exactly one of version and exists")
        if exists is not None and not isinstance(exists, bool):
            raise ApiError("invalid_json", f"{where}: exists is true or false")
        conditions.append(
            Condition(key, version=_version(version, f"{where}.version"))
            if version is not None
            else Condition(key, exists=exists)
        )
    return conditions
