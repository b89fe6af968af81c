"""What comes in over the NATS backbone goes through the one intake check, whole or not at all.

A test publishes straight into the backbone's stream, as a compromised or
broken node could: a batch with a change the API would refuse is refused
whole and stalls its origin (named in status), and other origins go on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from edgekv_replication.backbone import (
    INCARNATION_HEADER,
    NODE_HEADER,
    State,
    changes_subject,
    encode_state,
    message_id,
    state_subject,
)
from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch, encode
from testkit.cluster import stored_state
from testkit.nats_server import NatsServer
from testkit.processes import NodeProcess
from testkit.waiting import wait_for
from tests.intake_cases import good_change

STREAM = "IntakeTest"
BAD, GOOD = 0x0BAD0BAD0BAD0BAD, 0x600D600D600D600D


@pytest.fixture
def backbone_node(tmp_path: Path) -> Iterator[tuple[NodeProcess, NatsServer]]:
    server = NatsServer(tmp_path / "nats").start()
    node = NodeProcess(
        tmp_path / "us1",
        ["--region", "us", "--backbone", server.url, "--backbone-stream", STREAM],
    ).start()
    yield node, server
    node.kill()
    server.stop()


async def _publish(url: str, batches: list[tuple[int, Batch]]) -> None:
    nc = await nats.connect(url)
    try:
        now = int(time.time() * 1000)
        members = tuple(
            (origin, f"http://127.0.0.1:{9 + i}", f"o{i}", False, now, "eu")
            for i, origin in enumerate((BAD, GOOD))
        )
        # The node must know the origins (and their region) to take their batches.
        for origin in (BAD, GOOD):
            state = State(origin, "eu", None, None, members)
            await nc.publish(state_subject(STREAM, origin), encode_state(state))
        js = nc.jetstream()
        for origin, batch in batches:
            await js.publish(
                changes_subject(STREAM, "eu", origin),
                encode(batch),
                headers={
                    "Nats-Msg-Id": message_id(origin, 1, batch.upto),
                    NODE_HEADER: f"{origin:016x}",
                    INCARNATION_HEADER: f"{1:016x}",
                },
            )
    finally:
        await nc.close()


def _change(key: bytes, seq: int, origin: int) -> Change:
    return good_change("ns", key, seq=seq, node=origin)


@pytest.mark.slow
async def test_a_bad_batch_is_refused_whole_and_stalls_only_its_origin(
    backbone_node: tuple[NodeProcess, NatsServer],
) -> None:
    node, server = backbone_node
    wait_for(lambda: _backbone(node)["state"] == "up", 20, "backbone up")
    bad = _change(b"ok-but-in-a-bad-batch", 1, BAD), _change(b"..", 2, BAD)
    await _publish(
        server.url,
        [
            (BAD, Batch(0, 2, bad, 0, 2, 1)),
            (BAD, Batch(2, 3, (_change(b"after-the-bad-one", 3, BAD),), 0, 3, 1)),
            (GOOD, Batch(0, 1, (_change(b"good", 1, GOOD),), 0, 1, 1)),
        ],
    )
    wait_for(lambda: _keys(node) == {b"good"}, 20, "the good origin's change applied")
    # Origins are consumed independently: the good one may land before the bad
    # batch is even read, so wait for the refusal rather than look once.
    wait_for(
        lambda: "refused a backbone batch" in str(_backbone(node)["last_error"]),
        20,
        "the bad batch refused",
    )
    error = str(_backbone(node)["last_error"])
    assert f"refused a backbone batch of {BAD:016x} (seq 1..2)" in error
    assert "invalid_key" in error
    # Nothing of the bad batch, and nothing after it from that origin (stalled there).
    wait_for(lambda: "refused a backbone batch" in "".join(node.output), 10, "logged")
    assert _keys(node) == {b"good"}
    assert node.request("GET", "/healthz").status == 200


def _backbone(node: NodeProcess) -> dict[str, object]:
    document = json.loads(node.request("GET", "/v1/cluster/status").body)
    backbone: dict[str, object] = document["backbone"]
    return backbone


def _keys(node: NodeProcess) -> set[bytes]:
    return {row[1] for row in stored_state(node)}
