"""A node's store: the facade that opens the database and exposes its pieces.

Each concept lives in one module, and this class only assembles them:

``database``    the file, its connections, migrations, the writer and clock
``kv``          key-value entries: get, list, write
``changelog``   the one change log (key-value rows and document updates) in pages
``merge``       remote changes merged in, with the peer's cursor
``peer_state``  cursors, acks, re-sync, members, strong namespaces, held changes
``documents``   JSON documents as Y documents; ``doc_queries`` their queries and indexes
``crdts``       counters and sets, as groups of key-value rows

The hot methods (:meth:`get`, :meth:`list_keys`, :meth:`write`,
:meth:`apply_changes`, :meth:`page_after`, ...) are the pieces' own bound
methods, set as attributes here: calling them through the facade costs no
extra call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from edgekv.store.browse import Browse
from edgekv.store.cache import ReadCache
from edgekv.store.changelog import ChangeLog
from edgekv.store.crdts import Crdts
from edgekv.store.database import Database, NodeIdentity
from edgekv.store.documents import DocumentStore
from edgekv.store.kv import Entry, KeyValues
from edgekv.store.merge import LAST_WRITER_WINS, Merger
from edgekv.store.peer_state import PeerState
from edgekv.store.watch_reads import WatchReads
from edgekv_replication.peer_clocks import PeerClocks
from edgekv_replication.relays import OriginMarks


class Store:
    """The store of one node: key-value entries, documents, the change log and peer state."""

    def __init__(
        self,
        data_dir: str | Path,
        synchronous: str = "full",
        max_clock_offset_ms: int = 500,
        read_cache_entries: int = 100_000,
        wall_clock_ms: Callable[[], int] | None = None,
        merge_statement: str = LAST_WRITER_WINS,
        allow_new_node: bool = False,
    ) -> None:
        """Open (creating and migrating if needed) the database in ``data_dir``.

        See :class:`~edgekv.store.database.Database` for the directory lock and
        the errors. ``wall_clock_ms`` is the wall clock new stamps read
        (None: the system clock; the node passes a
        :class:`~edgekv.skewed_clock.SkewedClock` only under its test settings).
        ``merge_statement`` merges a remote
        key-value change: :data:`~edgekv.store.merge.LAST_WRITER_WINS`.
        """
        self.cache: ReadCache[Entry] = ReadCache(read_cache_entries)
        self.database = Database(
            data_dir,
            synchronous,
            max_clock_offset_ms,
            wall_clock_ms,
            allow_new_node,
            invalidate=self._invalidate,
        )
        database = self.database
        self.path = database.path
        self.health = database.health
        self.recovered = database.recovered
        """Opened after an unclean stop that may have lost the last commits."""
        self.identity: NodeIdentity = database.identity
        self.clock = database.clock
        self.writer = database.writer
        self.peer_clocks = PeerClocks(self.clock, max_clock_offset_ms)
        """Peers' clocks as heard: they cap this node's stamps when its own clock runs ahead."""
        node_id = self.identity.node_id
        self.documents = DocumentStore(self.writer, database.reader, node_id)
        """JSON documents (Y documents); their changes share this change log."""
        self.kv = KeyValues(database.reader, self.writer, self.cache, node_id)
        self.log = ChangeLog(database.reader, self.documents)
        self.crdts = Crdts(database.reader, self.writer, node_id, read_cache_entries)
        """Counters and sets: groups of this log's rows (edgekv_replication.counters, .orsets)."""
        self.peers = PeerState(database.reader, self.writer)
        self.browse = Browse(database.reader)
        """Bounded read-only views for the operator console."""
        self.watch_reads = WatchReads(database.reader)
        """Pages of one namespace's or collection's changes, for watches."""
        self.merger = Merger(self.writer, self.documents, self.peers, node_id, merge_statement)
        self.origin_marks = OriginMarks(self.clock, self.writer.seq, valid=database.clean)
        """Marks of this node's own writes for its pull streams."""
        self.on_commit(self.origin_marks.committed)

        # The pieces' methods, bound once: no wrapper call per request or page.
        kv = self.kv
        self.get = kv.get
        self.value_size = kv.value_size
        self.list_keys = kv.list_keys
        self.list_page = kv.list_page
        self.write = kv.write
        self.write_value = kv.write_value
        self.live_count = kv.live_count
        self.changes_after = self.log.changes_after
        self.page_after = self.log.page_after
        self.advance_window = self.log.advance_window
        self.apply_changes = self.merger.apply_changes
        self.merge_changes = self.merger.merge_changes
        self.release_held = self.merger.release_held
        peers = self.peers
        self.peer_cursor = peers.peer_cursor
        self.peer_cursors = peers.peer_cursors
        self.save_peer_cursor = peers.save_peer_cursor
        self.settled_cursor = peers.settled_cursor
        self.purged_seq = peers.purged_seq
        self.peer_acks = peers.peer_acks
        self.record_ack = peers.record_ack
        self.collect_tombstones = peers.collect_tombstones
        self.must_resync = peers.must_resync
        self.members = peers.members
        self.upsert_members = peers.upsert_members
        self.strong_namespaces = peers.strong_namespaces
        self.remember_strong_namespaces = peers.remember_strong_namespaces
        self.held_count = peers.held_count
        self.read_all = database.read_all
        self.size_bytes = database.size_bytes

    def _invalidate(self, slots: Iterable[tuple[str, bytes]]) -> None:
        """After a commit: forget what it touched in the read caches (entries, counters, sets)."""
        slots = list(slots)  # read twice
        self.crdts.invalidate(slots)
        self.cache.invalidate(slots)

    @property
    def node_id(self) -> int:
        """This node's id: the tie-breaker of its write stamps."""
        return self.identity.node_id

    @property
    def seq(self) -> int:
        """The seq of the newest committed change."""
        return self.writer.seq

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the commit under way has settled (at once if none is)."""
        self.writer.when_settled(callback)

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seq)`` after each commit that changed data (new changes to send)."""
        self.writer.add_commit_listener(listener)

    def close(self) -> None:
        """Commit queued writes, close the database and unlock the directory."""
        try:
            self.database.close()
        finally:
            self.documents.close()
