"""Peer state: cursors, acknowledgements, re-sync, members, strong namespaces, held changes.

What a node remembers about the others: how far each peer's log is applied
here (``peer_cursors``) and how far each has acknowledged this node's
(``peer_acks``), who must re-sync after tombstones were collected without
them (``resync_required``, ``node_state.purged_seq``), the member table,
the namespaces learned strong from the upstream, and remote changes held
back for clock skew (``held_changes``; :mod:`edgekv.store.merge` fills and
drains it).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import TypeVar

from edgekv.store.writer import Txn, Writer
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.session import PeerCursor

T = TypeVar("T")
MemberRow = tuple[int, str, str, bool, int, str]
"""A member: ``(node, url, name, removed, updated_ms, region)`` (region "": not known)."""

SAVE_CURSOR = (
    "INSERT INTO peer_cursors (peer, incarnation, cursor, updated_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (peer) DO UPDATE SET incarnation = excluded.incarnation,"
    " cursor = excluded.cursor, updated_ms = excluded.updated_ms"
)
HOLD = (
    "INSERT INTO held_changes (ns, key, value, metadata, expiration, hlc, node)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_MEMBERS = "SELECT node, url, name, removed, updated_ms, region FROM members ORDER BY node"


class CursorMoved(RuntimeError):
    """A batch's transaction found the peer's cursor elsewhere than it continues from."""


_CURSOR = "SELECT incarnation, cursor FROM peer_cursors WHERE peer = ?"


def check_cursor(conn: sqlite3.Connection, peer: int, after: PeerCursor) -> None:
    """Raise :class:`CursorMoved` unless ``peer``'s saved cursor is ``after``."""
    row = conn.execute(_CURSOR, (peer,)).fetchone()
    # Another incarnation's log (or none yet) is read from zero.
    saved = row[1] if row and row[0] == after.incarnation else 0
    if saved != after.cursor:
        raise CursorMoved(
            f"cursor of peer {peer:x} is at {saved}, the batch continues from {after.cursor}"
        )


# A tombstone, or an entry expired before the horizon -- but a counter's row only
# once every row of its counter has (a live counter still counts its resets): the
# rows of counter K are the keys K + 0xff + 16 hex digits (edgekv_replication.counters).
_COLLECTABLE = (
    " FROM kv WHERE seq <= ?1 AND hlc < ?2 AND (value IS NULL OR (expiration < ?3"
    " AND (substr(ns, 1, 5) != '@ctr:' OR NOT EXISTS (SELECT 1 FROM kv AS row"
    " WHERE row.ns = kv.ns AND row.key >= substr(kv.key, 1, length(kv.key) - 16)"
    " AND row.key < CAST(substr(kv.key, 1, length(kv.key) - 16) || x'ff' AS BLOB)"
    " AND (row.expiration IS NULL OR row.expiration >= ?3)))))"
)


