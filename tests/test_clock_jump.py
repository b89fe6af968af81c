"""A node whose wall clock jumps ahead: it says so, and its writes are not held for the jump.

Real ``edgekv serve`` processes; node A's clock is stepped through
``--test-clock-offset-file`` and SIGUSR1 (docs/design.md, "Clock safety").
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.cluster import stored_state, wait_converged
from testkit.processes import NodeProcess
from testkit.waiting import wait_for

HOUR_MS = 3_600_000
MAX_OFFSET_MS = 500  # the default max_clock_offset
SECRET = ["--cluster-secret", "clock-jump-secret"]


def status(node: NodeProcess) -> dict[str, Any]:
    answer: dict[str, Any] = node.request("GET", "/v1/cluster/status").json()
    return answer


def step_clock(node: NodeProcess, offset_file: Path, offset_ms: int) -> None:
    """Set ``node``'s test clock offset and tell it to re-read it."""
    offset_file.write_text(str(offset_ms))
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGUSR1)


def metric(node: NodeProcess, name: str) -> float | None:
    text = node.request("GET", "/metrics").body.decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def all_linked(nodes: list[NodeProcess]) -> bool:
    return all(
        [m["state"] for m in status(n)["members"]] == ["up"] * (len(nodes) - 1) for n in nodes
    )


def member(node: NodeProcess, of: NodeProcess) -> dict[str, Any]:
    """``node``'s status row for the member ``of``."""
    return next(m for m in status(node)["members"] if m["node_id"] == of.node_id)


def stamp_of(node: NodeProcess, key: bytes) -> int:
    stamp: int = next(row[5] for row in stored_state(node) if row[1] == key)
    return stamp


@pytest.mark.slow
def test_a_clock_jump_ahead_is_reported_and_its_writes_reach_peers_at_once(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    offset_file = tmp_path / "a.clock"
    offset_file.write_text("0")
    a = start_node("a", [*SECRET, "--test-clock-offset-file", str(offset_file)])
    b = start_node("b", [*SECRET, "--peer", a.url])
    c = start_node("c", [*SECRET, "--peer", a.url])
    nodes = [a, b, c]
    wait_for(lambda: all_linked(nodes), what="every node linked to every other")
    wait_for(lambda: status(a)["node"]["clock_ahead_ms"] is not None, what="A heard its peers")
    assert status(a)["node"]["clock_ahead_ms"] < MAX_OFFSET_MS

    step_clock(a, offset_file, HOUR_MS)
    # A says its clock runs ahead, and by how much: status, metrics and log.
    wait_for(lambda: status(a)["node"]["clock_ahead_ms"] > HOUR_MS - 5_000, what="A ahead")
    assert status(a)["node"]["clock_ahead_ms"] < HOUR_MS + 5_000
    ahead_metric = metric(a, "edgekv_clock_ahead_ms")
    assert ahead_metric is not None
    assert ahead_metric > HOUR_MS - 5_000
    wait_for(
        lambda: any("clock is" in line and "ahead of its peers" in line for line in a.output),
        what="A's log line",
    )
    # The peers see A's true offset (and A sees theirs) in their member rows.
    wait_for(
        lambda: all(member(n, a)["clock_offset_ms"] > HOUR_MS - 5_000 for n in (b, c)),
        what="peers see A's offset",
    )
    wait_for(
        lambda: all(m["clock_offset_ms"] < -(HOUR_MS - 5_000) for m in status(a)["members"]),
        what="A sees its peers' offsets",
    )

    assert a.request("PUT", "/v1/kv/jump/k", body=b"first").status == 200
    assert a.request("PUT", "/v1/kv/jump/k1", body=b"while ahead").status == 200
    assert stamp_of(a, b"k1") >> 16 < member(b, a)["last_contact_ms"] + HOUR_MS // 2

    step_clock(a, offset_file, 0)
    wait_for(lambda: status(a)["node"]["clock_ahead_ms"] < MAX_OFFSET_MS, what="A back")
    assert a.request("PUT", "/v1/kv/jump/k", body=b"second").status == 200
    assert a.request("PUT", "/v1/kv/jump/k2", body=b"after").status == 200

    # Both writes reach the peers promptly: none is held for the hour.
    for peer in (b, c):

        def arrived(peer: NodeProcess = peer) -> bool:
            return peer.request("GET", "/v1/kv/jump/k2").status == 200

        wait_for(arrived, timeout=10, what="k2 at a peer")
        assert peer.request("GET", "/v1/kv/jump/k1").body == b"while ahead"
        assert status(peer)["node"]["held_changes"] == 0
    state = wait_converged(nodes, timeout=10)
    # The later write at A to the same key wins everywhere.
    assert [row[2] for row in state if row[1] == b"k"] == [b"second"]
    for node in nodes:
        assert node.request("GET", "/v1/kv/jump/k").body == b"second"
    assert stamp_of(a, b"k") > stamp_of(a, b"k1")
    # Nothing A stamped is far ahead: its stamps are within the allowed offset.
    stamps_ahead = status(a)["node"]["stamps_ahead_ms"]
    assert stamps_ahead is not None
    assert stamps_ahead <= MAX_OFFSET_MS + 1_000
    assert metric(a, "edgekv_stamps_ahead_ms") is not None


def test_stamps_issued_ahead_before_any_peer_is_heard_are_reported(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    offset_file = tmp_path / "a.clock"
    offset_file.write_text(str(HOUR_MS))
    a = start_node("a", [*SECRET, "--test-clock-offset-file", str(offset_file)])
    # Alone, A cannot know its clock is wrong: it stamps by it and says nothing.
    assert status(a)["node"]["clock_ahead_ms"] is None
    assert metric(a, "edgekv_clock_ahead_ms") is None
    assert a.request("PUT", "/v1/kv/early/k", body=b"stamped an hour ahead").status == 200
    step_clock(a, offset_file, 0)
    b = start_node("b", [*SECRET, "--peer", a.url])
    wait_for(lambda: all_linked([a, b]), what="linked")
    # The stamps A issued an hour ahead cannot be taken back: A says so, and
    # B holds them (the clock-safety rule) rather than letting them win for an hour.
    wait_for(
        lambda: (status(a)["node"]["stamps_ahead_ms"] or 0) > HOUR_MS - 5_000,
        what="A reports its stamps ahead",
    )
    assert status(a)["node"]["clock_ahead_ms"] < MAX_OFFSET_MS
    wait_for(lambda: status(b)["node"]["held_changes"] == 1, what="B holds the early write")
    wait_for(
        lambda: any("stamps are" in line and "peers hold" in line for line in a.output),
        what="A's log line",
    )
