"""What a watch can follow, one :class:`Kind` per kind of change: a filter and an encoder each.

A kind says which log changes belong to it (and to which namespace or
collection), how a change becomes an event, and how to read its changes for a
catch-up (after a seq, or by key up to a seq). The feed (:mod:`edgekv.watch.hub`)
and the catch-up (:mod:`edgekv.watch.stream`) know nothing else of a kind, so
counters and sets (:mod:`edgekv.watch.crdt_kinds`) slot in as one more class each.

Event data is JSON: ``key``, ``op`` (``put``, ``delete``, ``expire``),
``version``, ``metadata``, ``expiration``, the value (base64 for key-value
entries, the document itself for documents; left out above the node's inline
limit or with ``include_values=false``, ``value_bytes`` saying how large it
is) and ``bookmark`` (a read-your-writes bookmark of this node's log at the
change, for reads anywhere that must see it).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

from edgekv.store.watch_reads import WatchReads
from edgekv_replication.bookmarks import Bookmark
from edgekv_replication.changes import Change
from edgekv_replication.counters import CTR_NS_PREFIX
from edgekv_replication.documents import DOC_NS_PREFIX
from edgekv_replication.orsets import SET_NS_PREFIX
from edgekv_replication.versions import encode_version
from edgekv_replication.watch_tokens import covers


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which keys of one namespace (or documents of one collection) a watcher follows."""

    space: str
    """The namespace or collection."""
    prefix: bytes = b""
    keys: frozenset[bytes] | None = None
    """Exactly these keys (then ``prefix`` is empty)."""
    include_values: bool = True

    def matches(self, key: bytes) -> bool:
        """Whether ``key`` is one this watcher follows."""
        if self.keys is not None:
            return key in self.keys
        return key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a resumed watcher had already: its token's vector, and a floor for documents.

    ``floor``: the least hlc the vector covers for every origin this node
    knows (0 when it lacks one). A document whose newest write is at or below
    it holds nothing the watcher lacks.
    """

    vector: Mapping[int, int]
    floor: int


NO_COVERAGE = Coverage({}, -1)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a catch-up: its place in the log, its key and stamp, its data."""

    seq: int
    key: bytes
    hlc: int
    node: int
    data: bytes


class Kind(Protocol):
    """A kind of change a watch follows (key-value entries, documents, ...)."""

    name: ClassVar[str]
    folds: ClassVar[bool]
    """Several changes of one key in one round of the tail make one event (its state now)."""

    def space_of(self, change: Change) -> str | None:
        """The namespace or collection of a log change of this kind, else None."""
        ...

    def name_of(self, change: Change) -> bytes:
        """The key a watch filter matches for a change (a counter's or set's, not its row's)."""
        ...

    def fold_key(self, change: Change) -> bytes:
        """What an event of a folding kind is about (changes of one fold into one event)."""
        ...

    def live(self, change: Change, watch: WatchFilter, node_id: int) -> bytes | None:
        """The event data of a change from the live tail (None: nothing to send)."""
        ...

    def resumed_skip(self, change: Change, coverage: Coverage) -> bool:
        """Whether a resumed watcher already has ``change`` (or newer) by its token."""
        ...

    def after(
        self, watch: WatchFilter, cursor: int, upto: int, limit: int, node_id: int
    ) -> tuple[list[Event], int, bool]:
        """Changes after ``cursor`` up to ``upto``: events, where the page ends, whether full.

        Folded: a key comes once, in its newest state.
        """
        ...

    def scan(
        self,
        watch: WatchFilter,
        after: bytes | None,
        upto: int,
        limit: int,
        node_id: int,
        coverage: Coverage | None,
    ) -> tuple[list[Event], bytes | None]:
        """The state of every key by key order up to ``upto``; the next page's start, or None.

        ``coverage`` None: a snapshot (live keys only). Else a resume: every
        state (deletes too) the coverage does not hold.
        """
        ...


_NOT_KEY_VALUE = (DOC_NS_PREFIX, CTR_NS_PREFIX, SET_NS_PREFIX)
"""Log namespaces that hold other kinds' rows (user namespaces cannot start so)."""

PAGE_ROWS = 500
PAGE_BYTES = 512 * 1024
"""Values read per page of a catch-up: what a stream holds at a time while its client
reads (half the default ``watch_buffer_bytes``), besides one row that may pass it."""


