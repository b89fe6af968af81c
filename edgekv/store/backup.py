"""Backups of a node's database: a consistent snapshot, checksummed, and its restore.

A backup file is one JSON line, the *manifest*, followed by exactly
``manifest["db_bytes"]`` bytes of an SQLite database::

    {"format": "edgekv-backup", "version": 1, "node_id": "...", "seq": N,
     "created_ms": T, "db_bytes": B, "sha256": "...", ...}\\n<B bytes of SQLite>

The snapshot is taken with SQLite's online backup API from a connection of
its own that holds one read transaction for the whole copy: in WAL mode that
is a consistent snapshot of the moment the transaction began, and the
writer never waits for it (readers do not block the writer). The copy goes
a few pages per step with a pause between steps, so a large database does
not starve the node of disk bandwidth; ``created_ms`` is the moment of the
snapshot, which the restore's tombstone-horizon rule is measured from.

Restoring (:func:`restore`) writes the database into an empty data
directory as a *new* node: a new node id and incarnation, no peer cursors
or acknowledgements, so peers send it everything they hold (their
tombstones included, which win over the backup's older values) and pull its
log from zero. A backup older than the tombstone horizon is refused
(:class:`RestoreRefused`): peers may have collected tombstones of keys the
backup still holds, and restoring it would bring those keys back.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from edgekv.store.datadir import DataDirError, DataDirLock
from edgekv.store.restored import MARK_FILENAME, RestoreMark, read_mark, write_mark
from edgekv_replication import new_node_id

FORMAT = "edgekv-backup"
VERSION = 1
DB_FILENAME = "edgekv.db"
MAX_MANIFEST_BYTES = 64 * 1024
PAGES_PER_STEP = 256
"""Pages copied per backup step (1 MiB at SQLite's default 4 KiB pages)."""
STEP_PAUSE = 0.01
"""Seconds between steps: the disk's and the cores' share left to the node's own work
(at most about 80 MiB/s of copying)."""
_CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""``progress(done, total)``: pages while snapshotting, bytes while copying."""


class BackupError(ValueError):
    """A backup file is not one, is damaged, or does not match its checksum."""


class RestoreRefused(RuntimeError):
    """Restoring this backup could resurrect deleted keys, or would overwrite a node."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup file says about the database it holds."""

    format: str
    version: int
    node_id: str
    incarnation: str
    seq: int
    schema_version: int
    created_ms: int
    db_bytes: int
    sha256: str

    def line(self) -> bytes:
        """The manifest as the backup file's first line."""
        return json.dumps(asdict(self), separators=(",", ":")).encode("ascii") + b"\n"


def snapshot(
    db_path: Path,
    out_path: Path,
    progress: Progress | None = None,
    pages_per_step: int = PAGES_PER_STEP,
    pause: float = STEP_PAUSE,
) -> Manifest:
    """Copy the database at ``db_path`` into ``out_path`` as one consistent snapshot.

    Runs on the caller's thread (the node calls it off the event loop) with a
    connection of its own. Returns the manifest, checksum included.
    """
    source = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        source.execute("PRAGMA query_only = ON")
        source.execute("BEGIN")  # one read transaction: every step sees the same snapshot
        created_ms = time.time_ns() // 1_000_000
        node_id, incarnation, seq = source.execute(
            "SELECT node_id, incarnation, seq FROM node_state WHERE id = 1"
        ).fetchone()
        schema_version = source.execute("PRAGMA user_version").fetchone()[0]
        out_path.unlink(missing_ok=True)
        target = sqlite3.connect(out_path, isolation_level=None)
        try:
            # A scratch copy, checksummed once complete: no journal and no fsync per step,
            # which would queue behind (and in front of) the node's own commits' fsyncs.
            target.execute("PRAGMA journal_mode = OFF")
            target.execute("PRAGMA synchronous = OFF")

            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            source.backup(target, pages=pages_per_step, progress=step, sleep=pause)
        finally:
            target.close()
        source.execute("COMMIT")
    finally:
        source.close()
    digest, size = _file_digest(out_path)
    return Manifest(
        FORMAT,
        VERSION,
        f"{node_id:016x}",
        f"{incarnation:016x}",
        int(seq),
        int(schema_version),
        created_ms,
        size,
        digest,
    )


def snapshot_stopped(data_dir: Path, out_path: Path, progress: Progress | None = None) -> Manifest:
    """Snapshot the database of a stopped node, holding its directory's lock meanwhile."""
    db_path = data_dir / DB_FILENAME
    if not db_path.is_file() or db_path.stat().st_size == 0:
        raise DataDirError(f"{db_path} does not exist or is empty: nothing to back up")
    lock = DataDirLock(data_dir)  # refuses while a node runs there: back it up with --url
    try:
        return snapshot(db_path, out_path, progress, pages_per_step=4096, pause=0)
    finally:
        lock.release()


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_backup(
    manifest: Manifest, snapshot_path: Path, out: IO[bytes], progress: Progress | None = None
) -> None:
    """Write the backup file: the manifest line, then the snapshot's bytes."""
    out.write(manifest.line())
    done = 0
    with snapshot_path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, manifest.db_bytes)


def read_manifest(stream: IO[bytes]) -> Manifest:
    """Read and check the first line of a backup file; the stream is left at the database."""
    return parse_manifest(stream.readline(MAX_MANIFEST_BYTES))


