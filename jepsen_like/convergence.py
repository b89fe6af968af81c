"""How long the cluster takes, after a heal, to hold everywhere what any node held at the heal.

At the heal the harness joins every node's key-value rows (last writer wins
by ``(hlc, node)``): that is the state every node must reach. It then polls
each node's SQLite file until every row there is at least as new as the
joined one (a tombstone may instead be gone: collected once every node had
it). Newer writes made meanwhile do not delay the answer.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable

from jepsen_like.db import Db

Slot = tuple[str, bytes]
Row = tuple[int, int, bool]  # hlc, node, is a tombstone

_ROWS = "SELECT ns, key, hlc, node, value IS NULL FROM kv"


def kv_rows(db: Db, i: int) -> dict[Slot, Row]:
    """Node ``i``'s rows, tombstones included."""
    return {(ns, key): (hlc, node, bool(dead)) for ns, key, hlc, node, dead in db.read_db(i, _ROWS)}


def kv_join(db: Db) -> dict[Slot, Row]:
    """The last-writer-wins join of every node's rows."""
    joined: dict[Slot, Row] = {}
    for i in range(len(db.nodes)):
        for slot, row in kv_rows(db, i).items():
            if slot not in joined or row[:2] > joined[slot][:2]:
                joined[slot] = row
    return joined


def holds(rows: dict[Slot, Row], target: dict[Slot, Row]) -> bool:
    """Whether ``rows`` are at least as new as ``target`` everywhere."""
    for slot, wanted in target.items():
        have = rows.get(slot)
        if have is None:
            if not wanted[2]:
                return False
        elif have[:2] < wanted[:2]:
            return False
    return True


def converge_after_heal(
    db: Db,
    target: dict[Slot, Row],
    healed: float,
    now: Callable[[], float],
    give_up_at: float,
    give_up_after: float = 120.0,
) -> float | None:
    """Seconds from ``healed`` until every node holds ``target``; None if not by ``give_up_at``."""
    limit = min(give_up_at, healed + give_up_after)
    pending = list(range(len(db.nodes)))
    while now() < limit:
        with contextlib.suppress(sqlite3.Error):
            pending = [i for i in pending if not holds(kv_rows(db, i), target)]
        if not pending:
            return round(now() - healed, 3)
        time.sleep(0.05)
    return None
