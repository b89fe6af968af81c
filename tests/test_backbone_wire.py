"""The backbone's wire rules without I/O: origins of messages, state reports, the floor."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv_replication.backbone import (
    INCARNATION_HEADER,
    NODE_HEADER,
    Consumption,
    StampFloor,
    State,
    Take,
    all_changes,
    changes_subject,
    consumer_name,
    decode_state,
    encode_state,
    origin_of,
)
from edgekv_replication.envelope import EnvelopeError
from edgekv_replication.intake import REGION


def test_a_message_must_come_from_the_node_of_its_subject() -> None:
    subject = changes_subject("S", "eu", 0xABC)
    headers = {NODE_HEADER: f"{0xABC:016x}", INCARNATION_HEADER: f"{7:016x}"}
    assert origin_of(subject, headers) == (0xABC, 7)
    with pytest.raises(EnvelopeError, match="another node's subject"):
        origin_of(changes_subject("S", "eu", 0xDEF), headers)
    with pytest.raises(EnvelopeError, match="headers"):
        origin_of(subject, {NODE_HEADER: "abc"})
    with pytest.raises(EnvelopeError, match="headers"):
        origin_of(subject, None)


@given(st.from_regex(REGION, fullmatch=True))
def test_a_region_is_one_subject_token_and_its_filter_takes_only_its_nodes(region: str) -> None:
    """The consumer of one region never gets another's changes, whatever dots the names hold."""
    subject = changes_subject("S", region, 0xABC)
    assert subject.split(".")[2:] == [region.replace(".", "~"), f"{0xABC:016x}"]
    assert _matches(all_changes("S"), subject)
    assert _matches(changes_subject("S", region), subject)
    for other in (region + ".x", "x." + region, region + "x", region.replace(".", "_")):
        if other != region:
            assert not _matches(changes_subject("S", other), subject)
    name = consumer_name(0xABC, region)
    assert not set(name) & set(". *>"), name  # a valid durable name
    assert name != consumer_name(0xABC, region + "x") != consumer_name(0xABD, region)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching for patterns with ``*`` tokens only."""
    tokens, wanted = subject.split("."), pattern.split(".")
    return len(tokens) == len(wanted) and all(
        w in ("*", t) for w, t in zip(wanted, tokens, strict=True)
    )


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


@settings(max_examples=200, deadline=None)
@given(
    ends=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
    redelivered=st.sets(st.integers(min_value=0, max_value=11), max_size=4),
)
def test_batches_of_an_origin_apply_in_order_however_they_arrive(
    ends: list[int], order: random.Random, redelivered: set[int]
) -> None:
    """Delivered in any order (redeliveries after newer ones), each applies once, in order."""
    bounds, upto = [], 0
    for step in ends:
        bounds.append((upto, upto + step))
        upto += step
    queue = list(range(len(bounds)))
    order.shuffle(queue)
    queue += [i for i in redelivered if i < len(bounds)]  # delivered again, later
    consumption = Consumption(me=1, region="us")
    cursor, applied = 0, []
    for _ in range(10_000):
        if not queue:
            break
        i = queue.pop(0)
        after, end = bounds[i]
        take = consumption.decide(7, "eu", after, end, cursor)
        if take is Take.APPLY:
            applied.append(i)
            cursor = end
        elif take is Take.HOLD:
            queue.append(i)  # handed back: comes again later
    assert applied == list(range(len(bounds)))
    assert cursor == upto


def test_own_regional_and_unknown_origins() -> None:
    consumption = Consumption(me=1, region="us")
    assert consumption.decide(1, "us", 0, 5, 0) is Take.SKIP  # own
    assert consumption.decide(2, "us", 0, 5, 0) is Take.SKIP  # in-region: peers bring it
    assert consumption.decide(3, None, 0, 5, 0) is Take.HOLD  # region not known yet
    assert consumption.decide(3, None, 5, 9, 0) is Take.HOLD  # and everything after it
    assert consumption.decide(3, "eu", 0, 5, 0) is Take.APPLY  # known now
    consumption.refused(4, 5)
    assert consumption.decide(4, "eu", 5, 9, 0) is Take.HOLD  # behind a refused batch
