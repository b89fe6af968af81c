"""One node's SQLite database: its directory, connections, migrations and the writer.

The generic half of the store (like datasette's ``Database``): it knows
nothing of keys, documents or peers. Opening locks the data directory,
migrates the schema (:mod:`edgekv.store.schema`), reads the node's identity
and clock from ``node_state`` and starts the single group-commit
:class:`~edgekv.store.writer.Writer`. Reads run on the caller's thread
through a read-only connection; in WAL mode they never wait for the writer.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from edgekv.store.datadir import (
    DataDirError,
    DataDirLock,
    refuse_emptied_database,
    remove_stale_snapshots,
)
from edgekv.store.faults import StorageHealth, is_corruption
from edgekv.store.schema import migrate
from edgekv.store.writer import Writer
from edgekv_replication import HybridLogicalClock, new_node_id

DB_FILENAME = "edgekv.db"
log = logging.getLogger(__name__)

_NODE_STATE = (
    "SELECT node_id, incarnation, created_ms, hlc, seq, clean_shutdown FROM node_state WHERE id = 1"
)
_OPENED = "UPDATE node_state SET clean_shutdown = 0 WHERE id = 1"
_CLOSED = "UPDATE node_state SET clean_shutdown = 1 WHERE id = 1"


class NodeIdentity(NamedTuple):
    """The identity a database is created with."""

    node_id: int
    incarnation: int
    created_ms: int


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode, WAL journal, with ``synchronous`` durability."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open ``path`` to read only, beside the node that writes it (another process)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _after_unclean_shutdown(
    conn: sqlite3.Connection, hlc: int, max_clock_offset_ms: int
) -> tuple[int, int]:
    """Start a new incarnation and move the clock past anything possibly lost.

    With ``synchronous=normal`` the last commits before a power loss may be
    gone: their seqs will be reused and their stamps could be too. Peers would
    then skip the reused seqs, so the log becomes a new incarnation (peers
    re-sync it from zero) and the clock jumps past every stamp that could
    have been issued: the clock only runs ahead of the wall clock by observing
    remote stamps, and those are at most ``max_clock_offset_ms`` ahead.
    """
    incarnation = new_node_id()
    wall_ms = time.time_ns() // 1_000_000
    hlc = max(hlc, (wall_ms + max_clock_offset_ms + 1) << 16)
    conn.execute("UPDATE node_state SET incarnation = ?, hlc = ? WHERE id = 1", (incarnation, hlc))
    return incarnation, hlc


class Database:
    """The database file of one node, its write and read connections, its writer and clock."""

    def __init__(
        self,
        data_dir: str | Path,
        synchronous: str,
        max_clock_offset_ms: int,
        wall_clock_ms: Callable[[], int] | None,
        allow_new_node: bool,
        invalidate: Callable[[Iterable[tuple[str, bytes]]], None],
    ) -> None:
        """Open (creating and migrating if needed) the database in ``data_dir``.

        The directory is locked for as long as the database is open, and a
        zero-byte database is refused unless ``allow_new_node``
        (:mod:`edgekv.store.datadir`); a database too damaged to open raises
        :class:`DataDirError` naming the file. ``invalidate`` is the read
        cache's: the writer calls it with the keys of each commit.
        ``wall_clock_ms`` is the wall clock the node's stamps read (None: the
        system clock).
        """
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_FILENAME
        self._lock = DataDirLock(directory)
        self.health = StorageHealth(self.path)
        """Damage found in the database file, and its background check."""
        try:
            refuse_emptied_database(self.path, allow_new_node)
            remove_stale_snapshots(self.path)
            self._open(synchronous, max_clock_offset_ms, wall_clock_ms, invalidate)
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            if not is_corruption(exc):
                raise
            raise DataDirError(
                f"the database file {self.path} is damaged and cannot be opened ({exc}). "
                "Move the data directory away and start empty to re-sync from the peers, "
                "or restore a backup."
            ) from exc
        except BaseException:
            self._lock.release()
            raise

    def _open(
        self,
        synchronous: str,
        max_clock_offset_ms: int,
        wall_clock_ms: Callable[[], int] | None,
        invalidate: Callable[[Iterable[tuple[str, bytes]]], None],
    ) -> None:
        write_conn = connect(self.path, synchronous)
        migrate(write_conn)
        node_id, incarnation, created_ms, hlc, seq, clean = write_conn.execute(
            _NODE_STATE
        ).fetchone()
        self.clean = bool(clean)
        """The last process closed the database (no commit can have been lost)."""
        self.recovered = not clean and synchronous != "full"
        """Opened after an unclean stop that may have lost the last commits."""
        if self.recovered:
            incarnation, hlc = _after_unclean_shutdown(write_conn, hlc, max_clock_offset_ms)
        write_conn.execute(_OPENED)
        self.identity = NodeIdentity(node_id, incarnation, created_ms)
        self.clock = (
            HybridLogicalClock(hlc)
            if wall_clock_ms is None
            else HybridLogicalClock(hlc, wall_clock_ms)
        )
        self.writer = Writer(write_conn, self.clock, seq, invalidate=invalidate)
        self.reader = connect(self.path, synchronous)
        self.reader.execute("PRAGMA query_only = ON")

    def read_all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the read connection (tests and tools inspect with it)."""
        return list(self.reader.execute(sql, params).fetchall())

    def size_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(path.stat().st_size for path in (self.path, wal) if path.exists())

    def close(self) -> None:
        """Commit queued writes, record the clean shutdown, close and unlock the directory."""
        self.health.stop_check()
        try:
            self.writer.close(final_sql=_CLOSED)
        except sqlite3.Error as exc:
            # A full disk: the next start treats this stop as unclean, which is safe.
            log.warning("could not record the clean shutdown of %s: %s", self.path, exc)
        finally:
            self.reader.close()
            self._lock.release()
