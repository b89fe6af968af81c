"""Guarding a node's data directory before its database is opened.

Two checks run before SQLite touches the files:

* **One node per directory.** The node takes an exclusive ``flock`` on
  ``edgekv.lock`` in the directory and holds it for the life of the process
  (the kernel drops it when the process dies, even by SIGKILL). A second node
  on the same directory would share the node id and hand out the same seqs;
  it refuses to start instead. The lock is on a file of its own, not on
  ``edgekv.db``: read-only tools (``LocalReader``, ``sqlite3 -readonly``)
  never take it, so they keep working while the node runs.
* **No silent new identity.** A zero-byte ``edgekv.db`` (a truncated file, a
  failed restore) would otherwise be initialised as a brand-new node with a
  new id and an empty log. That needs the operator's word
  (``allow_new_node``); a directory with no database at all is a first start
  and needs none.

Once locked, the directory is this node's alone, so scratch copies an online
backup left behind (a node killed mid-backup) are removed: nothing else can
be using them, and each is as large as the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILENAME = "edgekv.lock"
_SNAPSHOT_INFIX = ".backup-"
"""Scratch snapshots of an online backup are ``<database>.backup-<random hex>``."""


class DataDirError(RuntimeError):
    """The data directory cannot be opened safely; the message says why and what to do."""


class DataDirLock:
    """The exclusive lock on a data directory, held until :meth:`release`."""

    def __init__(self, directory: Path) -> None:
        """Take the lock, or raise :class:`DataDirError` naming the node that holds it."""
        path = directory / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"data directory {directory} is in use by another EdgeKV node "
                f"(pid {holder} holds {path}); two nodes on one directory would share "
                "a node id and corrupt replication. Stop that node, or give this one "
                "its own --data-dir."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Only for the message above: the lock itself is the flock, not this text.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race a new opener)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def refuse_emptied_database(db_path: Path, allow_new_node: bool) -> None:
    """Refuse a zero-byte database unless the operator asked for a new node.

    SQLite writes the database header when it first opens the file in WAL
    mode, so a node's database is never empty once it has started: an empty
    one lost its contents. With ``allow_new_node`` the leftover ``-wal`` and
    ``-shm`` files are removed, as they belong to the lost database and must
    not be replayed into the new one.
    """
    if not db_path.exists() or db_path.stat().st_size > 0:
        return
    if not allow_new_node:
        raise DataDirError(
            f"{db_path} is empty (0 bytes): its node's data and identity are gone, "
            "and starting would silently make a new, empty node. Restore the file from "
            "a backup, or, to start a new node here on purpose, start once with "
            "--allow-new-node true."
        )
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    log.warning("%s was empty: starting a new node there (allow_new_node)", db_path)


def snapshot_scratch_path(db_path: Path) -> Path:
    """A new path for an online backup's scratch snapshot, next to the database (the
    same file system, which has room for a copy of it)."""
    return db_path.with_name(f"{db_path.name}{_SNAPSHOT_INFIX}{secrets.token_hex(6)}")


def remove_stale_snapshots(db_path: Path) -> None:
    """Remove the scratch snapshots a node stopped mid-backup left (call with the lock held)."""
    for stale in db_path.parent.glob(f"{db_path.name}{_SNAPSHOT_INFIX}*"):
        try:
            stale.unlink()
        except OSError as exc:  # not worth refusing to start over
            log.warning("could not remove the stale backup snapshot %s: %s", stale, exc)
        else:
            log.info("removed %s, the snapshot of a backup that did not finish", stale)