def _bookmark(node_id: int, seq: int, hlc: int) -> str:
    return Bookmark(node_id, seq, hlc).encode()


class KeyValueKind:
    """Key-value entries: ``/v1/kv/{ns}/_watch``."""

    name: ClassVar[str] = "kv"
    folds: ClassVar[bool] = False  # a row is one state: each is sent as it was

    def __init__(self, reads: WatchReads, inline_bytes: int) -> None:
        """Read with ``reads``; values above ``inline_bytes`` are left out of events."""
        self._reads = reads
        self._inline = inline_bytes

    def space_of(self, change: Change) -> str | None:
        """Key-value changes belong to their namespace (not a document's, counter's or set's)."""
        ns = change.ns
        return None if ns.startswith(_NOT_KEY_VALUE) else ns

    def name_of(self, change: Change) -> bytes:
        """An entry's key."""
        return change.key

    fold_key = name_of

    def live(self, change: Change, watch: WatchFilter, node_id: int) -> bytes | None:
        """The event of an entry's new state."""
        return self.encode(change, watch.include_values, node_id, time.time())

    def resumed_skip(self, change: Change, coverage: Coverage) -> bool:
        """Covered by the token's vector: the watcher had this state or a newer one."""
        return covers(coverage.vector, change.hlc, change.node)

    def encode(self, change: Change, include_values: bool, node_id: int, now: float) -> bytes:
        """The JSON of an entry's state as an event.

        Written field by field rather than through ``json.dumps`` of a dict: the
        tail encodes every change, and only the key needs JSON's escaping.
        """
        value = change.value
        expiration = change.expiration
        if value is None:
            op = "delete"
        elif expiration is not None and expiration <= now:
            op = "expire"
        else:
            op = "put"
        key = json.dumps(change.key.decode("utf-8", "surrogateescape"))
        version = encode_version(change.hlc, change.node)
        expires = "null" if expiration is None else str(int(expiration))
        text = f'{{"key":{key},"op":"{op}","version":"{version}","expiration":{expires}'
        if op == "put" and value is not None:
            if include_values and len(value) <= self._inline:
                text += f',"value":"{base64.b64encode(value).decode("ascii")}"'
            else:
                text += f',"value_bytes":{len(value)}'
        # Metadata is stored as checked JSON text: spliced in, not parsed again.
        metadata = change.metadata if op == "put" and change.metadata is not None else "null"
        bookmark = _bookmark(node_id, change.seq, change.hlc)
        return f'{text},"bookmark":"{bookmark}","metadata":{metadata}}}'.encode()

    def after(
        self, watch: WatchFilter, cursor: int, upto: int, limit: int, node_id: int
    ) -> tuple[list[Event], int, bool]:
        """Rows of the namespace after ``cursor`` (a row is its key's newest state)."""
        changes, full = self._reads.kv_after(
            watch.space, watch.prefix, cursor, upto, limit, PAGE_BYTES
        )
        end = changes[-1].seq if full else upto
        now = time.time()
        events = [
            Event(c.seq, c.key, c.hlc, c.node, self.encode(c, watch.include_values, node_id, now))
            for c in changes
            if watch.matches(c.key)
        ]
        return events, end, full

    def scan(
        self,
        watch: WatchFilter,
        after: bytes | None,
        upto: int,
        limit: int,
        node_id: int,
        coverage: Coverage | None,
    ) -> tuple[list[Event], bytes | None]:
        """Every matching entry's state at or below ``upto``, by key."""
        changes, full = self._reads.kv_scan(
            watch.space, watch.prefix, after, upto, limit, PAGE_BYTES
        )
        now = time.time()
        events = []
        for change in changes:
            if not watch.matches(change.key):
                continue
            if coverage is None:
                live = change.value is not None and (
                    change.expiration is None or change.expiration > now
                )
                if not live:
                    continue
            elif self.resumed_skip(change, coverage):
                continue
            data = self.encode(change, watch.include_values, node_id, now)
            events.append(Event(change.seq, change.key, change.hlc, change.node, data))
        return events, (changes[-1].key if full else None)


