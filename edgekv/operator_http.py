"""The operator commands' HTTP: admin requests to a node, answers streamed.

Standard library only (``http.client``), as the Python client is: a backup or
an export is read a chunk at a time, never whole. HTTPS verifies the node
against the system's CAs, or ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit


class OperatorError(RuntimeError):
    """The node refused the request or could not be reached; the message says why."""


def open_request(
    url: str,
    token: str | None,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 600.0,
) -> http.client.HTTPResponse:
    """Send one request; return the response of a 2xx answer, open for reading."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
        response = conn.getresponse()
    except OSError as exc:
        conn.close()
        raise OperatorError(f"cannot reach {url}: {exc}") from None
    if response.status >= 300:
        raw = response.read()
        conn.close()
        raise OperatorError(_error_text(response.status, raw))
    return response


def request_json(
    url: str, token: str | None, method: str, path: str, document: object = None
) -> Any:
    """Send one request (a JSON body if ``document`` is given); return the JSON answer."""
    body = None if document is None else json.dumps(document).encode("utf-8")
    response = open_request(url, token, method, path, body, timeout=60.0)
    try:
        return json.loads(response.read())
    finally:
        response.close()


class KeepAlive:
    """One connection to a node, reused for request after request (an import's)."""

    def __init__(self, url: str, token: str | None, timeout: float = 120.0) -> None:
        """Talk to the node at ``url`` with ``token``."""
        self._url = url
        parts = urlsplit(url)
        self._base = parts.path.rstrip("/")
        host, port = parts.hostname or "127.0.0.1", parts.port
        self._conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context()
            self._conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def send(self, method: str, path: str, body: bytes) -> Any:
        """Send a JSON body; return the JSON answer of a 2xx, else raise OperatorError."""
        try:
            self._conn.request(method, self._base + path, body=body, headers=self._headers)
            response = self._conn.getresponse()
            raw = response.read()
        except OSError as exc:
            self._conn.close()
            raise OperatorError(f"cannot reach {self._url}: {exc}") from None
        except http.client.HTTPException as exc:
            self._conn.close()
            raise OperatorError(f"{self._url} broke the connection: {exc!r}") from None
        if response.status >= 300:
            raise OperatorError(_error_text(response.status, raw))
        return json.loads(raw)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def _error_text(status: int, raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {raw[:200]!r}"
