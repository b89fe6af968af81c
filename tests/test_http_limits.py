"""Integration tests of the HTTP API's limits against real ``edgekv serve`` processes.

Namespace syntax, key length in UTF-8 bytes, value size (a node started with
``--max-value-bytes 1000``, and the default 25 MiB on the shared node), metadata
size and request size. After every rejected write, nothing was written.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from testkit.processes import NodeProcess
from testkit.rawhttp import address
from testkit.responses import Response, assert_error

MIB = 1024 * 1024
SMALL_VALUE_LIMIT = 1000
SMALL_REQUEST_LIMIT = 8192


def kv_path(ns: str, key: str) -> str:
    return f"/v1/kv/{ns}/{quote(key, safe='/')}"


def listed(node: NodeProcess, ns: str) -> list[str]:
    response = node.request("GET", f"/v1/kv/{ns}")
    assert response.status == 200, response.body
    return [entry["name"] for entry in response.json()["keys"]]


def bulk(node: NodeProcess, ns: str, operations: list[dict[str, Any]]) -> Response:
    return node.request("POST", f"/v1/kv/{ns}/_bulk", json_body={"operations": operations})


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with a 1000-byte value limit and an 8 KiB request limit."""
    node = NodeProcess(
        tmp_path_factory.mktemp("small"),
        [
            "--max-value-bytes",
            str(SMALL_VALUE_LIMIT),
            "--max-request-bytes",
            str(SMALL_REQUEST_LIMIT),
        ],
    ).start()
    yield node
    node.kill()


# -- namespaces -------------------------------------------------------------------

BAD_NAMESPACES = ["a" * 65, "a%20b", "%C3%BC", "a*b", "a:b", "a%2Fb", "name%00", "%E2%82%AC"]


@pytest.mark.parametrize(
    "raw_ns",
    BAD_NAMESPACES,
    ids=["65-chars", "space", "u-umlaut", "star", "colon", "slash", "nul", "euro"],
)
def test_invalid_namespace_on_every_route(shared_node: NodeProcess, raw_ns: str) -> None:
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/kv/{raw_ns}", None),
        ("GET", f"/v1/kv/{raw_ns}/k", None),
        ("PUT", f"/v1/kv/{raw_ns}/k", b"v"),
        ("DELETE", f"/v1/kv/{raw_ns}/k", None),
        (
            "POST",
            f"/v1/kv/{raw_ns}/_bulk",
            json.dumps({"operations": [{"op": "put", "key": "k", "value": ""}]}),
        ),
        ("POST", f"/v1/kv/{raw_ns}/_get", json.dumps({"keys": ["k"]})),
    ]
    for method, path, body in requests:
        assert_error(shared_node.request(method, path, body=body), "invalid_namespace")


@pytest.mark.parametrize("namespace", ["a" * 64, "A-Z_a.z-09", "x", "..a", "-"])
def test_valid_namespaces(shared_node: NodeProcess, namespace: str) -> None:
    key_path = kv_path(namespace, "limits-ns-probe")
    assert shared_node.request("PUT", key_path, body=b"ok").status == 200
    assert shared_node.request("GET", key_path).body == b"ok"
    assert "limits-ns-probe" in listed(shared_node, namespace)
    assert shared_node.request("DELETE", key_path).status == 200


# -- keys -----------------------------------------------------------------------

KEYS_512 = {
    "ascii": "k" * 512,
    "two-byte": "é" * 256,
    "three-byte": "€" * 170 + "ab",
    "four-byte": "𝄞" * 128,
    "mixed": "a" + "𝄞" * 126 + "€" + "/bcd",
}
KEYS_513 = {
    "ascii": "k" * 513,
    "two-byte": "é" * 256 + "a",
    "three-byte": "€" * 171,
    "four-byte": "𝄞" * 128 + "a",
    "mixed": "ab" + "𝄞" * 126 + "€" + "/bcd",
    "few-chars-many-bytes": "é" * 300,  # 300 characters, 600 bytes
}


@pytest.mark.parametrize("key", list(KEYS_512.values()), ids=list(KEYS_512))
def test_key_of_512_bytes_works(shared_node: NodeProcess, ns: str, key: str) -> None:
    assert len(key.encode("utf-8")) == 512
    assert shared_node.request("PUT", kv_path(ns, key), body=b"v").status == 200
    assert shared_node.request("GET", kv_path(ns, key)).body == b"v"
    assert listed(shared_node, ns) == [key]
    many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": [key]})
    assert many.json()["entries"][key]["value"] == b64(b"v")
    assert bulk(shared_node, ns, [{"op": "put", "key": key, "value": b64(b"w")}]).status == 200
    assert shared_node.request("GET", kv_path(ns, key)).body == b"w"
    assert shared_node.request("DELETE", kv_path(ns, key)).status == 200
    assert listed(shared_node, ns) == []


