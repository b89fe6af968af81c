"""Exceptions of the EdgeKV client, mapped from the server's error codes.

::

    EdgeKVError
    ├── TransportError          the node could not be reached or answered garbage
    └── ApiError                the node answered with an error body
        ├── InvalidRequest      400: invalid_* codes, key_too_long
        ├── Unauthorized        401
        ├── Forbidden           403
        ├── NotFound            404
        ├── TooLarge            413: value/metadata/payload too large, too many operations
        ├── PreconditionFailed  409/412
        └── Unavailable         503 (and other 5xx)
            └── StorageFull     507: the node's disk is full; retry later or elsewhere

The mapping goes through :data:`edgekv_replication.codes.ERROR_CODES`, the table
the server raises from, so client and server cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekv_replication.codes import ERROR_CODES


class EdgeKVError(Exception):
    """Base of every error the client raises."""


class TransportError(EdgeKVError):
    """The node could not be reached, or its answer could not be read."""


class ApiError(EdgeKVError):
    """The node answered with an error: ``code``, ``message`` and HTTP ``status``."""

    def __init__(
        self, code: str, message: str, status: int, details: Mapping[str, Any] | None = None
    ) -> None:
        """Create the error from the server's error body (``details``: its other fields)."""
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = dict(details or {})


class InvalidRequest(ApiError):
    """The request was malformed or over a limit on its shape (400)."""


class Unauthorized(ApiError):
    """No token, or a token the node does not know (401)."""


class Forbidden(ApiError):
    """The token lacks the needed scope (403)."""


class NotFound(ApiError):
    """No such key (404)."""


class TooLarge(ApiError):
    """A value, metadata or request over its size limit (413)."""


class PreconditionFailed(ApiError):
    """A conditional write's condition did not hold (409/412); nothing was written."""

    @property
    def current_version(self) -> str | None:
        """The key's version when the condition failed (None: absent)."""
        version = self.details.get("version")
        return version if isinstance(version, str) else None


class Unavailable(ApiError):
    """The node cannot serve the request now (503); retry later or elsewhere."""


class StorageFull(Unavailable):
    """The node's disk is full (507): the write was not applied; reads still work there."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: PreconditionFailed,
    412: PreconditionFailed,
    413: TooLarge,
    503: Unavailable,
    507: StorageFull,
}


def error_for(
    code: str, message: str, status: int, details: Mapping[str, Any] | None = None
) -> ApiError:
    """Return the exception for an error body, classified by the shared code table."""
    entry = ERROR_CODES.get(code)
    effective = entry.status if entry else status
    cls = _BY_STATUS.get(effective, Unavailable if effective >= 500 else ApiError)
    return cls(code, message, status, details)
