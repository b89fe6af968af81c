"""Documents in SQLite: an update log, a compacted snapshot and materialized JSON each.

Every Y document lives on the event-loop thread: it is loaded, edited and
merged only inside writer ops (which run on the loop), so no lock is needed
and a document's in-memory state never runs ahead of the transaction that
logs it. A write is one op: check the input against the current JSON, edit
the Y document, log the Y update under the next change-log ``seq``, store the
new materialized JSON. Reads (``get``, queries, ``ystate``) use the read
connection and see committed state only.

A write that is rolled back -- it failed alone, or its whole transaction
did -- drops every document it edited in memory (:meth:`Txn.on_rollback`,
run by the writer), so the next use reloads it from the database.

Y client ids: this process takes a random one when it starts (and a new one
whenever a write is rolled back after documents were edited in memory), so
two incarnations never issue the same Y item ids.

Rows (schema version 5): ``docs`` holds per document the materialized JSON
(NULL while deleted) and its version (the newest write merged in);
``doc_log`` holds its Y updates. Compaction folds a document's log into one
update, its snapshot, kept in ``doc_log`` too under the seq of the newest
update it folds. (The snapshot once lived in ``docs.snapshot``, where every
write rewrote it with the JSON: a database compacted then is still read,
and its snapshot moves to ``doc_log`` at the next compaction.)
:class:`~edgekv.store.changelog.ChangeLog` serves both tables, with the
key-value rows, in one ``seq`` order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

from pycrdt import get_update, merge_updates

from edgekv.store import doc_queries
from edgekv.store.writer import Txn, Writer
from edgekv_replication import documents as ydoc
from edgekv_replication.changes import Change
from edgekv_replication.documents import DocumentError
from edgekv_replication.versions import encode_version

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
COMPACT_LOG_ROWS = 32
"""A document whose log reaches this many updates is due for compaction."""

_LOG = (
    "INSERT INTO doc_log (seq, collection, id, y_update, metadata, hlc, node)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# The version only moves forward: (hlc, node) of the newest write merged in.
_MATERIALIZE = (
    "INSERT INTO docs (collection, id, json, hlc, node, log_count, log_bytes)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT (collection, id) DO UPDATE SET json = excluded.json,"
    " hlc = CASE WHEN (excluded.hlc, excluded.node) > (docs.hlc, docs.node)"
    " THEN excluded.hlc ELSE docs.hlc END,"
    " node = CASE WHEN (excluded.hlc, excluded.node) > (docs.hlc, docs.node)"
    " THEN excluded.node ELSE docs.node END,"
    " log_count = docs.log_count + excluded.log_count,"
    " log_bytes = docs.log_bytes + excluded.log_bytes"
)
_UPDATE_LOCAL = (
    "UPDATE docs SET json = ?, hlc = ?, node = ?, log_count = log_count + 1,"
    " log_bytes = log_bytes + ? WHERE collection = ? AND id = ?"
)
_GET = "SELECT json, hlc, node FROM docs WHERE collection = ? AND id = ?"


class DocWriteResult(NamedTuple):
    """Where a document write landed: the document's version and the change-log seq."""

    hlc: int
    node: int
    seq: int
    changed: bool


class StoredDocument(NamedTuple):
    """A document as read: its canonical JSON text and version."""

    json: str
    hlc: int
    node: int


@dataclass(slots=True)
class _Loaded:
    """A Y document in memory, with its materialized JSON."""

    doc: ydoc.YDoc
    editor: ydoc.Editor
    json: dict[str, Any] | None
    text: str | None
    size: int
    hlc: int
    node: int
    whole: bool
    """Every update logged for the document is integrated in ``doc`` (none pending).

    True unless the stored snapshot and log held an update whose dependencies
    were missing; everything a node logs later is checked before it is."""


