"""Lone UTF-16 surrogates in JSON text, against real nodes: refused, and nothing else harmed.

A body such as ``{"a":"\\ud800"}`` once reached pycrdt, whose panic passed the
writer's ``except Exception``: the request hung, the writes batched with it
were lost unanswered, every later write failed, and replicas diverged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.cluster import Cluster
from testkit.pg import DSN
from testkit.processes import NodeProcess
from testkit.responses import Response, assert_error
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]

# JSON text as clients send it: the surrogate as an escape (valid JSON grammar, not Unicode).
LONE = [
    rb'{"a":"\ud800"}',
    rb'{"a":{"b":[1,"x\udfff"]}}',
    rb'{"\udc00":1}',
    rb'{"a":{"\ud83d":true}}',
    rb'{"a":"\ud800\u0041"}',  # a high surrogate whose partner is missing
    rb'{"a":"\\\ud800"}',  # an escaped backslash, then the escape
]
TIMEOUT = 10.0  # a hung request fails the test instead of holding it


def _cursor_of(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def module_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the cases that each use their own documents."""
    node = NodeProcess(tmp_path_factory.mktemp("surrogates")).start()
    yield node
    node.kill()


def _request(
    node: NodeProcess, method: str, path: str, body: bytes | None = None, **kw: Any
) -> Response:
    return node.request(method, path, body=body, timeout=TIMEOUT, **kw)


@pytest.mark.parametrize("case", range(len(LONE)))
def test_documents_refuse_lone_surrogates_and_store_nothing(
    module_node: NodeProcess, case: int
) -> None:
    node, body, new, kept = module_node, LONE[case], f"/v1/docs/c/e{case}", f"/v1/docs/c/p{case}"
    assert _request(node, "PUT", kept, b'{"a":"kept"}').status == 200
    assert_error(_request(node, "PUT", new, body), "invalid_unicode")
    assert_error(_request(node, "PATCH", kept, body), "invalid_unicode")
    assert _request(node, "GET", new).status == 404
    assert _request(node, "GET", kept).json()["doc"] == {"a": "kept"}
    # The writer still works.
    assert _request(node, "PATCH", kept, b'{"b":1}').status == 200
    assert _request(node, "GET", kept).json()["doc"] == {"a": "kept", "b": 1}


def test_every_json_route_refuses_lone_surrogates(start_node: StartNode) -> None:
    node = start_node()
    put = rb'{"operations":[{"op":"put","key":"%s","value":"","metadata":%s}]}'
    cases: list[tuple[str, str, bytes | None, dict[str, str], str]] = [
        ("POST", "/v1/kv/ns/_bulk", put % (rb"\ud800", b"null"), {}, "invalid_unicode"),
        ("POST", "/v1/kv/ns/_bulk", put % (b"k", rb'{"m":"\udfff"}'), {}, "invalid_unicode"),
        ("POST", "/v1/kv/ns/_bulk", put % (b"k", rb'{"\ud800":1}'), {}, "invalid_unicode"),
        ("POST", "/v1/kv/ns/_get", rb'{"keys":["\ud800"]}', {}, "invalid_unicode"),
        ("PUT", "/v1/kv/ns/k", b"v", {"EdgeKV-Metadata": r'{"a":"\ud800"}'}, "invalid_unicode"),
        ("POST", "/v1/docs/c/_indexes", rb'{"field":"\ud800"}', {}, "invalid_unicode"),
        ("GET", "/v1/docs/c?where=" + quote(r'a=="\ud800"'), None, {}, "invalid_unicode"),
        ("GET", "/v1/docs/c?cursor=" + _cursor_of(rb'["\ud800","x"]'), None, {}, "invalid_cursor"),
        # Raw bytes of an encoded surrogate are no UTF-8: not JSON text at all.
        ("PUT", "/v1/docs/c/e1", b'{"a":"\xed\xa0\x80"}', {}, "invalid_json"),
        ("POST", "/v1/kv/ns/_get", b'{"keys":["\xed\xa0\x80"]}', {}, "invalid_json"),
    ]
    for method, path, body, headers, code in cases:
        assert_error(_request(node, method, path, body, headers=headers), code)
    assert _request(node, "GET", "/v1/kv/ns/k").status == 404
    assert _request(node, "GET", "/v1/docs/c/_indexes").json() == {"indexes": []}
    assert _request(node, "PUT", "/v1/kv/ns/k", b"v").status == 200