def parse_manifest(line: bytes | str) -> Manifest:
    """Check a manifest line (from a backup file, or the backup route's header)."""
    try:
        fields = json.loads(line)
        manifest = Manifest(**fields)
    except (ValueError, TypeError):
        raise BackupError("not an EdgeKV backup file (its first line is no manifest)") from None
    if manifest.format != FORMAT or manifest.version != VERSION:
        raise BackupError(
            f"backup format {manifest.format!r} version {manifest.version!r} is not "
            f"{FORMAT} version {VERSION}"
        )
    return manifest


def copy_verified(
    manifest: Manifest, stream: IO[bytes], out: IO[bytes], progress: Progress | None = None
) -> None:
    """Copy the database bytes of a backup to ``out``; raise :class:`BackupError` unless
    they are exactly ``manifest.db_bytes`` long with the manifest's checksum."""
    digest = hashlib.sha256()
    done = 0
    while done < manifest.db_bytes:
        chunk = stream.read(min(_CHUNK, manifest.db_bytes - done))
        if not chunk:
            break
        digest.update(chunk)
        out.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, manifest.db_bytes)
    if done != manifest.db_bytes or stream.read(1):
        raise BackupError(
            f"backup holds {done} bytes of database, its manifest says {manifest.db_bytes}"
        )
    if digest.hexdigest() != manifest.sha256:
        raise BackupError("backup checksum mismatch: the file is damaged")


def restore(
    backup_file: Path,
    data_dir: Path,
    tombstone_horizon: float,
    progress: Progress | None = None,
    now_ms: int | None = None,
) -> tuple[Manifest, int]:
    """Restore ``backup_file`` into the empty ``data_dir`` as a new node; return its id.

    Raises :class:`RestoreRefused` when the backup is older than
    ``tombstone_horizon`` seconds or the directory already holds a database,
    :class:`BackupError` when the file is damaged.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with backup_file.open("rb") as stream:
        manifest = read_manifest(stream)
        check_age(manifest.created_ms, tombstone_horizon, now)
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / DB_FILENAME
        if target.exists() and target.stat().st_size > 0:
            raise RestoreRefused(
                f"{target} exists: restore only into an empty data directory "
                "(stop that node and move its directory away first)"
            )
        lock = DataDirLock(data_dir)
        try:
            partial = data_dir / (DB_FILENAME + ".restoring")
            with partial.open("wb") as out:
                copy_verified(manifest, stream, out, progress)
                out.flush()
                os.fsync(out.fileno())
            new_id = _become_new_node(partial, int(manifest.node_id, 16))
            for suffix in ("-wal", "-shm"):
                target.with_name(target.name + suffix).unlink(missing_ok=True)
            write_mark(data_dir, RestoreMark(manifest.created_ms, manifest.node_id, manifest.seq))
            partial.rename(target)
        finally:
            lock.release()
    return manifest, new_id


def check_age(created_ms: int, tombstone_horizon: float, now_ms: int) -> None:
    """Refuse a snapshot taken more than ``tombstone_horizon`` seconds ago."""
    age_s = (now_ms - created_ms) / 1000
    if age_s >= tombstone_horizon:
        raise RestoreRefused(
            f"the backup is {age_s:.0f} s old, older than the tombstone horizon "
            f"({tombstone_horizon:.0f} s): peers may have collected the tombstones of keys "
            "deleted since, and the backup would bring those keys back. Refused: start "
            "the node with an empty data directory instead, and it re-syncs in full "
            "from its peers."
        )


def _become_new_node(path: Path, old_node_id: int) -> int:
    """Give the restored database a new identity and forget every peer's position."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        problems = conn.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            raise BackupError(f"the backed-up database is damaged: {problems[:3]}")
        node_id = new_node_id()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE node_state SET node_id = ?, incarnation = ?, clean_shutdown = 1 WHERE id = 1",
            (node_id, new_node_id()),
        )
        # A new node: every peer's log is read from zero, and every peer reads ours so.
        for table in ("peer_cursors", "peer_acks", "resync_required"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM members WHERE node = ?", (old_node_id,))
        # Heard from now, having acknowledged nothing: tombstone collection here waits
        # for each member's acknowledgement for a whole horizon, as for a new member,
        # rather than leaving members out (and making them re-sync) for old silence.
        conn.execute(
            "INSERT INTO peer_acks (peer, cursor, updated_ms) SELECT node, 0, ? FROM members",
            (time.time_ns() // 1_000_000,),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return node_id


def check_restored(data_dir: Path, tombstone_horizon: float, now_ms: int | None = None) -> None:
    """Refuse to open a restored directory whose backup is now older than the horizon
    and which has not rejoined yet (:mod:`edgekv.store.restored`)."""
    mark = read_mark(data_dir)
    if mark is None:
        return
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    try:
        check_age(mark.backup_created_ms, tombstone_horizon, now)
    except RestoreRefused as refusal:
        raise DataDirError(
            f"{data_dir} was restored from a backup and has not rejoined every member yet "
            f"(the mark {MARK_FILENAME} goes once each has pulled this node's log and it has "
            f"pulled theirs; remove members that are gone for good, with edgekv cluster "
            f"remove at another PoP, before restoring): {refusal}"
        ) from None
