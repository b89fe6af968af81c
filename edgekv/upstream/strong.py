"""Linearizable operations of strong namespaces, each one PostgreSQL transaction.

The common cases are one statement each, which PostgreSQL runs as its own
transaction: an unconditional write stamps itself later than the stored row
inside the upsert (``GREATEST``), a compare-and-set is an ``UPDATE`` whose
``WHERE`` checks the version, and a create-only write is an upsert that only
overwrites an absent row. Concurrent statements on one row wait for each
other's row lock and then re-check their ``WHERE`` against the committed row.

A multi-key transaction locks the rows of every key it touches, in key order (so two
transactions never wait on each other in a cycle), checks its conditions
against them, stamps each write later than the row it replaces (the HLC first
observes the stored stamps), and writes through the same last-writer-wins
statement as pushes. An absent key is locked through a placeholder row (see
:attr:`~edgekv.store.pg.statements.Statements.placeholders`), so row locks alone
order every pair of conflicting transactions: READ COMMITTED suffices, and
transactions on different keys never abort each other as they would under
SERIALIZABLE's predicate locks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekv.store.kv import Entry, Write
from edgekv.store.pg.connection import PgConnection
from edgekv.store.pg.statements import Statements
from edgekv_replication import HybridLogicalClock
from edgekv_replication.changes import Change
from edgekv_replication.intake import Limits, Refused, check_change, check_stamp
from edgekv_replication.session import stamp_too_far_ahead

MUST_EXIST = "*"
"""``If-Match: *``: the key must hold a live value."""


@dataclass(frozen=True, slots=True)
class Condition:
    """What a strong write expects of one key before it runs."""

    key: bytes
    version: tuple[int, int] | None = None
    """The ``(hlc, node)`` the live entry must have (``If-Match``)."""
    exists: bool | None = None
    """True: the key must be live (``If-Match: *``); False: absent (``If-None-Match: *``)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A condition that did not hold, and the key's current version (None: absent)."""

    key: bytes
    current: tuple[int, int] | None


class InvalidUpstreamRow(Exception):
    """A PostgreSQL row breaks the limits every entry is held to: written there directly.

    Such a row is never handed to a client (its metadata would go into a
    response header, its stamp into this node's clock); the operation fails
    instead, and the operator repairs the row.
    """


class PreconditionFailed(Exception):
    """One or more conditions of a strong write did not hold; nothing was written."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        """Carry the failed conditions with the keys' current versions."""
        super().__init__(f"{len(failures)} condition(s) failed")
        self.failures = list(failures)


def live_version(row: Any, now_seconds: float) -> tuple[int, int] | None:
    """The ``(hlc, node)`` of a stored row if it reads as present, else None."""
    if row is None or row["value"] is None:
        return None
    expiration = row["expiration"]
    if expiration is not None and expiration <= now_seconds:
        return None
    return (int(row["hlc"]), int(row["node"]))


def check(condition: Condition, current: tuple[int, int] | None) -> bool:
    """Whether ``condition`` holds for a key whose live version is ``current``."""
    if condition.exists is not None and condition.exists != (current is not None):
        return False
    return condition.version is None or condition.version == current


async def run_write(
    conn: PgConnection,
    sql: Statements,
    clock: HybridLogicalClock,
    node_id: int,
    ns: str,
    writes: Sequence[Write],
    conditions: Sequence[Condition] = (),
    max_ahead_ms: int = 500,
) -> list[Change]:
    """Check ``conditions`` and apply ``writes`` atomically in PostgreSQL.

    ``max_ahead_ms`` (``max_clock_offset``): how far ahead of this node's
    clock a stored stamp may be for this node's clock to follow it.

    Returns the changes written (the last one per key), to be applied locally;
    raises :class:`PreconditionFailed` when a condition does not hold.
    Unconditional writes, and one condition on the one key written, take a
    single statement (one round trip, its own transaction); anything else
    runs in an explicit transaction.
    """
    latest = {w.key: w for w in writes}  # one statement may not touch a row twice
    if not conditions:
        pairs = [(ns, w) for w in latest.values()]
        return await upsert(conn, sql, clock, node_id, pairs, max_ahead_ms)
    if len(latest) == 1 and len(conditions) == 1 and conditions[0].key in latest:
        return await _conditional(
            conn, sql, clock, node_id, ns, writes[-1], conditions[0], max_ahead_ms
        )
    async with conn.transaction():
        return await _locked(
            conn, sql, clock, node_id, ns, list(latest.values()), conditions, max_ahead_ms
        )


def _upstream_stamp(ns: str, key: bytes, hlc: object) -> int:
    """``hlc`` as PostgreSQL returned it for ``(ns, key)``, if a valid stamp."""
    try:
        check_stamp(hlc, 0)
    except Refused as refused:
        raise InvalidUpstreamRow(_row_problem(ns, key, refused)) from None
    assert type(hlc) is int
    return hlc


def _row_problem(ns: str, key: bytes, refused: Refused) -> str:
    return (
        f"the upstream row ({ns!r}, {key[:64]!r}) is invalid ({refused.code}: {refused.message});"
        " it was written to PostgreSQL directly and must be repaired there"
    )