def test_transactions_refuse_lone_surrogates(start_node: StartNode, pg_schema: str) -> None:
    node = start_node(
        "strong", ["--upstream", DSN, "--upstream-schema", pg_schema, "--strong-namespaces", "bank"]
    )
    wait_for(
        lambda: _request(node, "GET", "/v1/cluster/status").json()["upstream"]["state"] == "up",
        what="upstream connected",
    )
    body = rb'{"operations":[{"op":"put","key":"k","value":"","metadata":{"m":"\ud800"}}]}'
    assert_error(_request(node, "POST", "/v1/kv/bank/_txn", body), "invalid_unicode")
    assert _request(node, "GET", "/v1/kv/bank/k").status == 404


def test_refused_writes_harm_no_concurrent_write_and_replicas_converge(tmp_path: Path) -> None:
    """Bad bodies among many clients' good writes: every good one is answered and kept."""
    cluster = Cluster(tmp_path, n=2)
    try:
        a, b = cluster.nodes
        assert _request(a, "PUT", "/v1/docs/c/e1", b'{"start":0}').status == 200

        def client(i: int) -> list[tuple[int, str]]:
            answers = []
            for j in range(5):
                bad = LONE[(i + j) % len(LONE)]
                method = "PUT" if j % 2 else "PATCH"
                answer = _request(a, method, "/v1/docs/c/e1", bad)
                answers.append((answer.status, answer.error_code))
                good = json.dumps({f"f{i}_{j}": j}).encode()
                answer = _request(a, "PATCH", "/v1/docs/c/e1", good)
                answers.append((answer.status, "ok" if answer.status == 200 else answer.error_code))
                answer = _request(a, "PUT", f"/v1/kv/ns/k{i}_{j}", b"v")
                answers.append((answer.status, "ok" if answer.status == 200 else answer.error_code))
            return answers

        with ThreadPoolExecutor(8) as pool:
            results = [answer for answers in pool.map(client, range(8)) for answer in answers]
        assert set(results) == {(400, "invalid_unicode"), (200, "ok")}, set(results)
        expected = {"start": 0, **{f"f{i}_{j}": j for i in range(8) for j in range(5)}}
        assert _request(a, "GET", "/v1/docs/c/e1").json()["doc"] == expected
        assert all(
            _request(a, "GET", f"/v1/kv/ns/k{i}_{j}").body == b"v"
            for i in range(8)
            for j in range(5)
        )
        # Edits at both replicas after the refusals: they converge to one document.
        assert _request(a, "PATCH", "/v1/docs/c/e1", b'{"start":1}').status == 200
        assert _request(b, "PATCH", "/v1/docs/c/e1", b'{"from_b":true}').status == 200

        def same_document() -> bool:
            docs = [_request(node, "GET", "/v1/docs/c/e1") for node in (a, b)]
            return all(d.status == 200 for d in docs) and docs[0].json() == docs[1].json()

        wait_for(same_document, what="both replicas hold the same document")
        assert _request(b, "GET", "/v1/docs/c/e1").json()["doc"] == {
            **expected,
            "start": 1,
            "from_b": True,
        }
    finally:
        cluster.close()


_JSON_LEAF = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: hypothesis reads the extend function's
    # source to check it recurses, and a lambda's source cannot always be read.
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


_JSON = st.recursive(_JSON_LEAF, _containers, max_leaves=8)


@pytest.mark.slow
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.dictionaries(st.text(max_size=4), _JSON, min_size=1, max_size=3),
    surrogate=st.integers(0xD800, 0xDFFF),
    where=st.integers(0, 10_000),
    in_key=st.booleans(),
)
def test_any_document_with_a_lone_surrogate_is_refused_and_not_stored(
    module_node: NodeProcess, document: dict[str, Any], surrogate: int, where: int, in_key: bool
) -> None:
    lone = chr(surrogate)
    if in_key:
        poisoned: Any = {lone + "k": document}
    else:
        poisoned = {**document, "p": [document, "x" + lone]}
    text = json.dumps(poisoned)  # ASCII, the surrogate as an escape
    assert f"\\u{surrogate:04x}" in text
    doc_id = f"h{where}"
    answer = _request(module_node, "PUT", f"/v1/docs/c/{doc_id}", text.encode())
    assert_error(answer, "invalid_unicode")
    assert _request(module_node, "GET", f"/v1/docs/c/{doc_id}").status == 404
