"""Versioned schema migrations of a node's SQLite database.

``PRAGMA user_version`` holds the schema version. Each migration runs in its
own transaction together with the version bump, so a crash mid-migration
leaves the previous version intact. Schema work uses sqlite-utils; the hot
paths in :mod:`edgekv.store.kv` and its siblings use raw ``sqlite3``.

Tables (version 1):

``node_state``  one row: this database's node id and incarnation (random,
                made at creation), and the persisted high-water marks of the
                hybrid logical clock and of the change sequence.
``kv``          one row per ``(ns, key)``: the live value or a tombstone
                (``value IS NULL``), metadata JSON, expiration (epoch
                seconds), the last-writer-wins stamp ``(hlc, node)``, and
                ``seq`` -- the row's place in the local change log. An
                overwritten row moves to a newer ``seq``, so "changes after
                cursor" is a range scan of the primary key.

Version 2 adds ``peer_cursors`` (per peer: its incarnation and how far its log
is applied here), ``held_changes`` (remote changes stamped too far ahead of
the local clock, kept until it catches up) and ``members``. Version 3 adds
``peer_acks`` (how far each peer has acknowledged this node's log) and
``node_state.purged_seq`` (the newest collected tombstone) and
``node_state.clean_shutdown``. Version 4 adds the view ``kv_v1``, the
documented read interface of ``edgekv_client.LocalReader``. Version 5 adds
the document store (:mod:`edgekv.store.documents`): ``docs`` (per document its
materialized JSON, its compacted Y snapshot and the snapshot's place in the
change log), ``doc_log`` (Y updates not yet folded into the snapshot, each
with its own ``seq``), ``doc_waiting`` (remote updates whose dependencies
have not arrived) and ``doc_indexes`` (declared query indexes). Version 6
adds ``strong_namespaces``: namespaces this node learned from the upstream are
strong, remembered so they stay strong across a restart while it is down.
Version 7 adds ``resync_required``: members left out of a tombstone
collection (out of contact longer than the tombstone horizon) with the
``purged_seq`` of then; they must re-sync from zero whatever cursor they
present. Version 8 adds ``members.region`` (empty: not known yet).
:data:`SCHEMA_VERSION` is the number of :data:`MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from edgekv_replication import new_node_id

if TYPE_CHECKING:
    import sqlite_utils


class SchemaError(RuntimeError):
    """The database was written by a newer EdgeKV, or is not an EdgeKV database."""


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("node_state").create(
        {
            "id": int,
            "node_id": int,
            "incarnation": int,
            "created_ms": int,
            "hlc": int,
            "seq": int,
        },
        pk="id",
        not_null={"node_id", "incarnation", "created_ms", "hlc", "seq"},
    )
    db.execute(
        "INSERT INTO node_state (id, node_id, incarnation, created_ms, hlc, seq)"
        " VALUES (1, ?, ?, ?, 0, 0)",
        [new_node_id(), new_node_id(), time.time_ns() // 1_000_000],
    )
    kv = db.table("kv")
    kv.create(
        {
            "seq": int,
            "ns": str,
            "key": bytes,
            "value": bytes,
            "metadata": str,
            "expiration": int,
            "hlc": int,
            "node": int,
        },
        pk="seq",
        not_null={"ns", "key", "hlc", "node"},
    )
    kv.create_index(["ns", "key"], index_name="kv_ns_key", unique=True)


def _v2_replication(db: sqlite_utils.Database) -> None:
    # How far this node has applied each peer's log, per incarnation of that peer.
    db.table("peer_cursors").create(
        {"peer": int, "incarnation": int, "cursor": int, "updated_ms": int},
        pk="peer",
        not_null={"incarnation", "cursor", "updated_ms"},
    )
    # Changes stamped too far ahead of our clock: kept, applied once it catches up.
    held = db.table("held_changes")
    held.create(
        {
            "id": int,
            "ns": str,
            "key": bytes,
            "value": bytes,
            "metadata": str,
            "expiration": int,
            "hlc": int,
            "node": int,
        },
        pk="id",
        not_null={"ns", "key", "hlc", "node"},
    )
    held.create_index(["hlc"], index_name="held_changes_hlc")
    # Known members of the cluster (learned from seeds and from every peer).
    db.table("members").create(
        {"node": int, "url": str, "name": str, "removed": int, "updated_ms": int},
        pk="node",
        not_null={"url", "name", "removed", "updated_ms"},
    )


def _v3_tombstone_collection(db: sqlite_utils.Database) -> None:
    # How far each peer has acknowledged *our* log; tombstones it has seen may go.
    db.table("peer_acks").create(
        {"peer": int, "cursor": int, "updated_ms": int},
        pk="peer",
        not_null={"cursor", "updated_ms"},
    )
    # The highest seq of a collected tombstone: a peer behind it must re-sync in full.
    db.table("node_state").add_column("purged_seq", int, not_null_default=0)
    # 1 while the database is closed cleanly; 0 while a node has it open.
    db.table("node_state").add_column("clean_shutdown", int, not_null_default=1)


def _v4_reader_view(db: sqlite_utils.Database) -> None:
    # The contract of edgekv_client.LocalReader: live rows only, stable column names.
    # A later schema change keeps this view's shape (or adds kv_v2 beside it).
    db.execute(
        "CREATE VIEW kv_v1 AS SELECT ns, key, value, metadata, expiration, hlc, node, seq"
        " FROM kv WHERE value IS NOT NULL"
    )


def _v5_documents(db: sqlite_utils.Database) -> None:
    # Materialized JSON (NULL while deleted) for reads, queries and expression
    # indexes; the Y snapshot takes the change-log seq of the newest update it
    # folded in, so "changes after cursor" still finds everything.
    db.execute(
        "CREATE TABLE docs (collection TEXT NOT NULL, id TEXT NOT NULL, json TEXT,"
        " hlc INTEGER NOT NULL, node INTEGER NOT NULL,"
        " snapshot BLOB, snap_seq INTEGER, snap_hlc INTEGER, snap_node INTEGER,"
        " log_count INTEGER NOT NULL DEFAULT 0, log_bytes INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (collection, id))"
    )
    db.execute("CREATE UNIQUE INDEX docs_snap_seq ON docs (snap_seq) WHERE snap_seq IS NOT NULL")
    db.execute(
        "CREATE TABLE doc_log (seq INTEGER PRIMARY KEY, collection TEXT NOT NULL,"
        " id TEXT NOT NULL, y_update BLOB NOT NULL, metadata TEXT,"
        " hlc INTEGER NOT NULL, node INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX doc_log_doc ON doc_log (collection, id, seq)")
    # Remote updates whose Y dependencies have not arrived yet (never half-applied).
    db.execute(
        "CREATE TABLE doc_waiting (wid INTEGER PRIMARY KEY, collection TEXT NOT NULL,"
        " id TEXT NOT NULL, y_update BLOB NOT NULL, metadata TEXT,"
        " hlc INTEGER NOT NULL, node INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX doc_waiting_doc ON doc_waiting (collection, id, wid)")
    db.execute(
        "CREATE TABLE doc_indexes (collection TEXT NOT NULL, field TEXT NOT NULL,"
        " name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, PRIMARY KEY (collection, field))"
    )


def _v6_strong_namespaces(db: sqlite_utils.Database) -> None:
    # Declarations learned from the upstream outlive a restart while it is down:
    # a strong namespace must never fall back to local, eventual writes.
    db.table("strong_namespaces").create({"ns": str, "learned_ms": int}, pk="ns")


def _v7_resync_required(db: sqlite_utils.Database) -> None:
    # Members left out of a tombstone collection (out of contact longer than the
    # horizon), with the purged seq then: they may hold keys whose tombstones
    # went, so they must re-sync in full, whatever cursor they present -- a
    # cursor of 0 is also what a node holding other peers' data presents when
    # nothing of this node's log was durable for it yet.
    db.table("resync_required").create({"peer": int, "purged_seq": int}, pk="peer")


def _v8_member_regions(db: sqlite_utils.Database) -> None:
    # Each member's region: peer streams run within a region (edgekv_replication.topology).
    db.execute("ALTER TABLE members ADD COLUMN region TEXT NOT NULL DEFAULT ''")


def _v9_collected_origins(db: sqlite_utils.Database) -> None:
    # Per origin, the newest stamp of a row tombstone collection deleted: a watch
    # resumed with a vector below it may have missed a delete (it must re-list).
    db.table("collected_origins").create({"node": int, "hlc": int}, pk="node")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _v1_initial,
    _v2_replication,
    _v3_tombstone_collection,
    _v4_reader_view,
    _v5_documents,
    _v6_strong_namespaces,
    _v7_resync_required,
    _v8_member_regions,
    _v9_collected_origins,
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database on ``conn`` (autocommit mode) to :data:`SCHEMA_VERSION`.

    Returns the version found before migrating (0 for a new database).
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {found} is newer than this EdgeKV supports "
            f"({SCHEMA_VERSION}); upgrade EdgeKV"
        )
    if found == SCHEMA_VERSION:
        return found
    db = _sqlite_utils().Database(conn)
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


def _sqlite_utils() -> ModuleType:
    """Import sqlite-utils only when a migration runs, without its optional numpy support.

    sqlite-utils imports numpy and pandas when they are installed, which would
    add ~20 MiB to every node's footprint for type mappings EdgeKV never uses.
    """
    hidden = {name: sys.modules.get(name) for name in ("numpy", "pandas")}
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import numpy` fail
    try:
        import sqlite_utils
    finally:
        for name, module in hidden.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    return sqlite_utils
