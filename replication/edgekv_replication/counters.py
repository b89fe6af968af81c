"""PN-counters as last-writer-wins rows, one per node: state, value, add, reset, merge.

A counter ``(ns, key)`` is held as one row per node that wrote to it, each an
ordinary change of the change log (namespace ``"@ctr:" + ns``, key
``key + 0xff + node as 16 hex digits``). A node's row is written by that node
only, with its own stamps, so last-writer-wins on the row keeps that node's
newest state: merging two replicas row by row is a join (commutative,
associative, idempotent; :func:`merge_replicas`), and every transport that
carries key-value changes -- peer streams, relays, the PostgreSQL upstream --
carries counters unchanged.

A row holds (JSON, :func:`encode_row`):

``e``  the row's epoch: the stamp at which this node started the row.
``p``  the sum of this node's positive adds since the epoch.
``n``  the sum of the magnitudes of its negative adds since the epoch.
``b``  the resets this node made: for each row it had seen,
       ``origin -> [epoch, p, n]`` as it saw them.

The value is the sum over rows of ``(p - bp) - (n - bn)``, where ``(bp, bn)``
is the largest reset seen for that row's epoch in any row (p and n only grow
within an epoch, so the largest is the latest).

**Reset is observed-remove.** A reset removes exactly the contributions the
resetting node had seen; adds it had not seen (concurrent ones, at other PoPs)
survive it. So after a reset at A concurrent with an add of 5 at B, every PoP
ends with 5.

**Expiration** (``ttl``/``expiration`` on an add) belongs to each node's
contribution: an add that carries one sets it (the later of the old and the
new), an add without one leaves it. A contribution that has expired counts
no more (its resets still do), and an add to it starts a new epoch from zero.
A counter none of whose rows is live reads as 0. Rows are collected only once
every row of the counter has expired longer ago than the tombstone horizon, and
every member has acknowledged them (the tombstones' rule): a rate limiter's
counter per window goes away by itself.

**Limits.** An add is from ``-(2**63 - 1)`` to ``2**63 - 1`` (a row holds
magnitudes, and ``2**63`` is not one of 63 bits). ``p`` and ``n`` of one row,
and the value an add answers, stay within a signed 64-bit integer; an add
that would leave that range is refused (:class:`CounterOverflow`, HTTP 400
``counter_overflow``), never wrapped. A row every add of which a reset has
removed starts a new epoch from zero at its next add (as :func:`retired`
does), so a reset gives a PoP its whole range back.

Standard library only: the client's :class:`LocalReader` decodes rows too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgekv_replication.json_objects import unique_object

CTR_NS_PREFIX = "@ctr:"
"""Namespace prefix of counter rows (``@`` and ``:`` are never in a key-value namespace)."""
SEPARATOR = b"\xff"
"""Between a counter's key and a row's node: no UTF-8 key holds this byte."""
ROW_SUFFIX_BYTES = 17
"""A row key is the counter's key followed by these: the separator and 16 hex digits."""
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
MAX_ROW_BYTES = 64 * 1024
"""A counter row is at most this long: room for resets of about a thousand nodes."""
_ROWS = json.JSONDecoder(object_pairs_hook=unique_object)
"""Rows from peers are held to what this node writes (json.dumps): no name twice."""


class CounterOverflow(ValueError):
    """An add that would take a counter (or a node's sums) beyond 64 bits."""


class CounterOutOfBounds(ValueError):
    """A bounded add (``min``/``max``, strong namespaces) that would leave its bounds."""

    def __init__(self, value: int, message: str) -> None:
        """``value``: the counter's value, unchanged."""
        super().__init__(message)
        self.value = value


class BadRow(ValueError):
    """A counter row that does not decode as one (refused at intake)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One node's state of one counter."""

    epoch: int = 0
    p: int = 0
    n: int = 0
    resets: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    """origin -> (epoch, p, n) of the origin's row as this node reset it."""


# -- names --------------------------------------------------------------------------


def counter_ns(ns: str) -> str:
    """The change namespace of a counter in ``ns``."""
    return CTR_NS_PREFIX + ns


def is_counter_ns(ns: str) -> bool:
    """Whether ``ns`` (a change's namespace) holds counter rows."""
    return ns.startswith(CTR_NS_PREFIX)


def row_key(key: bytes, node: int) -> bytes:
    """The change key of ``node``'s row of counter ``key``."""
    return key + SEPARATOR + b"%016x" % node


def split_row_key(raw: bytes) -> tuple[bytes, int]:
    """``(counter key, node)`` of a row's change key; BadRow if it is not one."""
    key, sep, node = raw.rpartition(SEPARATOR)
    if not sep or not key or len(node) != 16 or SEPARATOR in key:
        raise BadRow("a counter row's key is the counter key, 0xff and 16 hex digits")
    try:
        text = node.decode("ascii")
        if text != text.lower():
            raise ValueError(text)
        return key, int(text, 16)
    except ValueError:
        raise BadRow("a counter row's node is 16 lowercase hex digits") from None


