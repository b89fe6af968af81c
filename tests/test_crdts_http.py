"""Counters and sets over HTTP on one real node: answers, limits and error codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from testkit.pg import DSN
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


def post(node: NodeProcess, path: str, body: object) -> tuple[int, dict[str, object]]:
    answer = node.request("POST", path, json_body=body)
    return answer.status, json.loads(answer.body)


def test_a_counter_adds_reads_and_resets(shared_node: NodeProcess, ns: str) -> None:
    assert shared_node.request("GET", f"/v1/counters/{ns}/c").json() == {
        "value": 0,
        "version": None,
    }
    status, body = post(shared_node, f"/v1/counters/{ns}/c", {"add": 5})
    assert status == 200
    assert body["value"] == 5
    assert str(body["bookmark"]).startswith("b1.")
    assert len(str(body["version"])) == 32
    status, body = post(shared_node, f"/v1/counters/{ns}/c", {"add": -7})
    assert (status, body["value"]) == (200, -2)
    read = shared_node.request("GET", f"/v1/counters/{ns}/c").json()
    assert read["value"] == -2
    assert read["version"] == body["version"]
    assert shared_node.request("DELETE", f"/v1/counters/{ns}/c").status == 200
    assert shared_node.request("GET", f"/v1/counters/{ns}/c").json()["value"] == 0
    assert post(shared_node, f"/v1/counters/{ns}/c", {"add": 3})[1]["value"] == 3


def test_concurrent_adds_at_one_node_lose_nothing(shared_node: NodeProcess, ns: str) -> None:
    def work() -> None:
        for _ in range(25):
            assert post(shared_node, f"/v1/counters/{ns}/hot", {"add": 1})[0] == 200

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared_node.request("GET", f"/v1/counters/{ns}/hot").json()["value"] == 100


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"add": 2**63}, "counter_overflow"),
        ({"add": -(2**63) - 1}, "counter_overflow"),
        ({"add": 1.5}, "invalid_json"),
        ({"add": "1"}, "invalid_json"),
        ({"add": True}, "invalid_json"),
        ({}, "invalid_json"),
        ({"add": 1, "by": 2}, "invalid_json"),
        ({"add": 1, "ttl": 0}, "invalid_expiration"),
        ({"add": 1, "ttl": 5, "expiration": 9999999999}, "invalid_expiration"),
        ({"add": 1, "min": 0}, "strong_namespace_required"),
        ([1], "invalid_json"),
    ],
)
def test_bad_counter_adds_are_refused_with_their_code(
    shared_node: NodeProcess, ns: str, body: object, code: str
) -> None:
    assert_error(shared_node.request("POST", f"/v1/counters/{ns}/c", json_body=body), code)
    assert shared_node.request("GET", f"/v1/counters/{ns}/c").json()["value"] == 0


def test_a_counter_past_64_bits_is_refused_never_wrapped(shared_node: NodeProcess, ns: str) -> None:
    assert post(shared_node, f"/v1/counters/{ns}/big", {"add": 2**63 - 1})[0] == 200
    answer = shared_node.request("POST", f"/v1/counters/{ns}/big", json_body={"add": 1})
    assert_error(answer, "counter_overflow")
    assert shared_node.request("GET", f"/v1/counters/{ns}/big").json()["value"] == 2**63 - 1
    assert post(shared_node, f"/v1/counters/{ns}/big", {"add": -1})[1]["value"] == 2**63 - 2


def test_a_counter_body_over_its_limit_is_refused_before_parsing(
    shared_node: NodeProcess, ns: str
) -> None:
    answer = shared_node.request("POST", f"/v1/counters/{ns}/c", body=b"{" + b" " * 5000 + b"}")
    assert_error(answer, "payload_too_large")


def test_a_set_adds_removes_lists_and_clears(shared_node: NodeProcess, ns: str) -> None:
    path = f"/v1/sets/{ns}/tags"
    assert shared_node.request("GET", path).json()["members"] == []
    assert post(shared_node, path, {"add": ["b", "a", "ab", "é", "a"]})[0] == 200
    listed = shared_node.request("GET", path).json()
    assert listed["members"] == ["a", "ab", "b", "é"]
    assert listed["list_complete"] is True
    assert post(shared_node, path, {"remove": ["ab", "zz"], "add": ["c"]})[0] == 200
    assert shared_node.request("GET", path).json()["members"] == ["a", "b", "c", "é"]
    assert shared_node.request("GET", path + "?prefix=a").json()["members"] == ["a"]
    page = shared_node.request("GET", path + "?limit=2").json()
    assert page["members"] == ["a", "b"]
    assert page["list_complete"] is False
    rest = shared_node.request("GET", f"{path}?limit=2&cursor={page['cursor']}").json()
    assert rest["members"] == ["c", "é"]
    assert rest["cursor"] is None
    assert shared_node.request("DELETE", path).status == 200
    assert shared_node.request("GET", path).json()["members"] == []
    assert post(shared_node, path, {"add": ["a"]})[0] == 200
    assert shared_node.request("GET", path).json()["members"] == ["a"]


def test_a_large_set_pages_through_every_member(shared_node: NodeProcess, ns: str) -> None:
    path = f"/v1/sets/{ns}/big"
    members = [f"m{i:04d}" for i in range(1500)]
    for start in range(0, 1500, 500):
        assert post(shared_node, path, {"add": members[start : start + 500]})[0] == 200
    assert post(shared_node, path, {"remove": members[::3]})[0] == 200
    seen: list[str] = []
    cursor = ""
    while True:
        page = shared_node.request("GET", f"{path}?limit=400{cursor}").json()
        seen += page["members"]
        if page["list_complete"]:
            break
        cursor = f"&cursor={page['cursor']}"
    assert seen == [m for i, m in enumerate(members) if i % 3]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"add": [""]}, "invalid_member"),
        ({"add": ["ok", "x" * 513]}, "invalid_member"),
        ({"add": ["a\u0000b"]}, "invalid_member"),
        ({"add": [5]}, "invalid_member"),
        ({"add": "a"}, "invalid_json"),
        ({"add": ["a"], "remove": ["a"]}, "invalid_request"),
        ({}, "invalid_json"),
        ({"add": ["a"], "clear": True}, "invalid_json"),
    ],
)
def test_bad_set_updates_are_refused_and_apply_nothing(
    shared_node: NodeProcess, ns: str, body: object, code: str
) -> None:
    assert_error(shared_node.request("POST", f"/v1/sets/{ns}/s", json_body=body), code)
    assert shared_node.request("GET", f"/v1/sets/{ns}/s").json()["members"] == []


def test_set_limits_refuse_the_whole_request(start_node: StartNode) -> None:
    node = start_node(args=["--max-set-members", "5", "--max-set-request-members", "4"])
    answer = node.request("POST", "/v1/sets/n/s", json_body={"add": list("abcde")})
    assert_error(answer, "too_many_members")
    assert node.request("POST", "/v1/sets/n/s", json_body={"add": list("abcd")}).status == 200
    assert_error(node.request("POST", "/v1/sets/n/s", json_body={"add": ["x", "y"]}), "set_full")
    assert node.request("GET", "/v1/sets/n/s").json()["members"] == list("abcd")
    # Members already there do not count again, and a remove makes room in the same request.
    assert node.request("POST", "/v1/sets/n/s", json_body={"add": ["a", "e"]}).status == 200
    answer = node.request("POST", "/v1/sets/n/s", json_body={"remove": ["a"], "add": ["f"]})
    assert answer.status == 200
    assert node.request("GET", "/v1/sets/n/s").json()["members"] == list("bcdef")


def test_counters_and_sets_use_the_namespace_scopes(tmp_path: Path, start_node: StartNode) -> None:
    reader, writer = new_token(), new_token()
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(
        token_toml("reader", reader, ["read:quota"])
        + token_toml("writer", writer, ["write:quota", "read:quota"])
    )
    node = start_node(args=["--config", str(config_file)])

    def call(method: str, path: str, token: str, body: object = None) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return node.request(method, path, json_body=body, headers=headers).status

    for path, body in [("/v1/counters/quota/k", {"add": 1}), ("/v1/sets/quota/k", {"add": ["m"]})]:
        assert call("POST", path, reader, body) == 403
        assert call("DELETE", path, reader) == 403
        assert call("POST", path, writer, body) == 200
        assert call("GET", path, reader) == 200
        assert call("GET", path.replace("quota", "other"), reader) == 403


def _strong(start_node: StartNode, name: str, schema: str) -> NodeProcess:
    args = ["--upstream", DSN, "--upstream-schema", schema, "--upstream-timeout", "10"]
    node = start_node(name, [*args, "--strong-namespaces", "quota"])

    def up() -> bool:
        status = node.request("GET", "/v1/cluster/status").json()
        return bool(status["upstream"]["state"] == "up")

    wait_for(up, what="upstream connected")
    return node


@pytest.mark.slow
def test_a_bounded_strong_counter_is_an_exact_quota_across_pops(
    start_node: StartNode, pg_schema: str
) -> None:
    pops = [_strong(start_node, "a", pg_schema), _strong(start_node, "b", pg_schema)]
    assert post(pops[0], "/v1/counters/quota/seats", {"add": 10})[0] == 200
    taken: list[int] = []
    refused: list[int] = []
    errors: list[dict[str, object]] = []

    def take(node: NodeProcess) -> None:
        for _ in range(8):
            answer = node.request(
                "POST", "/v1/counters/quota/seats", json_body={"add": -1, "min": 0}
            )
            if answer.status == 200:
                taken.append(json.loads(answer.body)["value"])
            else:
                refused.append(answer.status)
                errors.append(answer.json()["error"])

    threads = [threading.Thread(target=take, args=(pop,)) for pop in pops for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # 32 attempts on 10 seats: exactly 10 succeed, each seeing a distinct value.
    assert sorted(taken) == list(range(10))
    assert refused == [409] * 22
    assert {(e["code"], e["value"]) for e in errors} == {("counter_out_of_bounds", 0)}

    def drained() -> bool:
        return all(
            pop.request("GET", "/v1/counters/quota/seats").json()["value"] == 0 for pop in pops
        )

    wait_for(drained, what="the strong counter at every PoP")
    answer = pops[1].request("POST", "/v1/counters/quota/seats", json_body={"add": 5, "max": 4})
    assert answer.status == 409
    assert answer.json()["error"]["value"] == 0
    assert pops[1].request("DELETE", "/v1/counters/quota/seats").status == 200
    assert post(pops[0], "/v1/counters/quota/seats", {"add": 2, "max": 4})[1]["value"] == 2
