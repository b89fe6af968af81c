"""Rows a strong operation meets in PostgreSQL are held to the API's limits before any answer.

A row written to the upstream directly (not through EdgeKV) may hold what the
API refuses: CRLF metadata (it would go into a response header), an oversized
value, a stamp no later write can pass. A strong read or write that meets one
answers 502 ``upstream_invalid``, logged, never a 500 or a broken response.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from edgekv_replication.hlc import pack_hlc
from testkit.pg import DSN, query
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.waiting import wait_for
from tests.intake_cases import HLC, LIMIT_ARGS, LIMITS

StartNode = Callable[..., NodeProcess]
DAY_AHEAD = pack_hlc(int(time.time() * 1000) + 86_400_000, 0)

BAD_ROWS = {
    # key: (value, metadata, expiration, hlc)
    "crlf": (b"v", '{"a":1}\r\nX-Evil: 1', None, HLC),
    "notjson": (b"v", "not json", None, HLC),
    "nonascii": (b"v", '{"\u00e9":1}', None, HLC),
    "big": (b"x" * (LIMITS.max_value_bytes + 1), None, None, HLC),
    "farexp": (b"v", None, 10**15, HLC),
    "badstamp": (b"v", None, None, -5),
}


@pytest.fixture
def node_with_bad_rows(start_node: StartNode, pg_schema: str) -> NodeProcess:
    """A node with strong namespace ``bank`` whose PostgreSQL table holds invalid rows."""
    args = [*LIMIT_ARGS, "--upstream", DSN, "--upstream-schema", pg_schema]
    node = start_node("a", [*args, "--strong-namespaces", "bank"])
    wait_for(lambda: node.request("GET", "/v1/cluster/status").json()["upstream"]["state"] == "up")
    insert = (
        f"INSERT INTO {pg_schema}.kv (ns, key, value, metadata, expiration, hlc, node)"
        " VALUES ('bank', $1, $2, $3, $4, $5, 99)"
    )
    for key, (value, metadata, expiration, hlc) in BAD_ROWS.items():
        query(insert, key.encode(), value, metadata, expiration, hlc)
    query(insert, b"good", b"fine", '{"a":1}', None, HLC)
    query(insert, b"maxstamp", b"v", None, None, (1 << 63) - 1)
    query(insert, b"dayahead", b"v", None, None, DAY_AHEAD)
    return node


def test_strong_reads_of_invalid_rows_answer_upstream_invalid(
    node_with_bad_rows: NodeProcess,
) -> None:
    node = node_with_bad_rows
    for key in BAD_ROWS:
        answer = node.request("GET", f"/v1/kv/bank/{key}?consistency=strong")
        assert_error(answer, "upstream_invalid")
        assert "EdgeKV-Metadata" not in answer.headers
        assert key in answer.json()["error"]["message"]
    good = node.request("GET", "/v1/kv/bank/good?consistency=strong")
    assert (good.status, good.body, good.headers["EdgeKV-Metadata"]) == (200, b"fine", '{"a":1}')
    wait_for(lambda: any("strong operation refused" in line for line in node.output), what="log")
    assert "b'crlf'" in "".join(line for line in node.output if "strong operation refused" in line)


def test_strong_writes_over_an_unstampable_row_answer_upstream_invalid(
    node_with_bad_rows: NodeProcess,
) -> None:
    node = node_with_bad_rows
    # No later stamp exists: PostgreSQL refuses the write, nothing is applied anywhere.
    assert_error(node.request("PUT", "/v1/kv/bank/maxstamp", body=b"new"), "upstream_invalid")
    ops = [{"op": "put", "key": "maxstamp", "value": "bmV3"}, {"op": "put", "key": "next"}]
    ops[1]["value"] = "bmV3"
    transaction: dict[str, object] = {
        "conditions": [{"key": "maxstamp", "exists": True}],
        "operations": ops,
    }
    answer = node.request("POST", "/v1/kv/bank/_txn", json_body=transaction)
    assert_error(answer, "upstream_invalid")
    rows = query("SELECT value FROM " + _kv(node) + " WHERE key = 'maxstamp'")
    assert [bytes(row["value"]) for row in rows] == [b"v"]
    assert node.request("GET", "/v1/kv/bank/maxstamp").status == 404
    # A stamp a day ahead: following it would stamp every later write a day ahead.
    transaction["conditions"] = [{"key": "dayahead", "exists": True}]
    transaction["operations"] = [{"op": "put", "key": "dayahead", "value": "bmV3"}, *ops[1:]]
    assert_error(
        node.request("POST", "/v1/kv/bank/_txn", json_body=transaction), "upstream_invalid"
    )
    written = node.request("PUT", "/v1/kv/app/k", body=b"1")
    assert int(written.json()["version"][:16], 16) < DAY_AHEAD
    # The node goes on serving strong writes of other keys.
    assert node.request("PUT", "/v1/kv/bank/other", body=b"1").status == 200
    assert node.request("GET", "/v1/kv/bank/other?consistency=strong").body == b"1"


def _kv(node: NodeProcess) -> str:
    index = node.args.index("--upstream-schema")
    return f"{node.args[index + 1]}.kv"