def rows_range(key: bytes) -> tuple[bytes, bytes]:
    """The change keys ``[low, high)`` of every row of counter ``key``."""
    return key + SEPARATOR, key + SEPARATOR + SEPARATOR


# -- rows as bytes ------------------------------------------------------------------


_DECODED: dict[bytes, Row] = {}
"""Rows by their stored bytes, as encoded here or decoded before: a counter's rows are
read on every add, and most of them (other PoPs', and this one's own last state) were
seen already. Rows are immutable; the dict is bounded (oldest out first)."""
_DECODED_MAX = 8192


def _remember(value: bytes, row: Row) -> None:
    if len(_DECODED) >= _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[value] = row


def encode_row(row: Row) -> bytes:
    """A row's stored value: compact JSON, resets by origin in hex."""
    if row.resets:
        body: dict[str, Any] = {"e": row.epoch, "p": row.p, "n": row.n}
        body["b"] = {f"{origin:016x}": list(base) for origin, base in sorted(row.resets.items())}
        value = json.dumps(body, separators=(",", ":")).encode()
    else:  # the common row, as json.dumps writes it, without its machinery
        value = b'{"e":%d,"p":%d,"n":%d}' % (row.epoch, row.p, row.n)
    _remember(value, row)
    return value


def _u63(value: object) -> int:
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        raise BadRow(f"expected a non-negative 63-bit integer, got {value!r}")
    return value


def decode_row(value: bytes) -> Row:
    """The row a stored value holds; BadRow if it is not a counter row."""
    known = _DECODED.get(value)
    if known is not None:
        return known
    row = _decode_row(value)
    _remember(value, row)
    return row


def _decode_row(value: bytes) -> Row:
    if len(value) > MAX_ROW_BYTES:
        raise BadRow(f"a counter row of {len(value)} bytes; the limit is {MAX_ROW_BYTES}")
    try:
        body = _ROWS.decode(value.decode("utf-8"))
    except (ValueError, RecursionError):
        raise BadRow("a counter row is JSON") from None
    if type(body) is not dict or not {"e", "p", "n"} <= body.keys() <= {"e", "p", "n", "b"}:
        raise BadRow("a counter row is an object of e, p, n and b")
    resets: dict[int, tuple[int, int, int]] = {}
    raw_resets = body.get("b", {})
    if type(raw_resets) is not dict:
        raise BadRow("a counter row's resets are an object")
    for origin, base in raw_resets.items():
        if len(origin) != 16 or type(base) is not list or len(base) != 3:
            raise BadRow("a reset is origin (16 hex digits) -> [epoch, p, n]")
        try:
            node = int(origin, 16)
        except ValueError:
            raise BadRow("a reset's origin is 16 hex digits") from None
        resets[node] = (_u63(base[0]), _u63(base[1]), _u63(base[2]))
    return Row(_u63(body["e"]), _u63(body["p"]), _u63(body["n"]), resets)


# -- the state of a counter ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    """A row as a replica holds it: the decoded state, its stamp and expiration."""

    node: int
    row: Row
    hlc: int
    expiration: int | None = None


def is_live(contribution: Contribution, now: float) -> bool:
    """Whether a row's adds still count at ``now`` (epoch seconds)."""
    return contribution.expiration is None or contribution.expiration > now


def _bases(rows: Iterable[Contribution]) -> dict[tuple[int, int], tuple[int, int]]:
    """(origin, epoch) -> the largest reset (p, n) any row made of it."""
    bases: dict[tuple[int, int], tuple[int, int]] = {}
    for contribution in rows:
        for origin, (epoch, p, n) in contribution.row.resets.items():
            seen = bases.get((origin, epoch), (0, 0))
            bases[(origin, epoch)] = (max(seen[0], p), max(seen[1], n))
    return bases


def value_of(rows: Iterable[Contribution], now: float) -> int:
    """The counter's value at ``now``: live rows' adds less the largest reset seen of them.

    Resets count from every row, live or expired: a reset must outlive the
    contributions it removed.
    """
    rows = list(rows)
    bases = _bases(rows)
    total = 0
    for c in rows:
        if not is_live(c, now):
            continue
        bp, bn = bases.get((c.node, c.row.epoch), (0, 0))
        # A reset never exceeds what it saw, and p/n only grow: no negative parts.
        total += max(0, c.row.p - bp) - max(0, c.row.n - bn)
    return total


def version_of(rows: Iterable[Contribution]) -> tuple[int, int]:
    """The newest stamp ``(hlc, node)`` among the rows: the counter's version."""
    return max(((c.hlc, c.node) for c in rows), default=(0, 0))


def observed_resets(rows: Iterable[Contribution]) -> dict[int, tuple[int, int, int]]:
    """What a reset made now records: every row's ``(epoch, p, n)`` by origin."""
    return {c.node: (c.row.epoch, c.row.p, c.row.n) for c in rows}


# -- writes -----------------------------------------------------------------------


