"""Counters and sets against hostile input on real nodes: scopes, limits, parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgekv.auth import new_token, token_toml
from edgekv_client import Client
from testkit.pg import DSN
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]
INT64_MAX = 2**63 - 1


def post(node: NodeProcess, path: str, body: object) -> tuple[int, dict[str, Any]]:
    answer = node.request("POST", path, json_body=body)
    return answer.status, json.loads(answer.body)


# -- (a) a write-only token learns nothing of what it writes to -------------------------------


def test_a_write_only_token_is_not_answered_what_only_a_reader_may_see(
    tmp_path: Path, start_node: StartNode
) -> None:
    writer, both = new_token(), new_token()
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(
        token_toml("writer", writer, ["write:quota"])
        + token_toml("both", both, ["write:quota", "read:quota"])
    )
    node = start_node(args=["--config", str(config_file)])

    def call(method: str, path: str, token: str, body: object = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        answer = node.request(method, path, json_body=body, headers=headers)
        return answer.status, json.loads(answer.body)

    assert call("POST", "/v1/counters/quota/c", both, {"add": 5})[1]["value"] == 5
    status, body = call("POST", "/v1/counters/quota/c", writer, {"add": 0})
    assert status == 200
    assert sorted(body) == ["bookmark", "version"]  # no value: that is a read
    # With read scope too, the value is answered.
    assert call("POST", "/v1/counters/quota/c", both, {"add": 1})[1]["value"] == 6
    with Client(node.url, writer) as only_writes, Client(node.url, both) as reads_too:
        assert only_writes.counter("quota", "c").add(1) is None
        assert reads_too.counter("quota", "c").add(1) == 8
        assert only_writes.counter("quota", "c").add(-2) is None
    # A bound is a read of the value (the refusal carries it): it needs read scope.
    assert_error(
        node.request(
            "POST",
            "/v1/counters/quota/c",
            json_body={"add": -1, "min": 0},
            headers={"Authorization": f"Bearer {writer}"},
        ),
        "forbidden",
    )

    # A set: removing a present and an absent member answer alike (each is written).
    assert call("POST", "/v1/sets/quota/s", both, {"add": ["here"]})[0] == 200
    present = call("POST", "/v1/sets/quota/s", writer, {"remove": ["here"]})
    absent = call("POST", "/v1/sets/quota/s", writer, {"remove": ["never"]})
    assert present[0] == absent[0] == 200
    assert sorted(present[1]) == sorted(absent[1]) == ["bookmark", "version"]
    assert call("GET", "/v1/sets/quota/s", both)[1]["members"] == []
    # Resets of a written and of a never-written counter answer alike too.
    written = call("DELETE", "/v1/counters/quota/c", writer)
    never = call("DELETE", "/v1/counters/quota/never", writer)
    assert written[0] == never[0] == 200
    assert sorted(written[1]) == sorted(never[1]) == ["bookmark", "version"]
    assert call("GET", "/v1/counters/quota/c", both)[1]["value"] == 0
    assert call("GET", "/v1/counters/quota/never", both)[1]["value"] == 0


# -- (b) a reset gives a PoP its 64 bits back; the range of an add ----------------------------


def test_a_reset_restores_this_pops_increment_budget(shared_node: NodeProcess, ns: str) -> None:
    path = f"/v1/counters/{ns}/budget"
    assert post(shared_node, path, {"add": INT64_MAX})[0] == 200
    assert shared_node.request("DELETE", path).status == 200
    assert post(shared_node, path, {"add": 1})[1]["value"] == 1
    assert post(shared_node, path, {"add": INT64_MAX - 1})[1]["value"] == INT64_MAX
    assert_error(shared_node.request("POST", path, json_body={"add": 1}), "counter_overflow")
    # Decrements too.
    assert shared_node.request("DELETE", path).status == 200
    assert post(shared_node, path, {"add": -INT64_MAX})[1]["value"] == -INT64_MAX
    assert shared_node.request("DELETE", path).status == 200
    assert post(shared_node, path, {"add": -INT64_MAX})[1]["value"] == -INT64_MAX
    assert shared_node.request("GET", path).json()["value"] == -INT64_MAX


def test_an_add_is_within_the_documented_range(shared_node: NodeProcess, ns: str) -> None:
    path = f"/v1/counters/{ns}/range"
    answer = shared_node.request("POST", path, json_body={"add": -(2**63)})
    assert_error(answer, "counter_overflow")
    assert "-(2**63 - 1)" in answer.json()["error"]["message"]
    assert shared_node.request("GET", path).json() == {"value": 0, "version": None}
    assert post(shared_node, path, {"add": -INT64_MAX})[1]["value"] == -INT64_MAX


# -- (c) ?consistency on counters and sets ---------------------------------------------------


@pytest.mark.parametrize("kind", ["counters", "sets"])
def test_consistency_is_checked_on_counter_and_set_reads(
    shared_node: NodeProcess, ns: str, kind: str
) -> None:
    path = f"/v1/{kind}/{ns}/x"
    assert shared_node.request("GET", path + "?consistency=eventual").status == 200
    assert_error(shared_node.request("GET", path + "?consistency=bogus"), "invalid_parameter")
    assert_error(shared_node.request("GET", path + "?consistency="), "invalid_parameter")
    strong = shared_node.request("GET", path + "?consistency=strong")
    assert_error(strong, "strong_namespace_required" if kind == "counters" else "invalid_parameter")


def _strong(start_node: StartNode, name: str, schema: str, *more: str) -> NodeProcess:
    args = ["--upstream", DSN, "--upstream-schema", schema, "--upstream-timeout", "10"]
    node = start_node(name, [*args, "--strong-namespaces", "quota", *more])

    def up() -> bool:
        status = node.request("GET", "/v1/cluster/status").json()
        return bool(status["upstream"]["state"] == "up")

    wait_for(up, what="upstream connected")
    return node


@pytest.mark.slow
def test_a_strong_counter_read_comes_from_postgresql(start_node: StartNode, pg_schema: str) -> None:
    a = _strong(start_node, "a", pg_schema)
    # b pulls from the upstream only every minute: its own copy stays behind.
    b = _strong(start_node, "b", pg_schema, "--upstream-poll-interval", "60")
    for add, total in ((3, 3), (4, 7)):
        assert post(a, "/v1/counters/quota/seats", {"add": add})[0] == 200
        strong = b.request("GET", "/v1/counters/quota/seats?consistency=strong").json()
        assert strong["value"] == total
        assert len(strong["version"]) == 32
        assert b.request("GET", "/v1/counters/quota/seats").json()["value"] == 0
    assert b.request("GET", "/v1/counters/quota/none?consistency=strong").json() == {
        "value": 0,
        "version": None,
    }
    # Sets stay replicated in a strong namespace: no strong read of them.
    assert_error(b.request("GET", "/v1/sets/quota/s?consistency=strong"), "invalid_parameter")


# -- (d) a set listing's prefix is held to the member rules -----------------------------------


@pytest.mark.parametrize("prefix", ["x" * 513, "%FF", "a%00", "%"])
def test_a_bad_set_prefix_is_invalid_member(shared_node: NodeProcess, ns: str, prefix: str) -> None:
    answer = shared_node.request("GET", f"/v1/sets/{ns}/s?prefix={prefix}")
    assert_error(answer, "invalid_member")


# -- (e) bounds are integers, and only where they can be kept --------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"add": 1, "min": None}, "invalid_json"),
        ({"add": 1, "max": None}, "invalid_json"),
        ({"add": None}, "invalid_json"),
        ({"add": 1, "min": "0"}, "invalid_json"),
        ({"add": 1, "min": 5, "max": 4}, "invalid_json"),
        ({"add": 1, "max": 10}, "strong_namespace_required"),
        ({"add": 1, "min": 0, "max": 10}, "strong_namespace_required"),
    ],
)
def test_bounds_are_checked_and_need_a_strong_namespace(
    shared_node: NodeProcess, ns: str, body: object, code: str
) -> None:
    assert_error(shared_node.request("POST", f"/v1/counters/{ns}/b", json_body=body), code)
    assert shared_node.request("GET", f"/v1/counters/{ns}/b").json()["value"] == 0
