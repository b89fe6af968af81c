"""A rolling upgrade: nodes of this version and of the previous version replicate.

Each version speaks its own envelope form: this one sends a previous-version
peer messages without regions (see ``tests/test_envelope_previous.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.cluster import wait_converged
from testkit.previous import PREVIOUS_VERSION, unpack
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for


@pytest.mark.slow
def test_previous_and_current_versions_replicate_both_ways(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    old_env = unpack(PREVIOUS_VERSION, tmp_path / "previous")
    security = Security(tmp_path / "security")
    start = security.starter(start_node)
    old = start("old", env=old_env)
    new = start("new", ["--peer", old.url])
    # Each runs its own version: only this one has the admin routes.
    assert old.request("GET", "/v1/admin/tokens").status == 404
    assert new.request("GET", "/v1/admin/tokens").status == 200
    for i in range(50):
        assert old.request("PUT", f"/v1/kv/up/old{i}", body=f"o{i}").status == 200
        assert new.request("PUT", f"/v1/kv/up/new{i}", body=f"n{i}").status == 200
    assert new.request("DELETE", "/v1/kv/up/old3").status == 200
    assert old.request("DELETE", "/v1/kv/up/new3").status == 200
    state = wait_converged([old, new])
    live = {row[1].decode() for row in state if row[2] is not None}
    assert len(live) == 98
    assert "old3" not in live
    assert "new3" not in live
    assert new.request("GET", "/v1/kv/up/old7").body == b"o7"
    assert old.request("GET", "/v1/kv/up/new7").body == b"n7"


def members_up(node: NodeProcess) -> dict[str, str | None]:
    """The members ``node`` lists as up, by node id: their region (None: not known)."""
    answer = node.request("GET", "/v1/cluster/status")
    assert answer.status == 200, answer.body
    return {
        member["node_id"]: member.get("region")
        for member in answer.json()["members"]
        if member["node_id"] is not None and member["state"] == "up"
    }


def link_error(node: NodeProcess, member: str) -> str:
    """The last error of ``node``'s link from ``member`` ("" if none)."""
    for row in node.request("GET", "/v1/cluster/status").json()["members"]:
        if row["node_id"] == member:
            return str(row["last_error"] or "")
    return ""


@pytest.mark.slow
def test_member_lists_spread_across_versions_and_all_converge(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    old_env = unpack(PREVIOUS_VERSION, tmp_path / "previous")
    security = Security(tmp_path / "security")
    start = security.starter(start_node)
    old = start("old", env=old_env)
    first = start("first", ["--peer", old.url])
    # The second new node is told only of the first: it learns of the old node from the
    # first's member list, and the old node of it from a member list or its Hello.
    second = start("second", ["--peer", first.url])
    nodes = [old, first, second]
    for node in nodes:
        for i in range(20):
            answer = node.request("PUT", f"/v1/kv/members/{node.node_id}-{i}", body=f"v{i}")
            assert answer.status == 200
    wait_for(
        lambda: all(
            set(members_up(node)) == {other.node_id for other in nodes if other is not node}
            for node in nodes
        ),
        what="every node listing the other two as up",
    )
    state = wait_converged(nodes)
    assert len([row for row in state if row[0] == "members"]) == 60
    # The new nodes know each other's region, and none for the old node (it has none).
    assert members_up(first) == {old.node_id: None, second.node_id: "default"}
    assert members_up(second) == {old.node_id: None, first.node_id: "default"}
    assert set(members_up(old)) == {first.node_id, second.node_id}


@pytest.mark.slow
def test_a_previous_node_waits_for_counters_until_upgraded_then_resumes(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    old_env = unpack(PREVIOUS_VERSION, tmp_path / "previous")
    security = Security(tmp_path / "security")
    start = security.starter(start_node)
    old = start("old", env=old_env)
    new = start("new", ["--peer", old.url])
    assert new.request("PUT", "/v1/kv/up/before", body="b").status == 200
    wait_converged([old, new])
    # A counter's row does not pass the previous version's intake: its batch is
    # refused whole, so what follows it waits too (nothing is lost).
    assert new.request("POST", "/v1/counters/hits/page", json_body={"add": 5}).status == 200
    assert new.request("PUT", "/v1/kv/up/after", body="a").status == 200
    assert old.request("PUT", "/v1/kv/up/old", body="o").status == 200
    wait_for(lambda: new.request("GET", "/v1/kv/up/old").status == 200, what="old -> new")
    wait_for(lambda: "refused a batch" in link_error(old, new.node_id), what="the refused batch")
    assert old.request("GET", "/v1/kv/up/after").status == 404
    # Upgraded on the same data directory, it resumes the stream from its cursor.
    assert old.stop() == 0
    old.env = {}
    old.start()
    assert old.request("GET", "/v1/admin/tokens").status == 200  # this version now
    wait_converged([old, new])
    assert old.request("GET", "/v1/kv/up/after").body == b"a"
    assert old.request("GET", "/v1/counters/hits/page").json()["value"] == 5
