"""Request bodies: the stepped JSON parser of large bodies agrees with ``json.loads``, errors
included; and against a real node, bodies that break off or stop arriving cost nothing."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv.http.bodies import json_object_in_steps
from edgekv.http.errors import ApiError
from edgekv.http.validation import json_object
from testkit.processes import NodeProcess
from testkit.rawhttp import address, parse
from testkit.responses import assert_error
from testkit.waiting import wait_for

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_objects = st.dictionaries(st.text(), _values | st.lists(_values, max_size=6), max_size=6)
_layouts = st.sampled_from(
    [{}, {"separators": (",", ":")}, {"indent": 2}, {"indent": "\t", "ensure_ascii": False}]
)


@given(_objects, _layouts)
def test_same_object_as_json_loads(document: dict[str, Any], layout: dict[str, Any]) -> None:
    body = json.dumps(document, **layout).encode()
    assert json_object_in_steps(body) == json.loads(body)


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return ("ok", parse(body))
    except ApiError as error:
        return ("error", error.code, error.message)


@given(_objects, st.integers(min_value=0, max_value=400), st.binary(max_size=3))
def test_damaged_bodies_get_the_same_answer(
    document: dict[str, Any], cut: int, junk: bytes
) -> None:
    body = json.dumps({"operations": [document]}).encode()
    damaged = body[:cut] + junk + body[cut + len(junk) :]
    assert _outcome(json_object_in_steps, damaged) == _outcome(json_object, damaged)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"1",
        b'{"a": NaN}',
        b'{"a": 1} x',
        b'{"a" 1}',
        b"{1: 2}",
        b'{"a": [1 2]}',
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": [1], }',
        '{"a": "é"}'.encode("utf-16"),
        b'{"a": 1, "a": 2}',
        b'{"a": [1], "b": 2, "a": [3]}',
        b'{"a": [{"x": 1, "x": 1}]}',
        b'{"a": {"x": 1, "x": 1}}',
    ],
)
def test_odd_bodies_get_the_same_answer(body: bytes) -> None:
    assert _outcome(json_object_in_steps, body) == _outcome(json_object, body)


# -- bodies that break off or stop arriving, against a real node ---------------------------

BODY_TIMEOUT = 1.0

# (route label in metrics, request line, a body that would be accepted whole)
BODY_ROUTES: list[tuple[str, bytes, bytes]] = [
    ("/v1/kv/{ns}/{key}", b"PUT /v1/kv/cut/k HTTP/1.1", b"0123456789" * 100),
    (
        "/v1/kv/{ns}/_bulk",
        b"POST /v1/kv/cut/_bulk HTTP/1.1",
        b'{"operations": [{"op": "put", "key": "k", "value": "dg=="}]}',
    ),
    ("/v1/docs/{collection}/{id}", b"PUT /v1/docs/cut/k HTTP/1.1", b'{"a": 1}'),
    ("/v1/counters/{ns}/{key}", b"POST /v1/counters/cut/k HTTP/1.1", b'{"add": 1}'),
    ("/v1/sets/{ns}/{key}", b"POST /v1/sets/cut/k HTTP/1.1", b'{"add": ["m"]}'),
]


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that waits ``BODY_TIMEOUT`` seconds for a body's next bytes."""
    node = NodeProcess(
        tmp_path_factory.mktemp("bodies"), ["--body-timeout", str(BODY_TIMEOUT)]
    ).start()
    yield node
    node.kill()


def _head(line: bytes, length: int) -> bytes:
    head = line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    return head + b"Content-Length: " + str(length).encode() + b"\r\n\r\n"


def _nothing_written(node: NodeProcess) -> None:
    assert node.request("GET", "/v1/kv/cut").json()["keys"] == []
    assert node.request("GET", "/v1/docs/cut").json()["documents"] == []
    assert node.request("GET", "/v1/counters/cut/k").json()["version"] is None
    assert node.request("GET", "/v1/sets/cut/k").json()["members"] == []


def _requests_counted(node: NodeProcess, status: int) -> dict[str, float]:
    """Route label -> requests answered with ``status``, from ``/metrics``."""
    pattern = re.compile(
        r'^edgekv_http_requests_total\{method="[A-Z]+",route="([^"]+)",status="'
        + str(status)
        + r'"\} (\S+)$',
        re.MULTILINE,
    )
    text = node.request("GET", "/metrics").body.decode()
    return {route: float(count) for route, count in pattern.findall(text)}


def test_a_client_gone_mid_body_is_no_server_error_and_writes_nothing(
    impatient: NodeProcess,
) -> None:
    for _, line, body in BODY_ROUTES:
        with socket.create_connection(address(impatient), timeout=10) as sock:
            sock.sendall(_head(line, len(body) + 1000) + body[:10])
        # closed with the body 10 bytes in
    routes = [route for route, _, _ in BODY_ROUTES]
    wait_for(
        lambda: all(_requests_counted(impatient, 499).get(route) for route in routes),
        10,
        "every cut request counted as the client's (499)",
    )
    assert _requests_counted(impatient, 500) == {}
    log = "".join(impatient.output)
    assert "Traceback" not in log, log[-3000:]
    assert "unhandled" not in log, log[-3000:]
    _nothing_written(impatient)
    assert impatient.request("GET", "/healthz").status == 200


@pytest.mark.parametrize(("route", "line", "body"), BODY_ROUTES, ids=[r[0] for r in BODY_ROUTES])
def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    impatient: NodeProcess, route: str, line: bytes, body: bytes
) -> None:
    with socket.create_connection(address(impatient), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(_head(line, len(body) + 1000) + body[:10])
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):  # until the node closes: bounded by the timeout
            received += chunk
        took = time.monotonic() - started
    response = parse(received)
    assert_error(response, "request_timeout")
    assert response.headers.get("Connection") == "close"
    # Answered after the body timeout, and closed at once (not after aiohttp's 10 s linger).
    assert BODY_TIMEOUT - 0.1 <= took < BODY_TIMEOUT + 5, took
    _nothing_written(impatient)


def test_a_chunked_body_that_stops_arriving_gets_408(impatient: NodeProcess) -> None:
    head = b"PUT /v1/kv/cut/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(address(impatient), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(head + b"5\r\nhello\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert_error(parse(received), "request_timeout")
    _nothing_written(impatient)


def test_a_body_that_keeps_arriving_slowly_is_taken(impatient: NodeProcess) -> None:
    """The timeout is per read, as nginx's client_body_timeout: a slow body is not cut."""
    body = b"slow!"
    pause = BODY_TIMEOUT * 0.4  # the client's pace: the whole body takes 2x the timeout
    with socket.create_connection(address(impatient), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(_head(b"PUT /v1/kv/slow/k HTTP/1.1", len(body)))
        for byte in body:
            time.sleep(pause)
            sock.sendall(bytes([byte]))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert parse(received).status == 200, received[:300]
    assert impatient.request("GET", "/v1/kv/slow/k").body == body
