"""A change marker of a WAL-mode SQLite database in about 0.1 us: its WAL-index header.

In WAL mode a commit becomes visible to readers exactly when the writer
rewrites the header of the WAL-index (the ``-shm`` file every connection maps
into memory, https://www.sqlite.org/walformat.html): a new ``mxFrame``, frame
checksum and change counter, or new salts when the log restarts. SQLite's own
readers compare this header to decide whether their page cache is stale, and
``PRAGMA data_version`` is derived from that comparison -- but the pragma is a
statement with its own read transaction (about 1 us from Python, 0.6 of a
point read), while comparing the 48 header bytes from our own read-only
mapping costs a slice of a bytes object. Equal bytes: nothing was committed.
Different bytes: something was committed, or the log was checkpointed and
restarted (a false alarm, which only costs a re-read).

The mapping stays the file the node writes while the caller's connection is
open: SQLite keeps a shared lock on the ``-shm`` file for a connection's
whole life once it has read, and the file is deleted or reinitialised only by
a connection that gets that lock exclusively. So :func:`open_header` must be
called after the connection has read once, and the marker is valid as long
as that connection stays open. Where any of this does not hold (not WAL mode,
no ``-shm`` file, an unknown WAL-index version), :func:`open_header` returns
None and the caller uses ``PRAGMA data_version``.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
from pathlib import Path

# The WAL-index header: two copies of 48 bytes; the writer updates the second, then
# the first, so a commit is complete when the first copy has changed.
HEADER_SIZE = 48
# iVersion of the WAL-index format since SQLite 3.7.0; any other value: unknown format.
WALINDEX_VERSION = 3007000


class WalHeader:
    """The first copy of a database's WAL-index header, read from a read-only mapping."""

    def __init__(self, mapping: mmap.mmap) -> None:
        """Wrap ``mapping`` (at least :data:`HEADER_SIZE` bytes of the ``-shm`` file)."""
        self._map = mapping

    def marker(self) -> bytes:
        """The header's bytes now: equal to an earlier marker iff nothing was committed since."""
        return self._map[:HEADER_SIZE]

    def close(self) -> None:
        """Release the mapping."""
        self._map.close()


def open_header(conn: sqlite3.Connection, db_path: Path) -> WalHeader | None:
    """The WAL-index header of ``db_path``, whose connection ``conn`` has read once; or None."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return None
    try:
        fd = os.open(f"{db_path}-shm", os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < 2 * HEADER_SIZE:
            return None
        mapping = mmap.mmap(fd, 2 * HEADER_SIZE, access=mmap.ACCESS_READ)
    except OSError:
        return None
    finally:
        os.close(fd)  # the mapping keeps its own reference to the file
    # iVersion and isInit, in the writer's native byte order (the file never leaves the host).
    version, _, _, initialised = struct.unpack_from("=IIIB", mapping)
    if version != WALINDEX_VERSION or not initialised:
        mapping.close()
        return None
    return WalHeader(mapping)