def plan_add(
    rows: list[Contribution],
    node: int,
    amount: int,
    stamp: int,
    now: float,
    expiration: int | None = None,
) -> tuple[Row, int | None, int]:
    """The new row of ``node`` after adding ``amount``; its expiration; the new value.

    ``rows`` is every row of the counter this node holds; ``stamp`` a fresh
    stamp of ``node`` (the epoch of a new row, or of a row whose adds had
    expired). Raises :class:`CounterOverflow` when a sum or the value would
    leave 64 bits.
    """
    if not -INT64_MAX <= amount <= INT64_MAX:
        raise CounterOverflow(f"an add is from -(2**63 - 1) to 2**63 - 1, got {amount}")
    own = next((c for c in rows if c.node == node), None)
    if own is None:
        row, own_expiration = Row(epoch=stamp), None
    elif not is_live(own, now):
        # Its adds have expired: counting on from them would bring them back.
        row, own_expiration = Row(stamp, 0, 0, own.row.resets), None
    elif (own.row.p or own.row.n) and _bases(rows).get((node, own.row.epoch)) == (
        own.row.p,
        own.row.n,
    ):
        # A reset (here or at any PoP) removed every add of the row: it counts
        # nothing, and no reset can remove more of it, so it starts over from
        # zero -- or a PoP that once added 2**63 - 1 could never add again.
        row, own_expiration = Row(stamp, 0, 0, own.row.resets), own.expiration
    else:
        row, own_expiration = own.row, own.expiration
    p, n = (row.p + amount, row.n) if amount >= 0 else (row.p, row.n - amount)
    if p > INT64_MAX or n > INT64_MAX:
        raise CounterOverflow(
            "this PoP's increments (or decrements) of the counter would pass 2**63 - 1"
        )
    if expiration is not None:
        own_expiration = expiration if own_expiration is None else max(own_expiration, expiration)
    new = Row(row.epoch, p, n, row.resets)
    others = [c for c in rows if c.node != node]
    value = value_of([*others, Contribution(node, new, stamp, own_expiration)], now)
    if not INT64_MIN <= value <= INT64_MAX:
        raise CounterOverflow(f"the counter's value would leave 64 bits ({value})")
    return new, own_expiration, value


def plan_reset(rows: list[Contribution], node: int, stamp: int) -> Row:
    """The new row of ``node`` after a reset: every contribution it holds is removed."""
    own = next((c for c in rows if c.node == node), None)
    row = own.row if own is not None else Row(epoch=stamp)
    # What it holds of a row is never older than what it reset of it before (a
    # row's state only grows here); resets of rows it no longer holds stay.
    resets = {**row.resets, **observed_resets(rows)}
    return Row(row.epoch, row.p, row.n, resets)


def check_bounds(value: int, before: int, low: int | None, high: int | None) -> None:
    """Raise :class:`CounterOutOfBounds` if ``value`` (after an add) leaves ``[low, high]``."""
    if low is not None and value < low:
        raise CounterOutOfBounds(before, f"the add would take the counter to {value}, below {low}")
    if high is not None and value > high:
        raise CounterOutOfBounds(before, f"the add would take the counter to {value}, above {high}")


def retired(
    rows: list[Contribution], node: int, stamp: int, settled: Callable[[Contribution], bool]
) -> Row | None:
    """``node``'s row with the resets no longer needed taken out; None: unchanged.

    How reset contributions are collected, by each node on its own row:

    * a row whose every add a reset has removed (its ``p`` and ``n`` equal the
      largest reset of its epoch) starts a new epoch at ``stamp``, from zero:
      it counts nothing either way, and no reset refers to the new epoch;
    * a reset of another row's epoch is dropped once that row here is of a
      newer epoch (or gone: collected with its expired counter) and ``settled``
      -- every member has acknowledged it, the tombstones' rule -- so no replica
      still holds the old epoch's adds for the reset to remove.
    """
    own = next((c for c in rows if c.node == node), None)
    if own is None:
        return None
    row = own.row
    if (row.p or row.n) and _bases(rows).get((node, row.epoch)) == (row.p, row.n):
        row = Row(stamp, 0, 0, row.resets)
    by_node = {c.node: c for c in rows}
    kept = {}
    for origin, base in row.resets.items():
        target = by_node.get(origin)
        if target is None:
            continue
        if target.row.epoch == base[0] or not settled(target):
            kept[origin] = base
    new = Row(row.epoch, row.p, row.n, kept)
    return None if new == own.row else new


# -- replicas, for properties and the simulated network -------------------------------

Replica = dict[int, Contribution]
"""One replica's rows of one counter, by node."""


def merge_replicas(a: Replica, b: Replica) -> Replica:
    """Row by row, the newer stamp wins (one writer per row: its newest state)."""
    merged = dict(a)
    for node, theirs in b.items():
        mine = merged.get(node)
        if mine is None or (theirs.hlc, encode_row(theirs.row)) > (mine.hlc, encode_row(mine.row)):
            merged[node] = theirs
    return merged