class DocumentKind:
    """Documents: ``/v1/docs/{collection}/_watch``; an event holds the whole document."""

    name: ClassVar[str] = "docs"
    folds: ClassVar[bool] = True  # an event is the document as it is now

    def __init__(self, reads: WatchReads, inline_bytes: int) -> None:
        """Read with ``reads``; documents above ``inline_bytes`` of JSON are left out."""
        self._reads = reads
        self._inline = inline_bytes

    def space_of(self, change: Change) -> str | None:
        """Document changes belong to their collection."""
        ns = change.ns
        return ns[len(DOC_NS_PREFIX) :] if ns.startswith(DOC_NS_PREFIX) else None

    def name_of(self, change: Change) -> bytes:
        """A document's id."""
        return change.key

    fold_key = name_of

    def live(self, change: Change, watch: WatchFilter, node_id: int) -> bytes | None:
        """The event of a document's state now (updates of one round fold into it)."""
        doc_id = change.key.decode("utf-8", "surrogateescape")
        return self._event(watch, doc_id, change.seq, node_id)

    def resumed_skip(self, change: Change, coverage: Coverage) -> bool:
        """Covered by the token's vector: the update was in what the watcher had."""
        return covers(coverage.vector, change.hlc, change.node)

    def _event(self, watch: WatchFilter, doc_id: str, seq: int, node_id: int) -> bytes | None:
        state = self._reads.doc_state(watch.space, doc_id)
        if state is None:
            return None
        text, hlc, node = state
        return self.encode(doc_id, text, hlc, node, seq, watch.include_values, node_id)

    def encode(
        self,
        doc_id: str,
        text: str | None,
        hlc: int,
        node: int,
        seq: int,
        include_values: bool,
        node_id: int,
    ) -> bytes:
        """The JSON of a document's state as an event (its JSON spliced in as stored)."""
        fields: dict[str, object] = {
            "key": doc_id,
            "op": "delete" if text is None else "put",
            "version": encode_version(hlc, node),
            "metadata": None,
            "expiration": None,
        }
        inline = text is not None and include_values and len(text) <= self._inline
        if text is not None and not inline:
            fields["value_bytes"] = len(text.encode())
        fields["bookmark"] = _bookmark(node_id, seq, hlc)
        body = json.dumps(fields, separators=(",", ":"))
        if inline:
            body = f'{body[:-1]},"value":{text}}}'
        return body.encode()

    def after(
        self, watch: WatchFilter, cursor: int, upto: int, limit: int, node_id: int
    ) -> tuple[list[Event], int, bool]:
        """Documents changed after ``cursor``, each in its state now."""
        changed = self._reads.docs_after(watch.space, cursor, upto, limit)
        full = len(changed) == limit
        end = changed[-1][1] if full else upto
        events = []
        for doc_id, seq in changed:
            key = doc_id.encode()
            if not watch.matches(key):
                continue
            state = self._reads.doc_state(watch.space, doc_id)
            if state is None:
                continue
            text, hlc, node = state
            data = self.encode(doc_id, text, hlc, node, seq, watch.include_values, node_id)
            events.append(Event(seq, key, hlc, node, data))
        return events, end, full

    def scan(
        self,
        watch: WatchFilter,
        after: bytes | None,
        upto: int,
        limit: int,
        node_id: int,
        coverage: Coverage | None,
    ) -> tuple[list[Event], bytes | None]:
        """Every matching document by id: live ones (snapshot) or possibly unseen ones (resume).

        A document's state is read as it is now, whatever ``upto``: a newer
        change to it comes again from the tail, which a client takes as the
        same version or a newer one.
        """
        start = after.decode() if after is not None else ""
        rows = self._reads.docs_scan(watch.space, start, limit)
        events = []
        for doc_id, text, hlc, node in rows:
            key = doc_id.encode()
            if not watch.matches(key):
                continue
            if coverage is None and text is None:
                continue
            if coverage is not None and hlc <= coverage.floor and node in coverage.vector:
                continue
            data = self.encode(doc_id, text, hlc, node, upto, watch.include_values, node_id)
            events.append(Event(upto, key, hlc, node, data))
        return events, (rows[-1][0].encode() if len(rows) == limit else None)


KINDS = ("kv", "docs", "counters", "sets")
"""The kinds a node serves, by name (each a class above)."""