def _too_far_ahead(hlc: int, clock: HybridLogicalClock, max_ahead_ms: int) -> bool:
    # Following such a stamp would stamp every later write of this node far
    # ahead (at MAX_HLC: no later stamp at all, every write failing).
    return stamp_too_far_ahead(hlc, clock.wall_ms(), max_ahead_ms)


def _stamped(
    ns: str, write: Write, hlc: int, node_id: int, clock: HybridLogicalClock, max_ahead_ms: int
) -> Change:
    # The stored stamp may be ahead of ours (another PoP's clock): later writes here follow it,
    # unless it is too far ahead. It is committed: PostgreSQL keeps ordering that row's
    # writes (each is stamped past the stored one there), so it is applied here all the same.
    hlc = _upstream_stamp(ns, write.key, hlc)
    if not _too_far_ahead(hlc, clock, max_ahead_ms):
        clock.observe(hlc)
    return Change(ns, write.key, write.value, write.metadata, write.expiration, hlc, node_id)


async def upsert(
    conn: PgConnection,
    sql: Statements,
    clock: HybridLogicalClock,
    node_id: int,
    writes: Sequence[tuple[str, Write]],
    max_ahead_ms: int = 500,
) -> list[Change]:
    """Unconditional writes of ``(namespace, write)`` pairs (no key twice), one statement.

    Returns their changes in the order given.
    """
    ordered = sorted(writes, key=lambda item: (item[0], item[1].key))  # lock order
    rows = await conn.fetch(
        sql.strong_upsert,
        [ns for ns, _ in ordered],
        [w.key for _, w in ordered],
        [w.value for _, w in ordered],
        [w.metadata for _, w in ordered],
        [w.expiration for _, w in ordered],
        [clock.now() for _ in ordered],
        node_id,
    )
    stamps = {(row["ns"], bytes(row["key"])): int(row["hlc"]) for row in rows}
    return [_stamped(ns, w, stamps[ns, w.key], node_id, clock, max_ahead_ms) for ns, w in writes]


async def _conditional(
    conn: PgConnection,
    sql: Statements,
    clock: HybridLogicalClock,
    node_id: int,
    ns: str,
    write: Write,
    condition: Condition,
    max_ahead_ms: int,
) -> list[Change]:
    now = int(time.time())
    args = (ns, write.key, write.value, write.metadata, write.expiration, clock.now(), node_id)
    if condition.exists is False:
        hlc = await conn.fetchval(sql.create_only, *args, now)
    else:
        expected = condition.version or (None, None)
        hlc = await conn.fetchval(sql.compare_and_set, *args, *expected, now)
    if hlc is None:
        row = await conn.fetchrow(sql.read, ns, write.key)
        raise PreconditionFailed([Failure(write.key, live_version(row, now))])
    return [_stamped(ns, write, int(hlc), node_id, clock, max_ahead_ms)]


async def _locked(
    conn: PgConnection,
    sql: Statements,
    clock: HybridLogicalClock,
    node_id: int,
    ns: str,
    writes: Sequence[Write],
    conditions: Sequence[Condition],
    max_ahead_ms: int,
) -> list[Change]:
    """The general case, inside the caller's transaction: lock, check, write."""
    keys = sorted({c.key for c in conditions} | {w.key for w in writes})
    await conn.execute(sql.placeholders, ns, keys)
    rows = {row["key"]: row for row in await conn.fetch(sql.read_for_update, ns, keys)}
    now = time.time()
    failures = [
        Failure(c.key, version)
        for c in conditions
        if not check(c, version := live_version(rows.get(c.key), now))
    ]
    if failures:
        raise PreconditionFailed(failures)  # the transaction rolls back, placeholders too
    # Stamp later than every stored write, whatever this PoP's clock says -- within
    # max_clock_offset: a stamp further ahead is refused (the transaction rolls back).
    for key, row in rows.items():
        hlc = _upstream_stamp(ns, key, row["hlc"])
        if _too_far_ahead(hlc, clock, max_ahead_ms):
            raise InvalidUpstreamRow(
                _row_problem(ns, key, Refused("invalid_change", f"stamp {hlc} is far ahead"))
            )
        clock.observe(hlc)
    changes = [
        Change(ns, w.key, w.value, w.metadata, w.expiration, clock.now(), node_id) for w in writes
    ]
    await conn.executemany(sql.write, [c.state() for c in changes])
    if len(changes) < len(keys):  # keys only read by a condition
        written = {c.key for c in changes}
        await conn.execute(sql.drop_placeholders, ns, [k for k in keys if k not in written])
    return changes


async def read(
    conn: PgConnection, sql: Statements, ns: str, key: bytes, limits: Limits
) -> Entry | None:
    """The live entry of ``(ns, key)`` as PostgreSQL holds it now, or None.

    The row is held to ``limits`` (the API's, through the same checks as
    pulled rows); raises :class:`InvalidUpstreamRow` when it breaks one.
    """
    row = await conn.fetchrow(sql.read, ns, key)
    if row is None or live_version(row, time.time()) is None:
        return None
    value = bytes(row["value"])
    metadata, expiration, hlc, node = row["metadata"], row["expiration"], row["hlc"], row["node"]
    try:
        check_change(Change(ns, key, value, metadata, expiration, hlc, node), limits)
    except Refused as refused:
        raise InvalidUpstreamRow(_row_problem(ns, key, refused)) from None
    return Entry(value, metadata, expiration, hlc, node, 0)