@pytest.mark.parametrize("key", list(KEYS_513.values()), ids=list(KEYS_513))
def test_key_over_512_bytes_is_rejected(shared_node: NodeProcess, ns: str, key: str) -> None:
    assert len(key.encode("utf-8")) > 512
    path = kv_path(ns, key)
    assert_error(shared_node.request("PUT", path, body=b"v"), "key_too_long")
    assert_error(shared_node.request("GET", path), "key_too_long")
    assert_error(shared_node.request("DELETE", path), "key_too_long")
    op = {"op": "put", "key": key, "value": b64(b"v")}
    assert_error(bulk(shared_node, ns, [op]), "key_too_long")
    many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": [key]})
    assert_error(many, "key_too_long")
    assert listed(shared_node, ns) == []


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_keys_are_invalid(shared_node: NodeProcess, ns: str, key: str) -> None:
    encoded = key.replace(".", "%2E")
    assert_error(shared_node.request("PUT", f"/v1/kv/{ns}/{encoded}", body=b"v"), "invalid_key")
    assert_error(bulk(shared_node, ns, [{"op": "put", "key": key, "value": ""}]), "invalid_key")
    assert listed(shared_node, ns) == []


# -- values ---------------------------------------------------------------------


def test_value_at_limit_is_accepted(small_node: NodeProcess, ns: str) -> None:
    value = bytes(range(250)) * 4
    assert len(value) == SMALL_VALUE_LIMIT
    assert small_node.request("PUT", kv_path(ns, "k"), body=value).status == 200
    assert small_node.request("GET", kv_path(ns, "k")).body == value
    op = {"op": "put", "key": "b", "value": b64(value)}
    assert bulk(small_node, ns, [op]).status == 200
    assert small_node.request("GET", kv_path(ns, "b")).body == value


@pytest.mark.parametrize("size", [SMALL_VALUE_LIMIT + 1, 5000, 100_000])
def test_value_over_limit_writes_nothing(small_node: NodeProcess, ns: str, size: int) -> None:
    response = small_node.request("PUT", kv_path(ns, "k"), body=b"x" * size)
    assert_error(response, "value_too_large")
    assert_error(small_node.request("GET", kv_path(ns, "k")), "not_found")
    assert listed(small_node, ns) == []


def test_rejected_overwrite_keeps_the_old_value(small_node: NodeProcess, ns: str) -> None:
    assert small_node.request("PUT", kv_path(ns, "k"), body=b"old").status == 200
    response = small_node.request(
        "PUT",
        kv_path(ns, "k"),
        body=b"n" * (SMALL_VALUE_LIMIT + 1),
        headers={"EdgeKV-Metadata": '{"new": true}'},
    )
    assert_error(response, "value_too_large")
    got = small_node.request("GET", kv_path(ns, "k"))
    assert got.body == b"old"
    assert "EdgeKV-Metadata" not in got.headers


