"""Connections, origins and scopes at the edge of a real node (:mod:`edgekv.http.protocol`).

Header and idle timeouts against a socket that drips its request head or sends
nothing; protected mode's Host/Origin check next to a node with tokens, which
serves any origin that carries a token; index declaration bounded and admin only;
the client refusing the empty key before sending.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv.auth import token_toml
from edgekv_client import Client
from edgekv_client.errors import InvalidRequest
from testkit.processes import NodeProcess
from testkit.rawhttp import address, exchange, parse
from testkit.responses import Response, assert_error

HEADER_TIMEOUT = 1.5
IDLE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with short header and idle timeouts."""
    node = NodeProcess(
        tmp_path_factory.mktemp("impatient"),
        ["--header-timeout", str(HEADER_TIMEOUT), "--idle-timeout", str(IDLE_TIMEOUT)],
    ).start()
    yield node
    node.kill()


def _closed_by_node(sock: socket.socket) -> bool:
    """Whether the node has closed ``sock`` (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_a_connection_dripping_its_headers_is_closed_after_header_timeout(
    impatient: NodeProcess,
) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60
    with socket.create_connection(address(impatient)) as sock:
        started = time.monotonic()
        for byte in head:  # one byte every 0.25 s: 15 s for the head, if the node waited
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if _closed_by_node(sock):
                break
            time.sleep(0.25)  # the client's pace, not synchronisation
        took = time.monotonic() - started
    # Closed by the header timeout, well before the idle timeout or the end of the head.
    assert HEADER_TIMEOUT - 0.1 <= took < IDLE_TIMEOUT, took


@pytest.mark.slow
def test_a_connection_that_sends_nothing_is_closed_after_idle_timeout(
    impatient: NodeProcess,
) -> None:
    with socket.create_connection(address(impatient), timeout=IDLE_TIMEOUT * 4) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # returns when the node closes it
        took = time.monotonic() - started
    assert IDLE_TIMEOUT - 0.1 <= took < IDLE_TIMEOUT + 2, took


@pytest.mark.slow
def test_a_keep_alive_connection_is_closed_after_idle_timeout_but_serves_until_then(
    impatient: NodeProcess,
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(address(impatient), timeout=IDLE_TIMEOUT * 4) as sock:
        for _ in range(2):
            sock.sendall(request[:10])  # a head in two parts, well within header_timeout
            time.sleep(0.2)  # the client's pace
            sock.sendall(request[10:])
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert sock.recv(1) == b""
        took = time.monotonic() - started
    assert IDLE_TIMEOUT - 0.1 <= took < IDLE_TIMEOUT + 2, took


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, str, str]:
    """A config file with an admin token and a token that writes collection ``c``."""
    admin, writer = "ekv_" + "a" * 43, "ekv_" + "w" * 43
    config = tmp_path / "edgekv.toml"
    config.write_text(
        token_toml("admin", admin, ["admin"]) + token_toml("writer", writer, ["write:c", "read:c"])
    )
    return config, admin, writer


def test_with_tokens_a_foreign_origin_and_host_are_served_to_a_token(
    start_node: Callable[..., NodeProcess], tokens: tuple[Path, str, str]
) -> None:
    config, _, writer = tokens
    node = start_node("tokens", ["--config", str(config)])
    data = (
        b"PUT /v1/kv/c/k HTTP/1.1\r\nHost: edge.example:443\r\nOrigin: https://app.example\r\n"
        b"Authorization: Bearer " + writer.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: 1\r\n\r\nv"
    )
    assert parse(exchange(node, data)).status == 200


def test_protected_mode_serves_local_pages_and_tools(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("local")
    for origin in ("http://localhost:3000", "http://127.0.0.1:8787", "http://[::1]"):
        answer = node.request("PUT", "/v1/kv/n/k", body=b"v", headers={"Origin": origin})
        assert answer.status == 200, (origin, answer.body)
    answer = node.request("GET", "/v1/kv/n/k", headers={"Host": "localhost:1"})
    assert answer.body == b"v"
    for origin in ("null", "https://evil.example", "http://localhost.evil.example"):
        refused = node.request("PUT", "/v1/kv/n/k", body=b"w", headers={"Origin": origin})
        assert_error(refused, "untrusted_origin")
    assert node.request("GET", "/v1/kv/n/k").body == b"v"


def test_declaring_an_index_needs_admin_and_a_collection_has_a_bounded_number(
    start_node: Callable[..., NodeProcess], tokens: tuple[Path, str, str]
) -> None:
    config, admin, writer = tokens
    node = start_node("indexes", ["--config", str(config), "--max-indexes-per-collection", "2"])

    def declare(token: str, field: str) -> Response:
        return node.request(
            "POST",
            "/v1/docs/c/_indexes",
            json_body={"field": field},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert_error(declare(writer, "a"), "forbidden")
    assert declare(admin, "a").status == 201
    assert declare(admin, "b").status == 201
    assert declare(admin, "a").status == 200  # an existing one is not one more
    assert_error(declare(admin, "c"), "too_many_indexes")
    listed = node.request(
        "GET", "/v1/docs/c/_indexes", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    assert [index["field"] for index in listed["indexes"]] == ["a", "b"]


def test_the_client_refuses_the_empty_key_before_sending(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node("client")
    with Client(node.url) as client:
        for key in ("", ".", ".."):
            for call in (client.get, client.delete):
                with pytest.raises(InvalidRequest) as raised:
                    call("n", key)
                assert raised.value.code == "invalid_key"
            with pytest.raises(InvalidRequest):
                client.put("n", key, b"v")
