"""The document API of one real node: reads, writes, queries, indexes, limits, bad input."""

from __future__ import annotations

import itertools
import json
import sqlite3
from typing import Any
from urllib.parse import quote

import pytest

from edgekv.documents import query
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.waiting import wait_for

_collections = itertools.count()


@pytest.fixture
def coll() -> str:
    return f"c{next(_collections)}"


def _put(node: NodeProcess, path: str, body: Any) -> Any:
    answer = node.request("PUT", f"/v1/docs/{path}", json_body=body)
    assert answer.status == 200, answer.body
    return answer.json()


def test_put_patch_get_delete(shared_node: NodeProcess, coll: str) -> None:
    written = _put(shared_node, f"{coll}/a", {"name": "ann", "big": 2**62, "f": 0.5})
    answer = shared_node.request(
        "PATCH",
        f"/v1/docs/{coll}/a",
        body=b'{"name": null, "address": {"city": "Oslo"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status == 200
    got = shared_node.request("GET", f"/v1/docs/{coll}/a")
    assert got.json()["doc"] == {"big": 2**62, "f": 0.5, "address": {"city": "Oslo"}}
    assert got.json()["version"] == answer.json()["version"] != written["version"]
    assert got.headers["ETag"] == f'"{got.json()["version"]}"'
    assert shared_node.request("DELETE", f"/v1/docs/{coll}/a").status == 200
    assert_error(shared_node.request("GET", f"/v1/docs/{coll}/a"), "not_found")
    assert shared_node.request("DELETE", f"/v1/docs/{coll}/never").status == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("PUT", "x/d", b"{not json", "invalid_json"),
        ("PUT", "x/d", b"[1, 2]", "invalid_json"),
        ("PUT", "x/d", b'{"n": NaN}', "invalid_json"),
        ("PUT", "x/d", b'{"n": 1e400}', "number_out_of_range"),
        ("PUT", "x/d", b'{"n": 9223372036854775807}', "number_out_of_range"),
        ("PUT", "x/d", b'{"a":' * 33 + b"1" + b"}" * 33, "document_too_deep"),
        ("PUT", "x/d", b'{"a":' * 3000 + b"1" + b"}" * 3000, "document_too_deep"),
        ("PUT", "x/d", json.dumps({"s": "x" * (1024 * 1024)}).encode(), "document_too_large"),
        ("PATCH", "x/d", b'"text"', "invalid_patch"),
        ("PATCH", "x/absent", b'{"a": 1}', "not_found"),
        ("POST", "x/d/yupdate", b"\x01\x02garbage", "invalid_yupdate"),
        ("POST", "x/d/yupdate", b"", "invalid_yupdate"),
        ("PUT", "x/_reserved", b"{}", "invalid_document_id"),
        ("PUT", "bad%20name/d", b"{}", "invalid_namespace"),
        ("GET", "x?where=age~~3", None, "invalid_parameter"),
        ("GET", "x?order_by=a;drop", None, "invalid_parameter"),
        ("GET", "x?cursor=!!", None, "invalid_cursor"),
        ("GET", "x?limit=0", None, "invalid_parameter"),
        ("GET", "x/d/ystate?sv=%FF", None, "invalid_parameter"),
    ],
)
def test_bad_input_is_refused_with_its_code_and_nothing_applied(
    shared_node: NodeProcess, method: str, path: str, body: bytes | None, code: str
) -> None:
    _put(shared_node, "x/d", {"keep": 1})
    assert_error(shared_node.request(method, f"/v1/docs/{path}", body=body), code)
    assert shared_node.request("GET", "/v1/docs/x/d").json()["doc"] == {"keep": 1}


def test_queries_filter_order_and_page(shared_node: NodeProcess, coll: str) -> None:
    for i in range(25):
        _put(shared_node, f"{coll}/d{i:02}", {"age": i, "team": "red" if i % 2 else "blue"})
    _put(shared_node, f"{coll}/noage", {"team": "red"})
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/v1/docs/{coll}?where=age>=5&where=team==red&order_by=-age&limit=4"
        page = shared_node.request("GET", query + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [item["id"] for item in page["documents"]]
        if page["list_complete"]:
            break
        cursor = page["cursor"]
    assert seen == [f"d{i:02}" for i in range(23, 4, -2)]
    everything = shared_node.request("GET", f"/v1/docs/{coll}?limit=1000").json()
    assert len(everything["documents"]) == 26
    strings = shared_node.request("GET", f'/v1/docs/{coll}?where=age=="5"').json()
    assert strings["documents"] == [], "a string never equals a number"


def test_a_query_answers_each_document_as_its_get_does(shared_node: NodeProcess, coll: str) -> None:
    odd_ids = ['quote"d', "back\\slash", "ünïcode ✓", "tab\tand\u0001control"]
    for i, doc_id in enumerate(odd_ids):
        _put(shared_node, f"{coll}/{quote(doc_id, safe='')}", {"i": i, "s": doc_id, "big": 2**62})
    found = shared_node.request("GET", f"/v1/docs/{coll}?order_by=i").json()["documents"]
    gets = [
        shared_node.request("GET", f"/v1/docs/{coll}/{quote(doc_id, safe='')}").json()
        for doc_id in odd_ids
    ]
    assert found == gets
    assert [item["id"] for item in found] == odd_ids


def test_declared_index_is_used_by_queries(shared_node: NodeProcess, coll: str) -> None:
    _put(shared_node, f"{coll}/a", {"profile": {"age": 3}})
    created = shared_node.request(
        "POST", f"/v1/docs/{coll}/_indexes", json_body={"field": "profile.age"}
    )
    assert created.status == 201
    again = shared_node.request(
        "POST", f"/v1/docs/{coll}/_indexes", json_body={"field": "profile.age"}
    )
    assert again.status == 200
    listed = shared_node.request("GET", f"/v1/docs/{coll}/_indexes").json()["indexes"]
    assert [index["field"] for index in listed] == ["profile.age"]
    page = query.build(coll, ["profile.age>=1"], "profile.age", 10, None)
    uri = f"file:{shared_node.data_dir / 'edgekv.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        for sql in (page.sql, page.answer_sql):  # the plain query and the one the node runs
            plan = " ".join(
                row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, page.params)
            )
            assert created.json()["name"] in plan, plan


def test_compaction_keeps_the_update_log_bounded(start_node: Any) -> None:
    node = start_node("compact")
    _put(node, "c/hot", {"n": 0})
    for i in range(200):
        assert node.request("PATCH", "/v1/docs/c/hot", json_body={"n": i}).status == 200
    uri = f"file:{node.data_dir / 'edgekv.db'}?mode=ro"

    def log_rows() -> int:
        with sqlite3.connect(uri, uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM doc_log").fetchone()[0])

    wait_for(lambda: log_rows() < 32, what="compaction")
    assert node.request("GET", "/v1/docs/c/hot").json()["doc"] == {"n": 199}
