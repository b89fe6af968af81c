"""Watches of counters and sets on one real node: snapshot, live changes, filters, resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgekv.auth import new_token, token_toml
from testkit.cluster import Cluster
from testkit.processes import NodeProcess
from testkit.sse import SseBlock, SseStream
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


@pytest.fixture
def node(tmp_path: Path, start_node: StartNode) -> NodeProcess:
    token, reader = new_token(), new_token()
    config = tmp_path / "tokens.toml"
    config.write_text(
        token_toml("admin", token, ["admin"]) + token_toml("reader", reader, ["read:other"])
    )
    node = start_node(f"n{time.monotonic_ns()}", ["--config", str(config)])
    node.token = token
    node.reader_token = reader  # type: ignore[attr-defined]
    return node


def watch(node: NodeProcess, path: str, headers: dict[str, str] | None = None) -> SseStream:
    stream = SseStream(node.url, path, token=node.token, headers=headers)
    assert stream.status == 200, stream.body()
    return stream


def add(node: NodeProcess, key: str, amount: int) -> None:
    answer = node.request("POST", f"/v1/counters/app/{key}", json_body={"add": amount})
    assert answer.status == 200, answer.body


def update(node: NodeProcess, key: str, body: dict[str, list[str]]) -> None:
    answer = node.request("POST", f"/v1/sets/app/{key}", json_body=body)
    assert answer.status == 200, answer.body


def changes(stream: SseStream, count: int) -> list[SseBlock]:
    return [next(b for b in stream.blocks() if b.type == "change") for _ in range(count)]


def fields(blocks: list[SseBlock], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(block.json()[name] for name in names) for block in blocks]


def test_counter_watch_sends_each_counters_value(node: NodeProcess) -> None:
    add(node, "c1", 5)
    add(node, "other", 1)
    stream = watch(node, "/v1/counters/app/_watch?prefix=c&snapshot=true")
    snapshot, _ready = stream.until("ready")
    assert fields(snapshot, "key", "op", "value") == [("c1", "update", 5)]
    add(node, "c1", 3)
    add(node, "other", 1)  # not under the prefix
    add(node, "c2", -2)
    reset = node.request("DELETE", "/v1/counters/app/c1")
    assert reset.status == 200, reset.body
    # Changes of one counter read in one round of the log fold into one event
    # (its value then): c1 comes as 8 then 0, or as 0 alone.
    live: list[SseBlock] = []
    while not live or fields(live[-1:], "key", "value") != [("c1", 0)]:
        live += changes(stream, 1)
    seen = fields(live, "key", "value")
    assert ("c2", -2) in seen
    assert [value for key, value in seen if key == "c1"] in ([8, 0], [0])
    assert len(seen) == len(set(seen))
    assert all(key != "other" for key, _ in seen)
    read = node.request("GET", "/v1/counters/app/c1").json()
    assert live[-1].json()["version"] == read["version"]
    assert all(block.id is not None for block in live)
    last = live[-1].id
    stream.close()
    # Resumed from its last id: what changed meanwhile, once, and nothing before it.
    add(node, "c2", 10)
    add(node, "c2", 1)
    with watch(node, "/v1/counters/app/_watch?prefix=c", {"Last-Event-ID": last or ""}) as again:
        missed, _ = again.until("ready")
        assert fields(missed, "key", "value") == [("c2", 9)]
    # One counter by its key (a filter matches counters' keys, not their rows').
    with watch(node, "/v1/counters/app/_watch?keys=other") as one:
        one.until("ready")
        add(node, "c1", 1)
        add(node, "other", 5)
        assert fields(changes(one, 1), "key", "value") == [("other", 7)]


def test_set_watch_sends_each_member_added_or_removed(node: NodeProcess) -> None:
    update(node, "s1", {"add": ["a", "b"]})
    update(node, "s1", {"remove": ["b"]})
    update(node, "t1", {"add": ["x"]})
    stream = watch(node, "/v1/sets/app/_watch?keys=s1&snapshot=true")
    snapshot, _ = stream.until("ready")
    assert fields(snapshot, "key", "member", "op") == [("s1", "a", "add")]  # present ones only
    update(node, "s1", {"add": ["c"], "remove": ["a"]})
    update(node, "t1", {"add": ["y"]})  # another set
    update(node, "s1", {"add": ["b"]})
    live = changes(stream, 3)
    assert sorted(fields(live[:2], "member", "op")) == [("a", "remove"), ("c", "add")]
    assert fields(live[2:], "member", "op") == [("b", "add")]
    last = live[-1].id
    stream.close()
    update(node, "s1", {"remove": ["c"]})
    with watch(node, "/v1/sets/app/_watch?keys=s1", {"Last-Event-ID": last or ""}) as again:
        missed, _ = again.until("ready")
        assert fields(missed, "key", "member", "op") == [("s1", "c", "remove")]


@pytest.mark.parametrize("kind", ["counters", "sets"])
def test_a_counter_or_set_watch_takes_the_namespaces_read_scope(
    node: NodeProcess, kind: str
) -> None:
    reader = node.reader_token  # type: ignore[attr-defined]
    refused = SseStream(node.url, f"/v1/{kind}/app/_watch", token=reader)
    assert refused.status == 403
    assert refused.body()["error"]["code"] == "forbidden"
    with SseStream(node.url, f"/v1/{kind}/other/_watch", token=reader) as allowed:
        assert allowed.status == 200
        allowed.until("ready")


@pytest.mark.slow  # two nodes replicating
def test_a_counter_watch_resumes_at_another_pop(tmp_path: Path) -> None:
    """At another PoP the token's vector decides: a counter with a row it does not
    cover comes once, with its value there; one it covers does not come again."""
    cluster = Cluster(tmp_path / "c", 2)
    try:
        n0, n1 = cluster.nodes
        add(n0, "c1", 5)
        add(n0, "c2", 1)
        wait_for(lambda: n1.request("GET", "/v1/counters/app/c2").json()["value"] == 1, 30)
        with watch(n0, "/v1/counters/app/_watch") as stream:
            _, ready = stream.until("ready")
        add(n1, "c1", 4)  # c2 unchanged: covered by the token
        wait_for(lambda: n1.request("GET", "/v1/counters/app/c1").json()["value"] == 9, 30)
        with watch(n1, "/v1/counters/app/_watch", {"Last-Event-ID": ready.id or ""}) as again:
            missed, _ = again.until("ready")
            assert fields(missed, "key", "value") == [("c1", 9)]
    finally:
        cluster.close()