class PeerState:
    """What one node remembers about its peers."""

    def __init__(self, reader: sqlite3.Connection, writer: Writer) -> None:
        """Read with ``reader``, write with ``writer``."""
        self._reader = reader
        self.writer = writer
        self._settled_cursors = {peer: c.cursor for peer, c in self.peer_cursors().items()}

    def peer_cursor(self, peer: int) -> PeerCursor:
        """Return how far the log of ``peer`` has been applied here."""
        row = self._reader.execute(_CURSOR, (peer,)).fetchone()
        return PeerCursor(*row) if row else PeerCursor()

    def peer_cursors(self) -> dict[int, PeerCursor]:
        """Return every peer's cursor."""
        rows = self._reader.execute("SELECT peer, incarnation, cursor FROM peer_cursors")
        return {peer: PeerCursor(inc, cur) for peer, inc, cur in rows}

    def members(self) -> list[MemberRow]:
        """Every member row, removed ones included, by node id."""
        rows = self._reader.execute(_MEMBERS)
        return [(int(n), str(u), str(nm), bool(r), int(t), str(rg)) for n, u, nm, r, t, rg in rows]

    def upsert_members(self, members: Sequence[MemberRow]) -> asyncio.Future[None]:
        """Insert or replace member rows (last writer by ``updated_ms`` decided by the caller)."""

        def op(txn: Txn) -> None:
            txn.conn.executemany(
                "INSERT INTO members (node, url, name, removed, updated_ms, region)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (node) DO UPDATE SET url = excluded.url, name = excluded.name,"
                " removed = excluded.removed, updated_ms = excluded.updated_ms,"
                " region = excluded.region",
                [(n, u, nm, int(r), t, rg) for n, u, nm, r, t, rg in members],
            )

        return self.writer.submit(op)

    def save_peer_cursor(
        self, peer: int, cursor: PeerCursor, after: PeerCursor | None = None
    ) -> asyncio.Future[None]:
        """Persist ``peer``'s cursor alone (a batch that carried no changes).

        ``after``: as in :meth:`edgekv.store.merge.Merger.apply_changes`.
        """

        def op(txn: Txn) -> None:
            if after is not None:
                check_cursor(txn.conn, peer, after)
            txn.conn.execute(
                SAVE_CURSOR, (peer, cursor.incarnation, cursor.cursor, txn.clock.wall_ms())
            )

        return self.settling(self.writer.submit(op), peer, cursor)

    def settled_cursor(self, peer: int) -> int:
        """How far ``peer``'s log is applied *and visible to every read here*.

        The cursor in SQLite moves at the commit, a moment before the writer
        clears the read cache of what that commit changed; this one moves
        only after, so a read that waited for it cannot meet a stale cached
        entry (read-your-writes across PoPs rests on it).
        """
        return self._settled_cursors.get(peer, 0)

    def settling(
        self, future: asyncio.Future[T], peer: int, cursor: PeerCursor
    ) -> asyncio.Future[T]:
        """Move ``settled_cursor(peer)`` to ``cursor`` once ``future`` succeeds."""

        def settled(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._settled_cursors[peer] = cursor.cursor

        future.add_done_callback(settled)
        return future

    def purged_seq(self) -> int:
        """The seq of the newest collected tombstone (0: none collected)."""
        return int(self._reader.execute("SELECT purged_seq FROM node_state").fetchone()[0])

    def peer_acks(self) -> dict[int, tuple[int, int]]:
        """How far each peer has acknowledged this node's log: ``(cursor, updated_ms)``."""
        rows = self._reader.execute("SELECT peer, cursor, updated_ms FROM peer_acks")
        return {peer: (cursor, updated) for peer, cursor, updated in rows}

    def record_ack(self, peer: int, cursor: int) -> asyncio.Future[None]:
        """Remember that ``peer`` has applied this node's log up to ``cursor``."""

        def op(txn: Txn) -> None:
            txn.conn.execute(
                "INSERT INTO peer_acks (peer, cursor, updated_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor,"
                " updated_ms = excluded.updated_ms",
                (peer, cursor, txn.clock.wall_ms()),
            )

        return self.writer.submit(op)

    def collect_tombstones(
        self, acked_seq: int, before_hlc: int, left_out: Sequence[int] = ()
    ) -> asyncio.Future[int]:
        """Delete tombstones (and long-expired entries) every peer has acknowledged.

        A row goes when its seq is at most ``acked_seq`` (every member has
        applied it) and its stamp is older than ``before_hlc`` (the horizon).
        Returns how many rows went; ``purged_seq`` remembers the newest.
        ``left_out``: members whose acknowledgements were not waited for (out
        of contact past the horizon); if anything goes, they must re-sync
        (:meth:`must_resync`).
        """

        def op(txn: Txn) -> int:
            expired_before = (before_hlc >> COUNTER_BITS) // 1000
            where, params = _COLLECTABLE, (acked_seq, before_hlc, expired_before)
            newest = txn.conn.execute("SELECT max(seq)" + where, params).fetchone()[0]
            if newest is None:
                return 0
            txn.conn.execute(
                "INSERT INTO collected_origins (node, hlc) SELECT node, max(hlc)"
                + where
                + " GROUP BY node ON CONFLICT (node) DO UPDATE SET hlc = max(hlc, excluded.hlc)",
                params,
            )
            deleted = txn.conn.execute("DELETE" + where, params).rowcount
            txn.conn.execute(
                "UPDATE node_state SET purged_seq = max(purged_seq, ?) WHERE id = 1", (newest,)
            )
            txn.conn.executemany(
                "INSERT INTO resync_required (peer, purged_seq) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE"
                " SET purged_seq = max(purged_seq, excluded.purged_seq)",
                [(peer, newest) for peer in left_out],
            )
            return int(deleted)

        return self.writer.submit(op)

    def must_resync(self, peer: int, cursor: int) -> bool:
        """Whether ``peer``, resuming this node's log after ``cursor``, must re-sync in full.

        It must when it may hold keys whose tombstones were collected here
        without it: its cursor is behind a collected tombstone, or it was left
        out of a collection. Cursor 0 alone (a new replica's full sync) is
        fine: the full sync brings every current row.
        """
        if 0 < cursor < self.purged_seq():
            return True
        row = self._reader.execute(
            "SELECT purged_seq FROM resync_required WHERE peer = ?", (peer,)
        ).fetchone()
        return row is not None and cursor < row[0]

    def strong_namespaces(self) -> set[str]:
        """Namespaces this node has learned are strong (from the upstream)."""
        return {row[0] for row in self._reader.execute("SELECT ns FROM strong_namespaces")}

    def remember_strong_namespaces(self, names: Sequence[str]) -> asyncio.Future[None]:
        """Record namespaces declared strong, so they stay strong after a restart."""

        def op(txn: Txn) -> None:
            txn.conn.executemany(
                "INSERT OR IGNORE INTO strong_namespaces (ns, learned_ms) VALUES (?, ?)",
                [(name, txn.clock.wall_ms()) for name in names],
            )

        return self.writer.submit(op)

    def held_count(self) -> int:
        """How many remote changes are held back for clock skew."""
        return int(self._reader.execute("SELECT count(*) FROM held_changes").fetchone()[0])
