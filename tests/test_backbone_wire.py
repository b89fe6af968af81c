"""The backbone's wire rules without I/O: origins of messages, state reports, the floor."""

from __future__ import annotations

import msgpack
import pytest

from edgekv_replication.backbone import (
    INCARNATION_HEADER,
    NODE_HEADER,
    StampFloor,
    State,
    changes_subject,
    decode_state,
    encode_state,
    origin_of,
)
from edgekv_replication.envelope import EnvelopeError


def test_a_message_must_come_from_the_node_of_its_subject() -> None:
    subject = changes_subject("S", 0xABC)
    headers = {NODE_HEADER: f"{0xABC:016x}", INCARNATION_HEADER: f"{7:016x}"}
    assert origin_of(subject, headers) == (0xABC, 7)
    with pytest.raises(EnvelopeError, match="another node's subject"):
        origin_of(changes_subject("S", 0xDEF), headers)
    with pytest.raises(EnvelopeError, match="headers"):
        origin_of(subject, {NODE_HEADER: "abc"})
    with pytest.raises(EnvelopeError, match="headers"):
        origin_of(subject, None)


def test_state_reports_round_trip_and_refuse_odd_shapes() -> None:
    state = State(5, "eu", 100, 90, ((5, "http://a:1", "a", False, 1, "eu"),))
    assert decode_state(encode_state(state)) == state
    for body in (
        [2, 5, "eu", 1, 1, []],  # another version
        [1, 0, "eu", 1, 1, []],  # node 0
        [1, 5, "e u", 1, 1, []],  # region outside the alphabet
        [1, 5, "eu", -1, 1, []],
        [1, 5, "eu", 1, 1, [[5, "ftp://a", "a", False, 1, "eu"]]],  # not http(s)
        [1, 5, "eu", 1, 1, [[5, "http://a", "a", False, 1]]],  # five fields
    ):
        with pytest.raises(EnvelopeError):
            decode_state(msgpack.packb(body))
    with pytest.raises(EnvelopeError):
        decode_state(b"\xc1")


def test_the_floor_waits_for_every_member_to_publish_and_catch_up() -> None:
    floor = StampFloor(margin_ms=100)
    # A member that never reported holds the floor.
    assert floor.observe(1000, [(500, 900), (None, None)]) is None
    # Everyone has published up to 500 (seen at 1000), but not caught up since.
    assert floor.observe(1000, [(500, 900), (600, 950)]) is None
    assert floor.observe(1050, [(700, 1000), (800, 1099)]) is None
    # Both caught up past 1000 + margin: what was published by 1000 counts.
    assert floor.observe(1200, [(900, 1150), (950, 1101)]) == 500
    assert floor.observe(1400, [(1300, 1400), (1350, 1390)]) == 900
    assert floor.floor == 900