class DocumentStore:
    """The documents of one node; created by :class:`~edgekv.store.store.Store`."""

    def __init__(
        self,
        writer: Writer,
        reader: sqlite3.Connection,
        node_id: int,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        """Serve documents through ``writer`` (edits) and ``reader`` (reads)."""
        self._writer = writer
        self._reader = reader
        self.node_id = node_id
        self.client_id = _new_client_id()
        self._cache: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._cache_bytes = 0
        self.cache_limit = cache_bytes
        self.present = reader.execute("SELECT 1 FROM docs LIMIT 1").fetchone() is not None
        """Whether any document exists (else the change log is read from ``kv`` alone)."""
        self.compaction_due = asyncio.Event()
        """Set when a document's log reaches ``compact_log_rows`` (wakes the compactor)."""
        self.compact_log_rows = COMPACT_LOG_ROWS
        self._log_counts: dict[tuple[str, str], int] = {}
        self._due: set[tuple[str, str]] = set()
        """Documents whose logs reached ``compact_log_rows`` (so no scan of every count)."""
        self._waiting_slots = {
            (c, i) for c, i in reader.execute("SELECT DISTINCT collection, id FROM doc_waiting")
        }
        """Documents with updates waiting for their dependencies."""

    def close(self) -> None:
        """Let go of the documents in memory (after the writer is closed)."""
        for slot in list(self._cache):
            self._drop(slot)

    # -- reads ------------------------------------------------------------------

    def get(self, collection: str, doc_id: str) -> StoredDocument | None:
        """The committed document, or None if absent or deleted."""
        row = self._reader.execute(_GET, (collection, doc_id)).fetchone()
        if row is None or row[0] is None:
            return None
        return StoredDocument(*row)

    def ystate(self, collection: str, doc_id: str, state_vector: bytes | None) -> bytes | None:
        """The Y update a replica at ``state_vector`` is missing (all of it for None).

        Built from the committed snapshot and log, without loading a document.
        None when no such document was ever written.
        """
        row = self._reader.execute(
            "SELECT snapshot FROM docs WHERE collection = ? AND id = ?", (collection, doc_id)
        ).fetchone()
        if row is None:
            return None
        updates = [row[0]] if row[0] is not None else []
        updates += [
            update
            for (update,) in self._reader.execute(
                "SELECT y_update FROM doc_log WHERE collection = ? AND id = ? ORDER BY seq",
                (collection, doc_id),
            )
        ]
        if not updates:
            return ydoc.EMPTY_UPDATE
        merged = merge_updates(*updates) if len(updates) > 1 else updates[0]
        if state_vector is None:
            return merged
        return get_update(merged, state_vector)

    def query_rows(self, page: doc_queries.Query) -> Iterator[tuple[Any, ...]]:
        """Run a query page's answer (:attr:`~edgekv.store.doc_queries.Query.answer_sql`).

        Yields its rows one at a time: consume it (or drop it) before anything
        else runs on the read connection.
        """
        cursor = self._reader.execute(page.answer_sql, page.params)
        try:
            yield from cursor
        finally:
            cursor.close()

    def declared_indexes(self, collection: str) -> list[doc_queries.DeclaredIndex]:
        """The indexes declared on ``collection``, by field."""
        return doc_queries.declared_indexes(self._reader, collection)

    def declare_index(
        self, collection: str, field: str, limit: int
    ) -> asyncio.Future[tuple[doc_queries.DeclaredIndex, bool]]:
        """Create the index on ``field`` unless it exists; resolves to it and whether it is new.

        Fails with :class:`~edgekv.store.doc_queries.IndexLimitReached` when
        ``collection`` already has ``limit`` declared indexes.
        """
        return self._writer.submit(
            partial(doc_queries.declare_index, collection=collection, field=field, limit=limit)
        )

    # -- local writes -------------------------------------------------------------

    def put(self, collection: str, doc_id: str, body: dict[str, Any]) -> asyncio.Future[Any]:
        """Replace the document with ``body`` (a parsed JSON object)."""
        new = ydoc.normalize(body)
        text = ydoc.serialize(new)
        ydoc.check_size(text)
        return self._submit_local(collection, doc_id, _edit_replace, (new, text))

    def patch(self, collection: str, doc_id: str, merge: dict[str, Any]) -> asyncio.Future[Any]:
        """Apply an RFC 7386 merge patch; ``not_found`` if the document does not exist."""
        return self._submit_local(collection, doc_id, _edit_patch, ydoc.normalize(merge))

    def delete(self, collection: str, doc_id: str) -> asyncio.Future[Any]:
        """Delete the document (a Y edit that replicates); deleting an absent one succeeds."""
        return self._submit_local(collection, doc_id, _edit_delete, None)

    def apply_client_update(
        self, collection: str, doc_id: str, update: bytes
    ) -> asyncio.Future[Any]:
        """Apply a Y update from a client (Yjs, pycrdt) after checking it on a copy."""
        return self._submit_local(collection, doc_id, _edit_client_update, update)

    def _submit_local(
        self, collection: str, doc_id: str, edit: _Edit, argument: Any
    ) -> asyncio.Future[Any]:
        write = _LocalWrite(self, (collection, doc_id), edit, argument)
        future: asyncio.Future[DocWriteResult] = self._writer.submit(write.run)
        return future

    def _write_local(
        self, txn: Txn, slot: tuple[str, str], edit: _Edit, argument: Any
    ) -> DocWriteResult:
        """The writer op of a local write: edit the document, log the update, store the JSON."""
        loaded = self._load(txn.conn, slot)
        try:
            update, new_json, text = edit(self, loaded, argument)
        except DocumentError:
            raise  # checked before any Y edit: the document is as it was
        except BaseException:  # a pycrdt panic halfway through an edit, say
            self._forget(slot)
            raise
        if update == ydoc.EMPTY_UPDATE:
            return DocWriteResult(loaded.hlc, loaded.node, txn.seq, False)
        # From here the document in memory is ahead of the database until the commit.
        txn.on_rollback(partial(self._forget, slot))
        hlc = txn.clock.now()
        seq = txn.take_seq()
        collection, doc_id = slot
        txn.conn.execute(_LOG, (seq, collection, doc_id, update, None, hlc, self.node_id))
        if loaded.hlc:  # the row exists, and a fresh local stamp is the newest version
            txn.conn.execute(_UPDATE_LOCAL, (text, hlc, self.node_id, len(update), *slot))
        else:
            txn.conn.execute(
                _MATERIALIZE, (collection, doc_id, text, hlc, self.node_id, 1, len(update))
            )
        loaded.json, loaded.text = new_json, text
        loaded.hlc, loaded.node = hlc, self.node_id
        self._logged(slot, loaded, len(update))
        self.present = True
        return DocWriteResult(hlc, self.node_id, seq, True)

    # -- remote changes (inside Store.apply_changes) --------------------------------

    def apply_remote(self, txn: Txn, changes: Sequence[Change]) -> int:
        """Merge document changes from a peer inside ``txn``; return how many changed a document.

        Raises ValueError for a change that is not a Y update (the whole
        batch is then refused, and the documents it touched reloaded, as
        after any rollback).
        An update whose dependencies have not arrived yet waits in
        ``doc_waiting`` (see :class:`~edgekv_replication.documents.DocumentReplica`).
        """
        touched: dict[tuple[str, str], tuple[int, int]] = {}
        logged: dict[tuple[str, str], tuple[int, int]] = {}
        applied = 0
        for change in changes:
            slot = (ydoc.collection_of(change), change.key.decode())
            assert change.value is not None
            txn.clock.observe(change.hlc)
            version = ydoc.version_of(change)
            if slot not in touched:
                txn.on_rollback(partial(self._forget, slot))
            touched[slot] = max(version, touched.get(slot, (0, 0)))
            merged = self._merge_update(txn, slot, change.value, version, change, logged)
            if merged is None:
                self._wait(txn, slot, change)
            elif merged:
                applied += merged
                if slot in self._waiting_slots:
                    applied += self._retry_waiting(txn, slot, logged)
        for slot, (hlc, node) in touched.items():
            loaded = self._load(txn.conn, slot)
            foreign = ydoc.foreign_roots(loaded.doc)
            if foreign is not None:
                # What no node's API accepts (see validate_update): refused as intake refuses.
                raise ValueError(f"document {slot[0]}/{slot[1]}: {foreign}")
            loaded.json = ydoc.read_json(loaded.doc)
            loaded.text = None if loaded.json is None else ydoc.serialize(loaded.json)
            if (hlc, node) > (loaded.hlc, loaded.node):
                loaded.hlc, loaded.node = hlc, node
            count, size = logged.get(slot, (0, 0))
            txn.conn.execute(_MATERIALIZE, (*slot, loaded.text, hlc, node, count, size))
        if touched:
            self.present = True
        return applied

    def _merge_update(
        self,
        txn: Txn,
        slot: tuple[str, str],
        update: bytes,
        version: tuple[int, int],
        origin: Change,
        logged: dict[tuple[str, str], tuple[int, int]],
    ) -> int | None:
        """Apply one update: 1 if it changed the document, 0 for a duplicate, None if it waits."""
        loaded = self._load(txn.conn, slot)
        delta = loaded.editor.apply(update)
        if not ydoc.integrates_fully(loaded.doc, update):
            # Never keep Y's pending parts: rebuild from the log, without this update.
            self._drop(slot)
            return None
        if delta == ydoc.EMPTY_UPDATE:
            return 0  # a duplicate (relayed by several peers): no new seq
        txn.conn.execute(
            _LOG,
            (
                txn.take_seq(),
                *slot,
                delta,
                encode_version(*version),
                origin.hlc,
                origin.node,
            ),
        )
        count, size = logged.get(slot, (0, 0))
        logged[slot] = (count + 1, size + len(delta))
        self._logged(slot, loaded, len(delta))
        return 1

    def _wait(self, txn: Txn, slot: tuple[str, str], change: Change) -> None:
        txn.conn.execute(
            "INSERT INTO doc_waiting (collection, id, y_update, metadata, hlc, node)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*slot, change.value, change.metadata, change.hlc, change.node),
        )
        self._waiting_slots.add(slot)

    def _retry_waiting(
        self, txn: Txn, slot: tuple[str, str], logged: dict[tuple[str, str], tuple[int, int]]
    ) -> int:
        """Apply the waiting updates of ``slot`` that have become integrable."""
        applied = 0
        progress = True
        while progress:
            progress = False
            rows = txn.conn.execute(
                "SELECT wid, y_update, metadata, hlc, node FROM doc_waiting"
                " WHERE collection = ? AND id = ? ORDER BY wid",
                slot,
            ).fetchall()
            if not rows:
                self._waiting_slots.discard(slot)
                # Rolled back, the rows this emptied wait again.
                txn.on_rollback(partial(self._waiting_slots.add, slot))
                return applied
            for wid, update, metadata, hlc, node in rows:
                change = ydoc.document_change(*slot, update, hlc, node)._replace(metadata=metadata)
                merged = self._merge_update(
                    txn, slot, update, ydoc.version_of(change), change, logged
                )
                if merged is not None:
                    txn.conn.execute("DELETE FROM doc_waiting WHERE wid = ?", (wid,))
                    applied += merged
                    progress = True
        return applied

    # -- compaction ------------------------------------------------------------------

    def due_for_compaction(self, scan: bool = False) -> list[tuple[str, str]]:
        """Documents whose logs have reached ``compact_log_rows`` updates.

        Known from the writes of this process; ``scan`` looks in the database
        too (once at start: logs left by an earlier process).
        """
        limit = self.compact_log_rows
        due = [slot for slot in self._due if self._log_counts.get(slot, 0) >= limit]
        if scan:
            rows = self._reader.execute(
                "SELECT collection, id FROM docs WHERE log_count >= ?", (self.compact_log_rows,)
            )
            due = list(dict.fromkeys([*due, *((c, i) for c, i in rows)]))
        return due

    def compact(self, slots: Sequence[tuple[str, str]]) -> asyncio.Future[int]:
        """Fold each document's log into one update; return how many were compacted.

        The folded update (the snapshot) takes the seq of the newest update it
        folds in, as this node's change. Every cursor still finds everything:
        a peer behind that seq receives the snapshot (which holds all it
        lacks), a peer past it had every update. So compaction needs no
        acknowledgements from peers.
        """

        def op(txn: Txn) -> int:
            done = 0
            for slot in slots:
                if self._compact_one(txn, slot):
                    done += 1
            return done

        return self._writer.submit(op)

    def _compact_one(self, txn: Txn, slot: tuple[str, str]) -> bool:
        loaded = self._load(txn.conn, slot)
        rows = txn.conn.execute(
            "SELECT seq, metadata, hlc, node FROM doc_log"
            " WHERE collection = ? AND id = ? ORDER BY seq",
            slot,
        ).fetchall()
        snapshot, snap_hlc, snap_node = txn.conn.execute(
            "SELECT snapshot, coalesce(snap_hlc, 0), coalesce(snap_node, 0) FROM docs"
            " WHERE collection = ? AND id = ?",
            slot,
        ).fetchone()
        if len(rows) < 2 and snapshot is None:
            return False  # already one update
        if loaded.whole:
            folded = loaded.doc.get_update()  # garbage-collected: smaller than the log
        else:  # keep what is pending as it is, for the updates that will complete it
            logged = txn.conn.execute(
                "SELECT y_update FROM doc_log WHERE collection = ? AND id = ? AND seq <= ?"
                " ORDER BY seq",
                (*slot, rows[-1][0]),
            )
            folded = merge_updates(*([snapshot] if snapshot else []), *(u for (u,) in logged))
        if len(folded) > ydoc.MAX_Y_STATE_BYTES:
            # Concurrent edits merged past the bound: one snapshot would be a change peers
            # refuse, so the log stays as it is (each of its rows within the bound) and
            # is looked at again after another compact_log_rows updates.
            log.warning("document %s/%s not compacted: %d bytes of Y state", *slot, len(folded))
            self._log_counts[slot] = 0
            self._due.discard(slot)
            return False
        version = (snap_hlc, snap_node)
        for _, metadata, hlc, node in rows:
            version = max(version, ydoc.version_of_row(metadata, hlc, node))
        newest_seq = rows[-1][0]
        txn.conn.execute(
            "DELETE FROM doc_log WHERE collection = ? AND id = ? AND seq <= ?",
            (*slot, newest_seq),
        )
        # The folded update is this node's change, stamped with the newest write it holds.
        txn.conn.execute(
            _LOG, (newest_seq, *slot, folded, encode_version(*version), version[0], self.node_id)
        )
        txn.conn.execute(
            "UPDATE docs SET snapshot = NULL, snap_seq = NULL, snap_hlc = NULL, snap_node = NULL,"
            " log_count = 1, log_bytes = ? WHERE collection = ? AND id = ?",
            (len(folded), *slot),
        )
        txn.on_rollback(partial(self._forget, slot))  # the log counts go with it
        self._resize(slot, loaded, len(folded))
        return True

    # -- the in-memory documents -------------------------------------------------------

    def _load(self, conn: sqlite3.Connection, slot: tuple[str, str]) -> _Loaded:
        loaded = self._cache.get(slot)
        if loaded is not None:
            self._cache.move_to_end(slot)
            return loaded
        row = conn.execute(
            "SELECT snapshot, hlc, node, log_count FROM docs WHERE collection = ? AND id = ?", slot
        ).fetchone()
        updates = [] if row is None or row[0] is None else [row[0]]
        updates += [
            update
            for (update,) in conn.execute(
                "SELECT y_update FROM doc_log WHERE collection = ? AND id = ? ORDER BY seq", slot
            )
        ]
        doc = ydoc.new_doc(self.client_id, *updates)
        whole = len(updates) == 0 or ydoc.integrates_fully(
            doc, merge_updates(*updates) if len(updates) > 1 else updates[0]
        )
        data = ydoc.read_json(doc)
        text = None if data is None else ydoc.serialize(data)
        hlc, node = (row[1], row[2]) if row else (0, 0)
        if row and row[3]:
            self._log_counts[slot] = row[3]
            if row[3] >= self.compact_log_rows:
                self._due.add(slot)
        size = sum(map(len, updates))
        loaded = _Loaded(doc, ydoc.Editor(doc), data, text, size, hlc, node, whole)
        self._cache[slot] = loaded
        self._cache_bytes += loaded.size
        self._evict()
        return loaded

    def _logged(self, slot: tuple[str, str], loaded: _Loaded, added: int) -> None:
        """An update of ``added`` bytes was logged for the document."""
        loaded.size += added
        self._cache_bytes += added
        if self._cache_bytes > self.cache_limit:
            self._evict()
        # Log lengths are counted in memory: no extra query on the write path.
        count = self._log_counts[slot] = self._log_counts.get(slot, 0) + 1
        if count >= self.compact_log_rows:
            self._due.add(slot)
            self.compaction_due.set()

    def _resize(self, slot: tuple[str, str], loaded: _Loaded, size: int) -> None:
        self._cache_bytes += size - loaded.size
        loaded.size = size
        self._log_counts[slot] = 1  # the folded update
        self._due.discard(slot)

    def _evict(self) -> None:
        while self._cache_bytes > self.cache_limit and len(self._cache) > 1:
            _, oldest = self._cache.popitem(last=False)
            self._cache_bytes -= oldest.size
            oldest.editor.close()

    def _drop(self, slot: tuple[str, str]) -> None:
        """Let the next use load the document again from the database."""
        loaded = self._cache.pop(slot, None)
        if loaded is not None:
            self._cache_bytes -= loaded.size
            loaded.editor.close()

    def _forget(self, slot: tuple[str, str]) -> None:
        """Drop the document and what is counted of its log: the next use reloads both."""
        self._drop(slot)
        self._log_counts.pop(slot, None)
        self._due.discard(slot)
        # Edits of the forgotten copy may have been seen (ystate is committed-only,
        # but be safe): new edits take item ids no one can hold yet.
        self.client_id = _new_client_id()


Edited = tuple[bytes, dict[str, Any] | None, str | None]
"""What an edit returns: the Y update, the new JSON and its text (None: deleted)."""
_Edit = Callable[[DocumentStore, _Loaded, Any], Edited]


class _LocalWrite:
    """One local write: its writer op.

    One object rather than closures per write: on the PATCH path, the
    closures and their cells were a large share of the garbage that made the
    collector run.
    """

    __slots__ = ("argument", "documents", "edit", "slot")

    def __init__(
        self, documents: DocumentStore, slot: tuple[str, str], edit: _Edit, argument: Any
    ) -> None:
        self.documents = documents
        self.slot = slot
        self.edit = edit
        self.argument = argument

    def run(self, txn: Txn) -> DocWriteResult:
        """The writer op."""
        return self.documents._write_local(txn, self.slot, self.edit, self.argument)


def _edit_replace(documents: DocumentStore, loaded: _Loaded, argument: Any) -> Edited:
    new, text = argument
    return loaded.editor.replace(loaded.json, new), new, text


def _edit_patch(documents: DocumentStore, loaded: _Loaded, merge: Any) -> Edited:
    if loaded.json is None:
        raise DocumentError("not_found", "no such document")
    # Both the document and the patch nest at most MAX_DEPTH levels: so does the result.
    new = ydoc.merge_patch(loaded.json, merge)
    text = ydoc.serialize(new)
    ydoc.check_size(text)
    return loaded.editor.patch(loaded.json, merge), new, text


def _edit_delete(documents: DocumentStore, loaded: _Loaded, argument: Any) -> Edited:
    if loaded.json is None:
        return ydoc.EMPTY_UPDATE, None, None
    return loaded.editor.delete(), None, None


def _edit_client_update(documents: DocumentStore, loaded: _Loaded, update: Any) -> Edited:
    result = ydoc.validate_update(loaded.doc, update, documents.client_id)
    delta = loaded.editor.apply(update)
    return delta, result, None if result is None else ydoc.serialize(result)


def _new_client_id() -> int:
    # Yjs keeps client ids within 2**53 (JavaScript numbers); 0 is never used.
    return secrets.randbits(52) + 1
