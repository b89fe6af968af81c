"""Counters and sets between real node processes: no acknowledged update is lost."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.cluster import Cluster, stored_state, wait_converged
from testkit.pg import DSN
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for cluster in made:
        cluster.close()


def counter(node: NodeProcess, path: str) -> int:
    answer = node.request("GET", f"/v1/counters/{path}")
    assert answer.status == 200, answer.body
    value = json.loads(answer.body)["value"]
    assert isinstance(value, int)
    return value


def members(node: NodeProcess, path: str) -> list[str]:
    answer = node.request("GET", f"/v1/sets/{path}")
    assert answer.status == 200, answer.body
    found = json.loads(answer.body)["members"]
    assert isinstance(found, list)
    return found


def add(node: NodeProcess, path: str, amount: int) -> int | None:
    """The value the node answers, or None if the add was not acknowledged."""
    answer = node.request("POST", f"/v1/counters/{path}", json_body={"add": amount})
    if answer.status != 200:
        return None
    value = json.loads(answer.body)["value"]
    assert isinstance(value, int)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True])
def test_three_pops_adding_through_a_partition_end_with_every_acknowledged_add(
    make_cluster: list[Cluster], tmp_path: Path, tls: bool
) -> None:
    cluster = Cluster(tmp_path / "c", 3, tls=tls)
    make_cluster.append(cluster)
    acknowledged = [0, 0, 0]

    def work(i: int, rounds: int) -> None:
        for r in range(rounds):
            amount = (i + 1) * (3 if r % 4 else -1)
            if add(cluster.nodes[i], "hits/page", amount) is not None:
                acknowledged[i] += amount

    def burst(rounds: int) -> None:
        threads = [threading.Thread(target=work, args=(i, rounds)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    burst(10)
    cluster.isolate(2)
    burst(15)
    # Cut off, node 2 sees its own adds at once, not the others'.
    assert counter(cluster.nodes[2], "hits/page") != sum(acknowledged)
    cluster.heal()
    burst(5)
    wait_converged(cluster.nodes)
    assert [counter(node, "hits/page") for node in cluster.nodes] == [sum(acknowledged)] * 3


@pytest.mark.slow
def test_a_reset_removes_what_it_saw_and_a_concurrent_add_survives(
    make_cluster: list[Cluster], tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path / "c", 2)
    make_cluster.append(cluster)
    a, b = cluster.nodes
    assert add(a, "q/k", 7) == 7
    assert add(b, "q/k", 3) == 10 or True  # b may not have a's add yet
    wait_for(lambda: counter(a, "q/k") == 10 and counter(b, "q/k") == 10, 20, "both adds")
    cluster.isolate(1)
    assert a.request("DELETE", "/v1/counters/q/k").status == 200
    assert counter(a, "q/k") == 0
    assert add(b, "q/k", 5) == 15
    cluster.heal()
    wait_converged(cluster.nodes)
    # The reset removed the 10 it saw; the 5 it did not see survives, everywhere.
    assert [counter(a, "q/k"), counter(b, "q/k")] == [5, 5]


@pytest.mark.slow
def test_concurrent_add_and_remove_of_a_member_across_a_partition_ends_with_it_present(
    make_cluster: list[Cluster], tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path / "c", 3)
    make_cluster.append(cluster)
    a, b, c = cluster.nodes
    answer = a.request("POST", "/v1/sets/tags/post1", json_body={"add": ["red", "blue"]})
    assert answer.status == 200, answer.body
    wait_for(
        lambda: all(members(node, "tags/post1") == ["blue", "red"] for node in cluster.nodes),
        20,
        "the adds everywhere",
    )
    cluster.isolate(2)
    assert b.request("POST", "/v1/sets/tags/post1", json_body={"remove": ["red"]}).status == 200
    assert c.request("POST", "/v1/sets/tags/post1", json_body={"add": ["red"]}).status == 200
    assert members(b, "tags/post1") == ["blue"]
    cluster.heal()
    wait_converged(cluster.nodes)
    # Add wins: c's add was not seen by b's remove.
    assert [members(node, "tags/post1") for node in cluster.nodes] == [["blue", "red"]] * 3
    # A remove that has seen every add removes the member everywhere.
    assert a.request("POST", "/v1/sets/tags/post1", json_body={"remove": ["red"]}).status == 200
    wait_converged(cluster.nodes)
    assert [members(node, "tags/post1") for node in cluster.nodes] == [["blue"]] * 3


def set_rows(node: NodeProcess) -> list[tuple[Any, ...]]:
    return [row for row in stored_state(node) if str(row[0]).startswith("@set:")]


def counter_rows(node: NodeProcess) -> list[tuple[Any, ...]]:
    return [row for row in stored_state(node) if str(row[0]).startswith("@ctr:")]


@pytest.mark.slow
def test_removed_members_and_expired_counters_leave_no_rows_behind(
    make_cluster: list[Cluster], tmp_path: Path
) -> None:
    fast_gc = ("--tombstone-horizon", "1", "--tombstone-gc-interval", "0.2")
    cluster = Cluster(tmp_path / "c", 3, args=fast_gc)
    make_cluster.append(cluster)
    a, b, c = cluster.nodes
    assert a.request("POST", "/v1/sets/t/s", json_body={"add": ["gone", "kept"]}).status == 200
    assert b.request("POST", "/v1/sets/t/s", json_body={"add": ["gone"]}).status == 200
    wait_converged(cluster.nodes)
    assert c.request("POST", "/v1/sets/t/s", json_body={"remove": ["gone"]}).status == 200
    answer = a.request("POST", "/v1/counters/t/window", json_body={"add": 3, "ttl": 1})
    assert answer.status == 200
    # A counter added to at two PoPs and reset at a third: the spent resets go.
    assert add(a, "t/votes", 5) == 5
    assert add(b, "t/votes", 2) is not None
    wait_for(lambda: all(counter(n, "t/votes") == 7 for n in cluster.nodes), 20, "the adds")
    assert c.request("DELETE", "/v1/counters/t/votes").status == 200

    def resets_gone() -> bool:
        rows = [row for n in cluster.nodes for row in counter_rows(n)]
        votes = [row for row in rows if bytes(row[1]).startswith(b"votes")]
        return len(votes) == 9 and all(b'"b"' not in bytes(row[2]) for row in votes)

    wait_for(resets_gone, 30, "the spent resets dropped")
    assert [counter(n, "t/votes") for n in cluster.nodes] == [0, 0, 0]
    assert add(b, "t/votes", 4) == 4
    wait_for(lambda: all(counter(n, "t/votes") == 4 for n in cluster.nodes), 20, "a new add")

    # Every row of the removed member (two adds, one removal) retires and is collected.
    def only_kept_rows() -> bool:
        keys = [row[1] for node in cluster.nodes for row in set_rows(node)]
        return len(keys) == 3 and all(
            isinstance(key, bytes) and key.startswith(b"s\xffkept\x00") for key in keys
        )

    wait_for(only_kept_rows, 30, "the removed member's rows collected")
    wait_for(
        lambda: all(
            all(b"window" not in bytes(row[1]) for row in counter_rows(n)) for n in cluster.nodes
        ),
        30,
        "expired counter rows",
    )
    assert [members(node, "t/s") for node in cluster.nodes] == [["kept"]] * 3
    # The member can come back, and its new add is not taken for a removed one.
    assert b.request("POST", "/v1/sets/t/s", json_body={"add": ["gone"]}).status == 200
    wait_converged(cluster.nodes)
    assert [members(node, "t/s") for node in cluster.nodes] == [["gone", "kept"]] * 3


@pytest.mark.slow
def test_pops_joined_only_through_postgres_converge_on_counters_and_sets(
    start_node: Callable[..., NodeProcess], pg_schema: str, tmp_path: Path
) -> None:
    start_node = Security(tmp_path / "security").starter(start_node)
    args = ["--upstream", DSN, "--upstream-schema", pg_schema]
    a, b = start_node("a", args), start_node("b", args)
    acknowledged = 0

    def work(node: NodeProcess, amount: int) -> None:
        nonlocal acknowledged
        for _ in range(20):
            if add(node, "hits/home", amount) is not None:
                acknowledged += amount

    threads = [
        threading.Thread(target=work, args=(a, 3)),
        threading.Thread(target=work, args=(b, -1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert a.request("POST", "/v1/sets/t/s", json_body={"add": ["x", "y"]}).status == 200
    assert (
        b.request("POST", "/v1/sets/t/s", json_body={"add": ["z"], "remove": ["x"]}).status == 200
    )
    wait_converged([a, b])
    assert [counter(n, "hits/home") for n in (a, b)] == [acknowledged] * 2
    # b's remove did not see a's add of x (no peer link, and maybe not via PostgreSQL yet),
    # or it did: either way every PoP agrees.
    assert members(a, "t/s") == members(b, "t/s")
    c = start_node("c", args)  # joins later, through PostgreSQL only
    wait_converged([a, b, c])
    assert counter(c, "hits/home") == acknowledged
    assert members(c, "t/s") == members(a, "t/s")
