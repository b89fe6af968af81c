"""Memory bounds of HTTP requests, measured on real ``edgekv serve`` processes.

Each test sends a request that used to multiply memory or stall the event
loop (issue 14, defects 5 and 8), samples the node's RSS while it is served,
and checks that a small GET from another client is answered meanwhile. The
bounds asserted are the ones docs/api.md documents ("Bounded resources"),
with room for the allocator.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from edgekv_client import Client
from testkit.processes import NodeProcess
from testkit.rawhttp import address
from testkit.resources import watched
from testkit.responses import Response, assert_error

MIB = 1024 * 1024
VALUE_BYTES = 25 * MIB
BIG_NAMES = [f"big{i}" for i in range(4)]


def chunked(node: NodeProcess, method: str, path: str, chunks: Iterator[bytes]) -> Response:
    """Send a body without Content-Length (chunked transfer encoding)."""
    conn = http.client.HTTPConnection(*address(node), timeout=120)
    try:
        conn.request(method, path, body=chunks, encode_chunked=True)
        answer = conn.getresponse()
        return Response(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        conn.close()


def mib_chunks(total_mib: int, byte: bytes = b"x") -> Iterator[bytes]:
    for _ in range(total_mib):
        yield byte * MIB


@pytest.fixture(scope="module")
def big_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with default limits holding four 25 MiB values and a small one to probe."""
    node = NodeProcess(tmp_path_factory.mktemp("bounds")).start()
    assert node.request("PUT", "/v1/kv/probe/small", body=b"s").status == 200
    for index, name in enumerate(BIG_NAMES):
        value = bytes([index]) * VALUE_BYTES
        assert node.request("PUT", f"/v1/kv/big/{name}", body=value, timeout=120).status == 200
    yield node
    node.kill()


# -- defect 5: get-many multiplies memory -------------------------------------------


def test_get_many_of_100_large_values_holds_one_budget(big_node: NodeProcess) -> None:
    """100 names of 25 MiB values (main: 3 GB, the loop stalled 14 s): the answer inlines
    what fits in max_get_many_bytes (25 MiB) and marks the rest."""
    names = [BIG_NAMES[i % 4] for i in range(100)]
    answer, watch = watched(
        big_node,
        lambda: big_node.request("POST", "/v1/kv/big/_get", json_body={"keys": names}, timeout=120),
    )
    assert answer.status == 200, answer.body[:300]
    entries = answer.json()["entries"]
    assert list(entries) == BIG_NAMES
    assert base64.b64decode(entries["big0"]["value"]) == bytes([0]) * VALUE_BYTES
    for name in BIG_NAMES[1:]:
        assert entries[name] == {"value": None, "value_bytes": VALUE_BYTES}
    # The 25 MiB value read, its base64 (33 MiB), about one 1 MiB slice in flight.
    assert watch.growth < 100 * MIB, watch.growth / MIB


def test_get_of_a_25_mib_value_holds_about_one_copy(big_node: NodeProcess) -> None:
    answer, watch = watched(big_node, lambda: big_node.request("GET", "/v1/kv/big/big3"))
    assert answer.status == 200
    assert answer.body == bytes([3]) * VALUE_BYTES
    assert watch.growth < 2 * VALUE_BYTES, watch.growth / MIB


def test_client_fetches_values_left_out_of_the_answer(start_node: Any) -> None:
    node = start_node("budget", ["--max-get-many-bytes", "1000"])
    for name, size in (("a", 600), ("b", 600), ("c", 300)):
        assert node.request("PUT", f"/v1/kv/n/{name}", body=name.encode() * size).status == 200
    answer = node.request("POST", "/v1/kv/n/_get", json_body={"keys": ["a", "b", "c", "zz"]})
    entries = answer.json()["entries"]
    assert entries["b"] == {"value": None, "value_bytes": 600}
    assert entries["a"]["value"] == base64.b64encode(b"a" * 600).decode()
    assert entries["c"]["value"] == base64.b64encode(b"c" * 300).decode()  # fits what a left
    assert entries["zz"] is None
    with Client(node.url) as client:
        found = client.get_many("n", ["a", "b", "c", "zz"])
    assert {name: entry.value if entry else None for name, entry in found.items()} == {
        "a": b"a" * 600,
        "b": b"b" * 600,
        "c": b"c" * 300,
        "zz": None,
    }


# -- defect 8: bodies parsed before limits are checked --------------------------------


def test_86_mib_document_is_refused_before_reading(big_node: NodeProcess) -> None:
    """main: parsed for seconds at about 1 GB RSS, then 413."""
    document = json.dumps({f"f{i:07d}": "v" * 90 for i in range(860_000)}).encode()
    assert len(document) > 86 * MIB
    answer, watch = watched(
        big_node, lambda: big_node.request("PUT", "/v1/docs/c/d", body=document, timeout=120)
    )
    assert_error(answer, "document_too_large")
    assert watch.growth < 16 * MIB, watch.growth / MIB
    assert_error(big_node.request("GET", "/v1/docs/c/d"), "not_found")


