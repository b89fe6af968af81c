"""Hostile-client findings of the counters-and-sets round, against real nodes.

``Expect: 100-continue`` asks the server whether to send the body at all: a
request the node refuses without reading its body (no token, a token without
the scope, a ``Content-Length`` over the route's limit) is answered with its
final status, never first with ``100 Continue`` (which would have the client
upload, say, 25 MiB for nothing), and its connection closes at once rather
than waiting for a body the client is holding back.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from testkit.processes import NodeProcess
from testkit.rawhttp import address, exchange, parse
from testkit.responses import assert_error

StartNode = Callable[..., NodeProcess]


@pytest.fixture
def tokens(tmp_path: Path, start_node: StartNode) -> tuple[NodeProcess, str, str]:
    """A node with tokens: one that may read and write ``t*``, one that may only read it."""
    writer, reader = new_token(), new_token()
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(
        'cluster_secret = "round3-round3-round3-round3-round3"\n'
        + token_toml("writer", writer, ["read:t*", "write:t*"])
        + token_toml("reader", reader, ["read:t*"])
    )
    return start_node(args=["--config", str(config_file)]), writer, reader


def _expecting(line: str, token: str | None, length: int) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"{line} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("line", "who", "length", "code"),
    [
        ("PUT /v1/kv/t1/k", None, 5, "unauthorized"),
        ("POST /v1/counters/t1/c", "reader", 9, "forbidden"),
        ("POST /v1/sets/t1/s", "reader", 13, "forbidden"),
        ("PUT /v1/kv/t1/k", "writer", 10**11, "value_too_large"),
        ("POST /v1/counters/t1/c", "writer", 5000, "payload_too_large"),
        ("POST /v1/sets/t1/s", "writer", 10**9, "payload_too_large"),
    ],
)
def test_a_refused_request_gets_no_100_continue(
    tokens: tuple[NodeProcess, str, str], line: str, who: str | None, length: int, code: str
) -> None:
    node, writer, reader = tokens
    token = {"writer": writer, "reader": reader, None: None}[who]
    # The body is never sent: the client waits to be told to go on. exchange() reads until
    # the node closes (within its 10 s timeout, which aiohttp's 10 s linger would pass).
    received = exchange(node, _expecting(line, token, length))
    assert not received.startswith(b"HTTP/1.1 100"), received[:200]
    response = parse(received)
    assert_error(response, code)
    assert response.headers.get("Connection") == "close"
    assert node.request("GET", "/v1/counters/t1/c", headers=_bearer(writer)).json()["value"] == 0
    assert node.request("GET", "/v1/sets/t1/s", headers=_bearer(writer)).json()["members"] == []
    assert "Traceback" not in "".join(node.output)


def test_a_wanted_body_gets_100_continue_and_the_connection_stays_open(
    tokens: tuple[NodeProcess, str, str],
) -> None:
    node, writer, _ = tokens
    with socket.create_connection(address(node), timeout=10) as sock:
        sock.sendall(_expecting("POST /v1/counters/t1/c", writer, 9))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b'{"add":2}')
        answer = b""
        while b"}" not in answer:
            answer += sock.recv(65536)
        assert parse(answer).status == 200
        assert parse(answer).headers.get("Connection") != "close"
        # Kept alive: the next request on the connection is served.
        sock.sendall(
            f"GET /v1/counters/t1/c HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {writer}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert parse(answer).json()["value"] == 2


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
