"""Strong namespaces in the HTTP API: conditions parsed, strong failures answered.

Writes to a strong namespace run in a PostgreSQL transaction through the
upstream connector and are applied locally once committed (the node routes
them: :meth:`edgekv.node.Node.write`); a failed condition answers 409
``precondition_failed`` with the key's current version. Conditions
(``If-Match``, ``If-None-Match: *``), ``POST /v1/kv/{ns}/_txn`` and
``?consistency=strong`` are refused on eventual namespaces, where they could
not be kept across PoPs.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from edgekv.http import validation as check
from edgekv.http.errors import ApiError
from edgekv.node import Node, StrongNamespaceRequired
from edgekv.upstream.connector import UpstreamUnavailable
from edgekv.upstream.strong import Condition, InvalidUpstreamRow, PreconditionFailed
from edgekv_replication.versions import decode_version, encode_version


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


STRONG_ERRORS = (
    PreconditionFailed,
    UpstreamUnavailable,
    InvalidUpstreamRow,
    StrongNamespaceRequired,
)
"""What the node's strong operations raise; :func:`api_error` answers each."""


def api_error(exc: Exception) -> ApiError:
    """The API error of one of :data:`STRONG_ERRORS`."""
    if isinstance(exc, PreconditionFailed):
        first = exc.failures[0]
        current = None if first.current is None else encode_version(*first.current)
        return ApiError(
            "precondition_failed",
            f"condition on key {first.key.decode('utf-8', 'replace')!r} does not hold",
            details={
                "version": current,
                "failed": [
                    {
                        "key": f.key.decode("utf-8", "replace"),
                        "version": None if f.current is None else encode_version(*f.current),
                    }
                    for f in exc.failures
                ],
            },
        )
    if isinstance(exc, UpstreamUnavailable):
        return ApiError("upstream_unavailable", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, InvalidUpstreamRow):
        return ApiError("upstream_invalid", str(exc))
    if isinstance(exc, StrongNamespaceRequired):
        return ApiError("strong_namespace_required", str(exc))
    raise TypeError(f"not a strong-operation error: {exc!r}")


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
