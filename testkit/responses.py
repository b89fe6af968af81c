"""HTTP answers as the test helpers see them, and the check of the documented error shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgekv_replication.codes import ERROR_CODES


@dataclass
class Response:
    """An HTTP answer: status, headers and raw body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        """The ``error.code`` of a JSON error body."""
        return str(self.json()["error"]["code"])


def assert_error(response: Response, code: str) -> None:
    """The response is exactly the documented error shape for ``code``."""
    assert response.status == ERROR_CODES[code].status, (code, response.status, response.body[:300])
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.headers,
        response.body[:300],
    )
    body = response.json()
    assert body == {"error": {"code": code, "message": body["error"]["message"]}}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
