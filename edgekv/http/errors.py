"""API errors: raised by code, rendered in the one error shape.

Handlers raise :class:`ApiError` with a code from
:data:`edgekv_replication.codes.ERROR_CODES`; the wrapper around every route
(:mod:`edgekv.http.app`) and the connection protocol (:mod:`edgekv.http.protocol`,
for what aiohttp refuses itself) render ``{"error": {"code": ..., "message": ...}}``
with that code's status. This is the only place codes become statuses.
"""

from __future__ import annotations

import json

from aiohttp import web

from edgekv_replication.codes import ERROR_CODES


class ApiError(Exception):
    """An error the API reports to the caller with a documented code."""

    def __init__(
        self,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        """Create an error; ``code`` must be in the shared table.

        ``details`` are extra fields of the error object (such as the current
        version that made a condition fail).
        """
        if code not in ERROR_CODES:
            raise ValueError(f"undocumented error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERROR_CODES[code].status
        self.headers = headers or {}
        self.details = details or {}


def error_response(error: ApiError) -> web.Response:
    """Return the HTTP response for ``error``."""
    body = json.dumps({"error": {"code": error.code, "message": error.message, **error.details}})
    return web.Response(
        status=error.status,
        text=body,
        content_type="application/json",
        headers=error.headers,
    )


def from_http_exception(exc: web.HTTPException) -> ApiError:
    """The API error for one of aiohttp's own HTTP exceptions (routing, body size)."""
    if exc.status >= 500:
        code = "internal_error"
    else:
        code = HTTP_STATUS_CODES.get(exc.status, "invalid_request")
    allow = exc.headers.get("Allow")
    headers = {"Allow": allow} if allow is not None else None
    return ApiError(code, exc.reason or code, headers=headers)


# aiohttp's own HTTP exceptions (routing, body size) mapped to our codes.
HTTP_STATUS_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