def test_chunked_86_mib_document_is_cut_at_its_limit(big_node: NodeProcess) -> None:
    answer, watch = watched(
        big_node, lambda: chunked(big_node, "PUT", "/v1/docs/c/e", mib_chunks(86, b" "))
    )
    assert_error(answer, "document_too_large")
    assert watch.growth < 32 * MIB, watch.growth / MIB


def test_get_many_with_86_mib_junk_field_is_refused(big_node: NodeProcess) -> None:
    """main: read and parsed, then answered 200."""
    body = json.dumps({"keys": ["big0"], "junk": "j" * (86 * MIB)}).encode()
    answer, watch = watched(
        big_node, lambda: big_node.request("POST", "/v1/kv/big/_get", body=body, timeout=120)
    )
    assert_error(answer, "payload_too_large")
    assert watch.growth < 16 * MIB, watch.growth / MIB
    cut = chunked(big_node, "POST", "/v1/kv/big/_get", mib_chunks(86))
    assert_error(cut, "payload_too_large")


def test_chunked_value_over_the_limit_reads_no_more_than_the_limit(
    big_node: NodeProcess,
) -> None:
    """main read a chunked body up to max_request_bytes (100 MiB) before its 413."""
    answer, watch = watched(
        big_node, lambda: chunked(big_node, "PUT", "/v1/kv/c/k", mib_chunks(90))
    )
    assert_error(answer, "value_too_large")
    assert watch.growth < 2 * VALUE_BYTES + 16 * MIB, watch.growth / MIB
    assert_error(big_node.request("GET", "/v1/kv/c/k"), "not_found")


def test_concurrent_large_puts_hold_a_few_bodies_each(big_node: NodeProcess) -> None:
    statuses: list[int] = []

    def put_four() -> None:
        def put(index: int) -> None:
            path = f"/v1/kv/conc/p{index}"
            body = bytes([index]) * VALUE_BYTES
            statuses.append(big_node.request("PUT", path, body=body, timeout=120).status)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    _, watch = watched(big_node, put_four)
    assert statuses == [200] * 4
    # Per PUT: the body being read, its bytes, and SQLite's copy while writing.
    assert watch.growth < 4 * 3 * VALUE_BYTES, watch.growth / MIB


def test_bulk_of_93_mib_is_parsed_while_others_are_served(big_node: NodeProcess) -> None:
    """The largest body a node takes (max_request_bytes): parsed in steps on a thread."""
    value = base64.b64encode(b"b" * 7 * MIB).decode()
    operations = [{"op": "put", "key": f"b{i}", "value": value} for i in range(10)]
    body = json.dumps({"operations": operations}).encode()
    answer, watch = watched(
        big_node, lambda: big_node.request("POST", "/v1/kv/bulk/_bulk", body=body, timeout=120)
    )
    assert answer.status == 200, answer.body[:300]
    assert big_node.request("GET", "/v1/kv/bulk/b9").body == b"b" * 7 * MIB
    # The body, its text while parsed, the base64 strings and the decoded values.
    assert watch.growth < 4 * len(body), watch.growth / MIB


# -- unknown fields are refused on every JSON route ------------------------------------


def _names_field(answer: Response, field: str) -> None:
    assert_error(answer, "invalid_json")
    assert json.dumps(field) in answer.json()["error"]["message"], answer.body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/kv/u/_get", {"keys": ["a"], "junk": 1}),
        ("/v1/kv/u/_bulk", {"operations": [{"op": "delete", "key": "a"}], "junk": 1}),
        ("/v1/kv/u/_bulk", {"operations": [{"op": "delete", "key": "a", "junk": 1}]}),
        ("/v1/docs/u/_indexes", {"field": "a", "junk": 1}),
    ],
    ids=["get-many", "bulk", "bulk-operation", "index"],
)
def test_unknown_field_is_named(big_node: NodeProcess, path: str, body: Any) -> None:
    _names_field(big_node.request("POST", path, json_body=body), "junk")
    assert big_node.request("GET", "/v1/kv/u").json()["keys"] == []
    assert big_node.request("GET", "/v1/docs/u/_indexes").json()["indexes"] == []


def test_cluster_remove_refuses_a_body(start_node: Any) -> None:
    node = start_node("cluster", ["--cluster-secret", "s3cret-for-bounds"])
    path = "/v1/cluster/members/00000000000000ab"
    _names_field(node.request("DELETE", path, json_body={"junk": 1}), "junk")
    assert_error(node.request("DELETE", path), "not_found")  # no body: the route as before