def test_chunked_value_over_limit_writes_nothing(small_node: NodeProcess, ns: str) -> None:
    """Without a Content-Length the limit still holds."""
    conn = http.client.HTTPConnection(*address(small_node), timeout=30)
    try:
        chunks = iter([b"x" * 600, b"y" * 401])
        conn.request("PUT", kv_path(ns, "chunked"), body=chunks, encode_chunked=True)
        answer = conn.getresponse()
        response = Response(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        conn.close()
    assert_error(response, "value_too_large")
    assert listed(small_node, ns) == []


def test_bulk_value_over_limit_applies_nothing(small_node: NodeProcess, ns: str) -> None:
    ops = [
        {"op": "put", "key": "fine", "value": b64(b"f" * SMALL_VALUE_LIMIT)},
        {"op": "put", "key": "huge", "value": b64(b"h" * (SMALL_VALUE_LIMIT + 1))},
    ]
    assert_error(bulk(small_node, ns, ops), "value_too_large")
    assert listed(small_node, ns) == []


def test_request_over_max_request_bytes(small_node: NodeProcess, ns: str) -> None:
    ops = [{"op": "put", "key": f"k{i}", "value": b64(b"v" * 500)} for i in range(20)]
    assert len(json.dumps({"operations": ops})) > SMALL_REQUEST_LIMIT
    assert_error(bulk(small_node, ns, ops), "payload_too_large")
    assert listed(small_node, ns) == []


def test_default_value_limit_is_25_mib(shared_node: NodeProcess, ns: str) -> None:
    value = bytes(range(256)) * (25 * MIB // 256)
    assert len(value) == 25 * MIB
    assert shared_node.request("PUT", kv_path(ns, "big"), body=value).status == 200
    got = shared_node.request("GET", kv_path(ns, "big"))
    assert got.status == 200
    assert len(got.body) == len(value)
    assert hashlib.sha256(got.body).digest() == hashlib.sha256(value).digest()
    del got

    too_big = value + b"!"
    assert_error(shared_node.request("PUT", kv_path(ns, "bigger"), body=too_big), "value_too_large")
    assert_error(shared_node.request("GET", kv_path(ns, "bigger")), "not_found")
    # A rejected overwrite leaves the stored value alone.
    assert_error(shared_node.request("PUT", kv_path(ns, "big"), body=too_big), "value_too_large")
    assert listed(shared_node, ns) == ["big"]
    assert shared_node.request("GET", kv_path(ns, "big")).headers["Content-Length"] == str(25 * MIB)


# -- metadata -------------------------------------------------------------------


def _metadata_of(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON is exactly ``size`` bytes."""
    metadata = {"a": "x" * (size - len('{"a":""}'))}
    assert len(json.dumps(metadata, separators=(",", ":"))) == size
    return metadata


def test_metadata_of_1_kib_is_accepted(shared_node: NodeProcess, ns: str) -> None:
    metadata = _metadata_of(1024)
    header = json.dumps(metadata, separators=(",", ":"))
    response = shared_node.request(
        "PUT", kv_path(ns, "k"), body=b"v", headers={"EdgeKV-Metadata": header}
    )
    assert response.status == 200
    got = shared_node.request("GET", kv_path(ns, "k"))
    assert json.loads(got.headers["EdgeKV-Metadata"]) == metadata
    op = {"op": "put", "key": "b", "value": "", "metadata": metadata}
    assert bulk(shared_node, ns, [op]).status == 200


@pytest.mark.parametrize("size", [1025, 4000])
def test_metadata_over_1_kib_writes_nothing(shared_node: NodeProcess, ns: str, size: int) -> None:
    header = json.dumps(_metadata_of(size), separators=(",", ":"))
    response = shared_node.request(
        "PUT", kv_path(ns, "k"), body=b"v", headers={"EdgeKV-Metadata": header}
    )
    assert_error(response, "metadata_too_large")
    op = {"op": "put", "key": "b", "value": "", "metadata": _metadata_of(size)}
    assert_error(bulk(shared_node, ns, [op]), "metadata_too_large")
    assert listed(shared_node, ns) == []


def test_metadata_limit_counts_escaped_bytes(shared_node: NodeProcess, ns: str) -> None:
    """Non-ASCII metadata is measured as JSON bytes, not characters."""
    metadata = {"a": "é" * 200}  # 200 characters; 1208 bytes of escaped JSON
    response = shared_node.request(
        "PUT", kv_path(ns, "k"), body=b"v", headers={"EdgeKV-Metadata": json.dumps(metadata)}
    )
    assert_error(response, "metadata_too_large")
    assert listed(shared_node, ns) == []


def test_huge_metadata_header_is_metadata_too_large(shared_node: NodeProcess, ns: str) -> None:
    """Metadata far over the limit (9 KiB) gets the same documented answer as 1025 bytes."""
    header = json.dumps(_metadata_of(9 * 1024), separators=(",", ":"))
    response = shared_node.request(
        "PUT", kv_path(ns, "k"), body=b"v", headers={"EdgeKV-Metadata": header}
    )
    assert_error(response, "metadata_too_large")
    assert listed(shared_node, ns) == []


def test_huge_key_is_key_too_long(shared_node: NodeProcess, ns: str) -> None:
    """A key far over the limit (9,000 bytes) gets the same documented answer as 513 bytes."""
    path = kv_path(ns, "k" * 9000)
    assert_error(shared_node.request("PUT", path, body=b"v"), "key_too_long")
    assert_error(shared_node.request("GET", path), "key_too_long")
    assert listed(shared_node, ns) == []
