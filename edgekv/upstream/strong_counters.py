"""Counters of strong namespaces: adds and resets run atomically in PostgreSQL.

A strong counter is held in the same rows as any counter (one per node, see
:mod:`edgekv_replication.counters`), but every add and reset reads and writes
them in PostgreSQL holding the lock of one row, the counter's own key (a
placeholder, as multi-key transactions lock absent keys: never committed), so
adds take turns and each sees every earlier one: a bounded add
(``min``/``max``) is exact, as a quota needs. No advisory lock: the SQL stays
what PostgreSQL-compatible engines take. The row written comes back to the
PoP like any strong write and reaches the other PoPs through the upstream's
log. A strong read (``?consistency=strong``) reads the rows in one statement,
without the lock: every add commits its row whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edgekv.store.crdts import RowTooLarge
from edgekv.store.pg.connection import PgConnection
from edgekv.store.pg.statements import Statements
from edgekv.upstream.strong import InvalidUpstreamRow
from edgekv_replication import HybridLogicalClock, counters
from edgekv_replication.changes import Change
from edgekv_replication.intake import Limits, Refused, check_change
from edgekv_replication.session import stamp_too_far_ahead

Plan = Callable[[list[counters.Contribution], int, float], tuple[counters.Row, int | None, int]]
"""Given the rows, a fresh stamp and the time: this node's new row, its expiration, the value."""


async def run(
    conn: PgConnection,
    sql: Statements,
    clock: HybridLogicalClock,
    node_id: int,
    ns: str,
    key: bytes,
    plan: Plan,
    limits: Limits,
    max_ahead_ms: int,
) -> tuple[Change, int]:
    """Lock the counter, read its rows, write this node's row as ``plan`` says.

    Returns the change written and the counter's value after it. Whatever
    ``plan`` raises (an overflow, a bound) rolls the transaction back.
    """
    change_ns = counters.counter_ns(ns)
    async with conn.transaction():
        # The counter's key itself (its rows carry a suffix): a row to lock, dropped below.
        await conn.execute(sql.placeholders, change_ns, [key])
        await conn.fetch(sql.read_for_update, change_ns, [key])
        rows = []
        for change, contribution in await _rows(conn, sql, change_ns, key, limits):
            if not stamp_too_far_ahead(change.hlc, clock.wall_ms(), max_ahead_ms):
                clock.observe(change.hlc)  # this write is stamped after every row it read
            rows.append(contribution)
        stamp = clock.now()
        row, expiration, value = plan(rows, stamp, time.time())
        stored = counters.encode_row(row)
        if len(stored) > counters.MAX_ROW_BYTES:  # what no peer's intake would take
            raise RowTooLarge(f"the counter's row would be {len(stored)} bytes")
        written = Change(
            change_ns,
            counters.row_key(key, node_id),
            stored,
            None,
            expiration,
            stamp,
            node_id,
        )
        await conn.execute(sql.write, *written.state())
        await conn.execute(sql.drop_placeholders, change_ns, [key])
    return written, value


async def read(
    conn: PgConnection, sql: Statements, ns: str, key: bytes, limits: Limits
) -> tuple[int, tuple[int, int] | None]:
    """The counter's value and version (None: no row) as PostgreSQL holds it now.

    No lock: one statement reads one snapshot, and every add and reset commits
    its row in one transaction, so the value is the one after the latest
    committed write -- what ``?consistency=strong`` promises.
    """
    rows = [c for _, c in await _rows(conn, sql, counters.counter_ns(ns), key, limits)]
    if not rows:
        return 0, None
    return counters.value_of(rows, time.time()), counters.version_of(rows)


async def _rows(
    conn: PgConnection, sql: Statements, change_ns: str, key: bytes, limits: Limits
) -> list[tuple[Change, counters.Contribution]]:
    """The counter's rows in PostgreSQL, each held to intake's limits (else InvalidUpstreamRow)."""
    low, high = counters.rows_range(key)
    found = []
    for record in await conn.fetch(sql.counter_rows, change_ns, low, high):
        change = Change(
            change_ns,
            bytes(record["key"]),
            bytes(record["value"]),
            record["metadata"],
            record["expiration"],
            record["hlc"],
            record["node"],
        )
        try:
            check_change(change, limits)
        except Refused as refused:
            raise InvalidUpstreamRow(
                f"the upstream counter row ({change_ns!r}, {change.key[:64]!r}) is invalid "
                f"({refused.code}: {refused.message}); it must be repaired in PostgreSQL"
            ) from None
        _, origin = counters.split_row_key(change.key)
        assert change.value is not None
        found.append(
            (
                change,
                counters.Contribution(
                    origin, counters.decode_row(change.value), change.hlc, change.expiration
                ),
            )
        )
    return found
