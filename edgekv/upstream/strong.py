"""Linearizable operations of strong namespaces, each one PostgreSQL transaction.

A strong write reads and locks the rows it touches, checks its conditions
against them, stamps each write later than the row it replaces (the HLC first
observes the stored stamps), and writes through the same last-writer-wins
statement as pushes. The transaction runs at SERIALIZABLE isolation, so a
create-only condition on an absent row cannot succeed twice; the connector
retries it when PostgreSQL reports a serialization failure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekv.store.store import Entry, Write
from edgekv.upstream.pg import PgConnection
from edgekv.upstream.sql import Statements
from edgekv_replication import HybridLogicalClock
from edgekv_replication.changes import Change

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
) -> list[Change]:
    """Check ``conditions`` and apply ``writes`` inside the caller's transaction.

    Returns the changes written (the last one per key), to be applied locally
    once the transaction commits. Raises :class:`PreconditionFailed`.
    """
    keys = list(dict.fromkeys([c.key for c in conditions] + [w.key for w in writes]))
    rows = {row["key"]: row for row in await conn.fetch(sql.read_for_update, ns, keys)}
    now = time.time()
    failures = [
        Failure(c.key, version)
        for c in conditions
        if not check(c, version := live_version(rows.get(c.key), now))
    ]
    if failures:
        raise PreconditionFailed(failures)
    if rows:
        # Stamp later than every stored write, whatever this PoP's clock says.
        clock.observe(max(int(row["hlc"]) for row in rows.values()))
    changes: dict[bytes, Change] = {}
    for write in writes:
        change = Change(
            ns, write.key, write.value, write.metadata, write.expiration, clock.now(), node_id
        )
        changes[write.key] = change
    if changes:
        await conn.executemany(sql.write, [c.state() for c in changes.values()])
    return list(changes.values())


async def read(conn: PgConnection, sql: Statements, ns: str, key: bytes) -> Entry | None:
    """The live entry of ``(ns, key)`` as PostgreSQL holds it now, or None."""
    row = await conn.fetchrow(sql.read, ns, key)
    if row is None or live_version(row, time.time()) is None:
        return None
    return Entry(
        bytes(row["value"]), row["metadata"], row["expiration"], row["hlc"], row["node"], 0
    )
