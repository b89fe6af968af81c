"""Counters and sets, sans-IO: the merges are joins, and no acknowledged update is lost.

Replicas here are what a node holds of one counter or set (its rows by node,
or by member and node); :func:`merge_replicas` is what delivering the rows of
one replica to another does. The model test runs random adds, removes and
resets at three replicas with random, partial exchanges, and checks the end
state against the specification: a counter's value is the sum of the adds no
reset had seen; a member is present when one of its adds was seen by no
remove of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv_replication import counters, orsets
from edgekv_replication.changes import Change
from edgekv_replication.counters import Contribution, Row
from edgekv_replication.intake import Limits, Refused, check_changes, check_namespace

NOW = 1_000_000.0

# -- arbitrary replicas: the merge is a join over any rows ----------------------------

counter_rows = st.builds(
    Row,
    st.integers(0, 3),
    st.integers(0, 50),
    st.integers(0, 50),
    st.dictionaries(
        st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 50))
    ),
)
counter_replicas = st.dictionaries(
    st.integers(0, 3),
    st.builds(Contribution, st.integers(0, 3), counter_rows, st.integers(0, 5)),
).map(lambda d: {node: c.__class__(node, c.row, c.hlc, c.expiration) for node, c in d.items()})

set_rows = st.builds(
    orsets.Row, st.integers(0, 5), st.dictionaries(st.integers(0, 3), st.integers(0, 5))
)
set_replicas = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "é"]), st.integers(0, 3)),
    st.tuples(set_rows, st.integers(0, 5)),
).map(
    lambda d: {
        (member, node): orsets.MemberRow(member, node, row, hlc)
        for (member, node), (row, hlc) in d.items()
    }
)


@given(counter_replicas, counter_replicas)
def test_counter_merge_is_commutative(a: counters.Replica, b: counters.Replica) -> None:
    assert counters.merge_replicas(a, b) == counters.merge_replicas(b, a)


@given(counter_replicas, counter_replicas, counter_replicas)
def test_counter_merge_is_associative(
    a: counters.Replica, b: counters.Replica, c: counters.Replica
) -> None:
    left = counters.merge_replicas(counters.merge_replicas(a, b), c)
    assert left == counters.merge_replicas(a, counters.merge_replicas(b, c))


@given(counter_replicas)
def test_counter_merge_is_idempotent(a: counters.Replica) -> None:
    assert counters.merge_replicas(a, a) == a


@given(set_replicas, set_replicas)
def test_set_merge_is_commutative(a: orsets.Replica, b: orsets.Replica) -> None:
    assert orsets.merge_replicas(a, b) == orsets.merge_replicas(b, a)


@given(set_replicas, set_replicas, set_replicas)
def test_set_merge_is_associative(a: orsets.Replica, b: orsets.Replica, c: orsets.Replica) -> None:
    left = orsets.merge_replicas(orsets.merge_replicas(a, b), c)
    assert left == orsets.merge_replicas(a, orsets.merge_replicas(b, c))


@given(set_replicas)
def test_set_merge_is_idempotent(a: orsets.Replica) -> None:
    assert orsets.merge_replicas(a, a) == a


# -- reachable replicas against the specification ----------------------------------------


@dataclass
class Replica:
    """One node: its counter and set rows, its clock, and the operations it has seen."""

    node: int
    counter: counters.Replica = field(default_factory=dict)
    members: orsets.Replica = field(default_factory=dict)
    clock: int = 0
    seen: set[int] = field(default_factory=set)

    def stamp(self) -> int:
        self.clock += 1
        return self.clock * 8 + self.node  # unique and growing per node, as HLC stamps are


@dataclass
class Spec:
    """What happened, by operation id: adds and what each reset or remove had seen."""

    amounts: dict[int, int] = field(default_factory=dict)
    member_adds: dict[int, str] = field(default_factory=dict)
    covered: set[int] = field(default_factory=set)


operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "reset", "set_add", "set_remove", "retire", "sync"]),
        st.integers(0, 2),
        st.integers(0, 2),
        st.integers(-5, 9),
        st.sampled_from(["x", "y", "z"]),
    ),
    max_size=40,
)


def _apply(
    replicas: list[Replica], spec: Spec, op: tuple[str, int, int, int, str], op_id: int
) -> None:
    kind, i, j, amount, member = op
    r = replicas[i]
    if kind == "add":
        row, expiration, _ = counters.plan_add(
            list(r.counter.values()), r.node, amount, r.stamp(), NOW
        )
        r.counter[r.node] = Contribution(r.node, row, r.clock * 8 + r.node, expiration)
        spec.amounts[op_id] = amount
        r.seen.add(op_id)
    elif kind == "reset":
        row = counters.plan_reset(list(r.counter.values()), r.node, r.stamp())
        r.counter[r.node] = Contribution(r.node, row, r.clock * 8 + r.node)
        spec.covered |= {o for o in r.seen if o in spec.amounts}
    elif kind == "set_add":
        rows = [row for (m, _), row in r.members.items() if m == member]
        stamp = r.stamp()
        r.members[(member, r.node)] = orsets.MemberRow(
            member, r.node, orsets.plan_add(rows, r.node, stamp), stamp
        )
        spec.member_adds[op_id] = member
        r.seen.add(op_id)
    elif kind == "set_remove":
        rows = [row for (m, _), row in r.members.items() if m == member]
        removed = orsets.plan_remove(rows, r.node)
        if removed is not None:
            r.members[(member, r.node)] = orsets.MemberRow(member, r.node, removed, r.stamp())
        spec.covered |= {o for o in r.seen if spec.member_adds.get(o) == member}
    elif kind == "retire":
        rows = [row for (m, _), row in r.members.items() if m == member]

        def settled(row: orsets.MemberRow) -> bool:  # what the ack rule guarantees
            slot = (row.member, row.node)
            return all(
                slot in other.members and other.members[slot].hlc >= row.hlc for other in replicas
            )

        new = orsets.retired(rows, r.node, settled)
        if new is not None:
            # A tombstone is a row with nothing in it; collecting it later removes nothing.
            r.members[(member, r.node)] = orsets.MemberRow(member, r.node, new, r.stamp())

        def counter_settled(row: Contribution) -> bool:
            return all(
                row.node in other.counter and other.counter[row.node].hlc >= row.hlc
                for other in replicas
            )

        stamp = r.stamp()
        retired_row = counters.retired(list(r.counter.values()), r.node, stamp, counter_settled)
        if retired_row is not None:
            own = r.counter[r.node]
            r.counter[r.node] = Contribution(r.node, retired_row, stamp, own.expiration)
    else:  # deliver i's rows to j
        target = replicas[j]
        target.counter = counters.merge_replicas(target.counter, r.counter)
        target.members = orsets.merge_replicas(target.members, r.members)
        target.seen |= r.seen
        target.clock = max(target.clock, r.clock)


@given(operations)
def test_replicas_converge_to_the_specified_value_and_members(
    ops: list[tuple[str, int, int, int, str]],
) -> None:
    replicas = [Replica(node) for node in range(3)]
    spec = Spec()
    for op_id, op in enumerate(ops):
        _apply(replicas, spec, op, op_id)
    for i in range(3):  # every replica's rows reach every other
        for j in range(3):
            _apply(replicas, spec, ("sync", i, j, 0, ""), -1)
    expected_value = sum(a for o, a in spec.amounts.items() if o not in spec.covered)
    expected_members = sorted(
        {m for o, m in spec.member_adds.items() if o not in spec.covered}, key=str.encode
    )
    for r in replicas:
        assert counters.value_of(r.counter.values(), NOW) == expected_value
        assert orsets.replica_members(r.members) == expected_members


# -- expiration, limits, rows ----------------------------------------------------------------


def test_an_expired_contribution_no_longer_counts_and_the_next_add_starts_over() -> None:
    row, expiration, value = counters.plan_add([], 1, 5, 100, NOW, expiration=int(NOW) + 60)
    assert (value, expiration) == (5, int(NOW) + 60)
    rows = [Contribution(1, row, 100, expiration)]
    assert counters.value_of(rows, NOW + 61) == 0
    row2, expiration2, value2 = counters.plan_add(rows, 1, 2, 200, NOW + 61)
    assert (value2, expiration2, row2.epoch) == (2, None, 200)


def test_a_reset_outlives_its_row_expiring() -> None:
    a, _, _ = counters.plan_add([], 1, 5, 100, NOW)
    reset = counters.plan_reset([Contribution(1, a, 100)], 2, 101)
    rows = [Contribution(1, a, 100), Contribution(2, reset, 101, int(NOW) - 1)]
    assert counters.value_of(rows, NOW) == 0


@pytest.mark.parametrize(
    ("start", "amount"),
    [(2**63 - 1, 1), (0, 2**63), (-(2**63) + 1, -2), (0, -(2**63) - 1)],
)
def test_an_add_past_64_bits_is_refused_never_wrapped(start: int, amount: int) -> None:
    rows = []
    if start:
        row, _, _ = counters.plan_add([], 1, start, 100, NOW)
        rows = [Contribution(1, row, 100)]
    with pytest.raises(counters.CounterOverflow):
        counters.plan_add(rows, 2, amount, 200, NOW)


def test_bounds_refuse_and_report_the_value() -> None:
    with pytest.raises(counters.CounterOutOfBounds) as raised:
        counters.check_bounds(-1, 0, 0, None)
    assert raised.value.value == 0
    counters.check_bounds(0, 1, 0, 10)


@given(counter_rows)
def test_counter_rows_round_trip(row: Row) -> None:
    assert counters.decode_row(counters.encode_row(row)) == row


@given(set_rows)
def test_set_rows_round_trip(row: orsets.Row) -> None:
    assert orsets.decode_row(orsets.encode_row(row)) == row


@given(
    st.text(min_size=1, max_size=20).filter(lambda m: "\x00" not in m), st.integers(0, 2**63 - 1)
)
def test_set_row_keys_round_trip_and_list_in_member_order(member: str, node: int) -> None:
    try:
        member.encode()
    except UnicodeEncodeError:
        return
    key = orsets.row_key(b"k", member, node)
    assert orsets.split_row_key(key) == (b"k", member, node)
    low, high = orsets.rows_range(b"k")
    assert low <= key < high
    longer = orsets.row_key(b"k", member + "a", node)
    assert key < longer  # a member's rows come before those of members it prefixes


@pytest.mark.parametrize("member", ["", "a\x00b", "x" * 513, "\ud800", 5])
def test_bad_members_are_refused(member: object) -> None:
    with pytest.raises(orsets.BadMember):
        orsets.check_member(member)


def _member(node: int, added: int, removed: dict[int, int] | None = None) -> orsets.MemberRow:
    return orsets.MemberRow("m", node, orsets.Row(added, removed or {}), max(added, 1))


def test_a_covered_add_is_retired_and_an_empty_row_goes() -> None:
    rows = [_member(1, 5), _member(2, 0, {1: 5})]
    assert orsets.retired(rows, 1, lambda r: True) is orsets.RETIRE
    # The remover keeps its removal while the covered add is held anywhere it may be.
    assert orsets.retired(rows, 2, lambda r: True) is None
    retired_rows = [_member(1, 0), _member(2, 0, {1: 5})]
    assert orsets.retired(retired_rows, 2, lambda r: False) is None
    assert orsets.retired(retired_rows, 2, lambda r: True) is orsets.RETIRE


def test_an_add_made_after_a_removal_is_not_retired() -> None:
    rows = [_member(1, 9), _member(2, 0, {1: 5})]
    assert orsets.retired(rows, 1, lambda r: True) is None
    assert orsets.retired(rows, 2, lambda r: True) is orsets.RETIRE
    assert orsets.is_present(rows)


# -- intake of replicated rows ------------------------------------------------------------

_LIMITS = Limits(max_key_bytes=16)
_GOOD_COUNTER = Change(
    "@ctr:ns", counters.row_key(b"k", 7), counters.encode_row(Row(1, 2, 0)), None, None, 9, 7
)
_GOOD_MEMBER = Change(
    "@set:ns", orsets.row_key(b"k", "m", 7), orsets.encode_row(orsets.Row(9)), None, None, 9, 7
)


def test_valid_counter_and_set_rows_pass_intake() -> None:
    check_changes([_GOOD_COUNTER, _GOOD_MEMBER, _GOOD_MEMBER._replace(value=None)], _LIMITS)
    check_changes([_GOOD_COUNTER._replace(expiration=5)], _LIMITS)


@pytest.mark.parametrize(
    "change",
    [
        _GOOD_COUNTER._replace(node=8),  # a row is written by its own node only
        _GOOD_MEMBER._replace(node=8),
        _GOOD_COUNTER._replace(value=None),  # counters are never deleted
        _GOOD_COUNTER._replace(value=b'{"e":1,"p":-1,"n":0}'),
        _GOOD_COUNTER._replace(value=b'{"e":1,"p":1,"n":0,"x":1}'),
        _GOOD_COUNTER._replace(value=b"[1]"),
        _GOOD_COUNTER._replace(value=b'{"e":1,"p":1,"n":0,"b":{"7":[1,1,1]}}'),
        _GOOD_COUNTER._replace(metadata="{}"),
        _GOOD_COUNTER._replace(ns="@ctr:bad ns"),
        _GOOD_COUNTER._replace(key=counters.row_key(b"k" * 17, 7)),
        _GOOD_COUNTER._replace(key=b"k\xff00000000000000AB", node=0xAB),
        _GOOD_COUNTER._replace(key=b"k"),
        _GOOD_MEMBER._replace(expiration=5),
        _GOOD_MEMBER._replace(key=b"k\xff" + b"m" * 513 + b"\x00" + b"%016x" % 7),
        _GOOD_MEMBER._replace(key=b"k\xff\xc3\x00" + b"%016x" % 7),  # not UTF-8
        _GOOD_MEMBER._replace(value=b'{"a":1,"r":{"zz":1}}'),
        _GOOD_MEMBER._replace(value=b'{"a":' + b"9" * 30 + b"}"),
        _GOOD_COUNTER._replace(value=b'{"e":1,"p":1,"n":0,"p":9}'),  # a name twice
        _GOOD_MEMBER._replace(value=b'{"a":1,"a":2}'),
        _GOOD_COUNTER._replace(ns="@ctr:.."),
        _GOOD_MEMBER._replace(ns="@set:."),
    ],
)
def test_bad_rows_from_peers_or_the_upstream_are_refused(change: Change) -> None:
    with pytest.raises(Refused):
        check_changes([_GOOD_COUNTER, change], _LIMITS)


def test_a_node_before_counters_refuses_their_rows_whole() -> None:
    # What an older peer does with a batch holding a counter row: its intake knows no
    # "@ctr:" namespace (invalid_namespace), so it refuses the batch and pulls it again.
    with pytest.raises(Refused) as refused:
        check_namespace(_GOOD_COUNTER.ns)
    assert refused.value.code == "invalid_namespace"


def test_a_fully_reset_row_starts_a_new_epoch_and_spent_resets_go() -> None:
    a = Contribution(1, Row(10, 5, 1), 100)
    w = Contribution(2, Row(20, 0, 0, {1: (10, 5, 1)}), 200)
    rebased = counters.retired([a, w], 1, 300, lambda c: True)
    assert rebased == Row(300, 0, 0)
    # The reset of epoch 10 stays until a's new epoch is settled everywhere.
    a2 = Contribution(1, rebased, 300)
    assert counters.retired([a2, w], 2, 400, lambda c: False) is None
    assert counters.retired([a2, w], 2, 400, lambda c: True) == Row(20, 0, 0)
    # A row with adds no reset removed keeps its epoch.
    assert (
        counters.retired([Contribution(1, Row(10, 6, 1), 100), w], 1, 300, lambda c: True) is None
    )


def test_a_row_a_reset_removed_whole_starts_over_so_the_pop_can_add_again() -> None:
    top = 2**63 - 1
    a, _, _ = counters.plan_add([], 1, top, 100, NOW)
    # Reset at another node that had seen every add of node 1, then delivered to it.
    reset = counters.plan_reset([Contribution(1, a, 100)], 2, 101)
    rows = [Contribution(1, a, 100), Contribution(2, reset, 101)]
    again, _, value = counters.plan_add(rows, 1, 1, 102, NOW)
    assert (again.epoch, again.p, value) == (102, 1, 1)
    # Every replica agrees, whichever of node 1's rows it holds with the reset.
    assert counters.value_of([Contribution(1, again, 102), Contribution(2, reset, 101)], NOW) == 1
    # A row a reset removed only in part keeps its epoch (its other adds still count).
    partial = counters.plan_add(rows[:1], 1, -1, 103, NOW)[0]
    assert counters.plan_add([Contribution(1, partial, 103), rows[1]], 1, -1, 104, NOW)[0] == Row(
        100, top, 2
    )
    with pytest.raises(counters.CounterOverflow):
        counters.plan_add([Contribution(1, a, 100)], 1, -(2**63), 105, NOW)
