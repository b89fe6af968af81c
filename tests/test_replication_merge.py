"""Merge laws of the replication core, and the strictness of its envelope."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv_replication.changes import Change, is_live, merge_entries, wins
from edgekv_replication.envelope import (
    Batch,
    EnvelopeError,
    Hello,
    Welcome,
    decode,
    encode,
)

# Few distinct stamps and nodes, so ties and equal stamps actually occur.
states = st.builds(
    Change,
    ns=st.just("ns"),
    key=st.just(b"k"),
    value=st.one_of(st.none(), st.binary(max_size=4)),
    metadata=st.one_of(st.none(), st.sampled_from(['{"a":1}', '{"b":2}'])),
    expiration=st.one_of(st.none(), st.integers(0, 3)),
    hlc=st.integers(0, 3),
    node=st.integers(1, 3),
)


@given(states, states)
def test_merge_is_commutative(a: Change, b: Change) -> None:
    assert merge_entries(a, b) == merge_entries(b, a)


@given(states, states, states)
def test_merge_is_associative(a: Change, b: Change, c: Change) -> None:
    assert merge_entries(merge_entries(a, b), c) == merge_entries(a, merge_entries(b, c))


@given(states)
def test_merge_is_idempotent(a: Change) -> None:
    assert merge_entries(a, a) == a._replace(seq=0)


@given(states, states)
def test_wins_agrees_with_merge(a: Change, b: Change) -> None:
    assert (merge_entries(a, b) == b._replace(seq=0)) == (wins(b, a) or a.state() == b.state())


@given(states, st.integers(0, 4))
def test_an_expired_or_deleted_state_is_not_live(a: Change, now: int) -> None:
    expected = a.value is not None and (a.expiration is None or a.expiration > now)
    assert is_live(a, now) == expected


changes = st.builds(
    Change,
    ns=st.text(min_size=1, max_size=8),
    key=st.binary(min_size=1, max_size=8),
    value=st.one_of(st.none(), st.binary(max_size=16)),
    metadata=st.one_of(st.none(), st.text(max_size=8)),
    expiration=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    hlc=st.integers(0, 2**63 - 1),
    node=st.integers(0, 2**63 - 1),
    seq=st.integers(1, 100),
)


@given(st.lists(changes, max_size=5), st.integers(0, 2**40))
def test_batch_round_trips(items: list[Change], wall_ms: int) -> None:
    batch = Batch(0, 100, tuple(items), wall_ms)
    assert decode(encode(batch)) == batch


def test_hello_and_welcome_round_trip() -> None:
    hello = Hello(1, 2, "fra", "http://127.0.0.1:1", 5, 7)
    welcome = Welcome(3, 4, "ams", 9)
    assert decode(encode(hello)) == hello
    assert decode(encode(welcome)) == welcome


@given(st.binary(max_size=64))
def test_garbage_decodes_to_a_message_or_envelope_error_only(data: bytes) -> None:
    # Any other exception type would escape the peer handler as a 500.
    try:
        message = decode(data)
    except EnvelopeError:
        return
    assert isinstance(message, Hello | Welcome | Batch)


def test_truncated_batch_is_rejected_whole() -> None:
    data = encode(Batch(0, 2, (Change("ns", b"a", b"1", None, None, 5, 1, 1),), 0))
    for cut in range(len(data)):
        with pytest.raises(EnvelopeError):
            decode(data[:cut])


@pytest.mark.parametrize(
    "payload",
    [
        [2, 3, [0, 1, 0, []]],  # unknown version
        [1, 9, []],  # unknown kind
        [1, 3, [0, 1, 0, [["ns", b"k", b"v", None, None, -1, 1, 1]]]],  # negative hlc
        [1, 3, [0, 1, 0, [["ns", "k", b"v", None, None, 1, 1, 1]]]],  # key not bytes
        [1, 3, [0, 1, 0, [["ns", b"k", b"v", None, None, 1, 1, 5]]]],  # seq outside range
        [1, 3, [5, 1, 0, []]],  # ends before it starts
        [1, 3, [0, 1, 0, [["", b"k", b"v", None, None, 1, 1, 1]]]],  # empty namespace
        [1, 3, [0, 1, 0, [["ns", b"k", b"v", None, None, True, 1, 1]]]],  # bool as int
    ],
)
def test_malformed_messages_are_rejected(payload: object) -> None:
    with pytest.raises(EnvelopeError):
        decode(msgpack.packb(payload, use_bin_type=True))
