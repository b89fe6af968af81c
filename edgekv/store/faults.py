"""Storage faults: a full disk and a damaged database file.

SQLite reports both through result codes on ``sqlite3.Error``
(``sqlite_errorcode``): ``SQLITE_FULL`` for a full disk, ``SQLITE_CORRUPT``
and ``SQLITE_NOTADB`` for a damaged file. A full disk is transient: writes
fail while it lasts, reads go on, and the writer succeeds again as soon as
space is freed. Damage is permanent: the node reports itself unhealthy
(``/healthz`` answers 503 ``storage_corrupt``) until it is replaced.

Why the full check runs in the background rather than at open:
``PRAGMA quick_check`` reads every page. On a 1.2 GB database it took 0.73 s
with the file in the page cache and 27 s from a cold disk (measured on the
development VM), which a start-up after a reboot would wait for. At open the
node only reads the header, the schema and its own state (a damaged one
refuses to start); the whole file is then checked on a thread of its own
while the node serves, and any query that meets a damaged page marks the
node unhealthy as well.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
_PROBLEMS_SHOWN = 5


def _primary_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc`` (extended codes keep it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the disk (or the database's page cap) is full."""
    return _primary_code(exc) == SQLITE_FULL


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the database file is damaged."""
    return _primary_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


class StorageHealth:
    """Whether the database file is known to be damaged, and the background check of it."""

    def __init__(self, db_path: Path) -> None:
        """Track the health of the database at ``db_path`` (healthy until found otherwise)."""
        self.db_path = db_path
        self.corruption: str | None = None
        """Why the file is known to be damaged (None: no damage found)."""
        self._lock = threading.Lock()
        self._checker: threading.Thread | None = None
        self._check_conn: sqlite3.Connection | None = None

    def report_corruption(self, detail: str) -> str:
        """Record damage found in the file (the first report is kept and logged); return it."""
        with self._lock:
            if self.corruption is None:
                self.corruption = (
                    f"the database file {self.db_path} is damaged ({detail}); the node "
                    "reports itself unhealthy. Replace it: stop it, move its data directory "
                    "away and start it empty to re-sync from its peers, or restore a backup."
                )
                log.error("%s", self.corruption)
            return self.corruption

    def start_check(self) -> None:
        """Run ``PRAGMA quick_check`` over the whole file on a thread, reporting damage."""
        conn = sqlite3.connect(
            f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        self._check_conn = conn
        self._checker = threading.Thread(
            target=self._check, args=(conn,), name="edgekv-integrity", daemon=True
        )
        self._checker.start()

    def _check(self, conn: sqlite3.Connection) -> None:
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as exc:
            if is_corruption(exc):
                self.report_corruption(str(exc))
            elif not isinstance(exc, sqlite3.OperationalError) or "interrupt" not in str(exc):
                log.warning("integrity check of %s did not run: %s", self.db_path, exc)
            return
        finally:
            conn.close()
        problems = [str(row[0]) for row in rows]
        if problems != ["ok"]:
            self.report_corruption("; ".join(problems[:_PROBLEMS_SHOWN]))
        else:
            log.info("integrity check of %s: ok", self.db_path)

    def stop_check(self) -> None:
        """Interrupt a check still running (a large file) and wait for its thread."""
        if self._checker is None or self._check_conn is None:
            return
        if self._checker.is_alive():
            # The thread may have closed the connection meanwhile.
            with contextlib.suppress(sqlite3.ProgrammingError):
                self._check_conn.interrupt()
        self._checker.join()
        self._checker = None
