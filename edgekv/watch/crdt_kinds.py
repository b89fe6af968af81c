"""Watch kinds of counters and sets: ``/v1/counters/{ns}/_watch``, ``/v1/sets/{ns}/_watch``.

A counter or a set is a group of key-value rows (one per node, or per member
and node: see "Counters and sets" in docs/design.md), so a watch of them reads
the same rows as a key-value watch, in their namespace ``@ctr:``/``@set:`` +
ns, and turns a row's change into the state it changed:

* a counter: ``{"key", "op": "update", "value", "version", "bookmark"}``, the
  counter's value at this PoP as it is when sent (changes of one counter fold
  into one event, as documents do);
* a set: ``{"key", "member", "op": "add" | "remove", "version", "bookmark"}``,
  whether the member is in the set now (folded per member).

Filters match the counter's or set's key (``prefix``, ``keys``), never a row's.
A counter whose rows expire changes value with no change in the log: no event
says so (a ``GET`` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import ClassVar

from edgekv.store.crdts import CounterState
from edgekv.store.watch_reads import WatchReads
from edgekv.watch.kinds import PAGE_BYTES, Coverage, Event, WatchFilter
from edgekv_replication import counters, orsets
from edgekv_replication.bookmarks import Bookmark
from edgekv_replication.changes import Change
from edgekv_replication.versions import encode_version
from edgekv_replication.watch_tokens import covers

CounterRead = Callable[[str, bytes], CounterState]
"""``(ns, key)``: a counter's state at this node."""
MemberRead = Callable[[str, bytes, str], tuple[bool, tuple[int, int] | None]]
"""``(ns, key, member)``: whether the member is in the set, and its newest stamp."""


class _GroupKind:
    """What counters and sets share: rows of a prefixed namespace, grouped per event."""

    name: ClassVar[str]
    folds: ClassVar[bool] = True  # an event is the counter (member) as it is now
    ns_prefix: ClassVar[str]

    def __init__(self, reads: WatchReads) -> None:
        """Read the rows with ``reads``."""
        self._reads = reads

    def space_of(self, change: Change) -> str | None:
        """The namespace of a counter's (set's) row."""
        ns = change.ns
        return ns[len(self.ns_prefix) :] if ns.startswith(self.ns_prefix) else None

    def resumed_skip(self, change: Change, coverage: Coverage) -> bool:
        """Covered by the token's vector: the watcher had this row's state or a newer one."""
        return covers(coverage.vector, change.hlc, change.node)

    def name_of(self, change: Change) -> bytes:
        """The counter's (set's) key."""
        raise NotImplementedError

    def fold_key(self, change: Change) -> bytes:
        """The counter (the set and member) a row belongs to."""
        raise NotImplementedError

    def encode(self, watch: WatchFilter, change: Change, node_id: int) -> bytes | None:
        """The event of the state ``change`` is part of, as it is now (None: nothing to send)."""
        raise NotImplementedError

    def live(self, change: Change, watch: WatchFilter, node_id: int) -> bytes | None:
        """The event of the counter (member) the row belongs to, as it is now."""
        return self.encode(watch, change, node_id)

    def after(
        self, watch: WatchFilter, cursor: int, upto: int, limit: int, node_id: int
    ) -> tuple[list[Event], int, bool]:
        """Counters (members) with a row changed after ``cursor``, each once, as they are now."""
        rows, full = self._reads.kv_after(
            self.ns_prefix + watch.space, watch.prefix, cursor, upto, limit, PAGE_BYTES
        )
        end = rows[-1].seq if full else upto
        newest: dict[bytes, Change] = {}
        for row in rows:
            if watch.matches(self.name_of(row)):
                fold = self.fold_key(row)
                newest.pop(fold, None)  # in the order of each one's newest row
                newest[fold] = row
        return self._events(watch, newest.values(), node_id, lambda row: row.seq), end, full

    def scan(
        self,
        watch: WatchFilter,
        after: bytes | None,
        upto: int,
        limit: int,
        node_id: int,
        coverage: Coverage | None,
    ) -> tuple[list[Event], bytes | None]:
        """Every counter (member) by key: present ones (snapshot) or not covered ones (resume).

        A page ends on a whole group: one cut inside a group's rows sends the group
        in the next page, once.
        """
        rows, full = self._reads.kv_scan(
            self.ns_prefix + watch.space, watch.prefix, after, upto, limit, PAGE_BYTES
        )
        groups: dict[bytes, list[Change]] = {}
        for row in rows:
            if watch.matches(self.name_of(row)):
                groups.setdefault(self.fold_key(row), []).append(row)
        following: bytes | None = None
        if full:
            following = rows[-1].key
            last = self.fold_key(rows[-1])
            earlier = [row for row in rows if self.fold_key(row) != last]
            if earlier:  # the last group may go on in the next page: send it there
                groups.pop(last, None)
                following = earlier[-1].key
        chosen = [
            max(group, key=lambda row: (row.hlc, row.node))
            for group in groups.values()
            if coverage is None or not all(self.resumed_skip(row, coverage) for row in group)
        ]
        events = self._events(watch, chosen, node_id, lambda row: upto)
        if coverage is None:  # a snapshot: what is there now, not removals
            events = [e for e in events if not self._absent(e.data)]
        return events, following

    def _events(
        self,
        watch: WatchFilter,
        rows: Iterable[Change],
        node_id: int,
        seq_of: Callable[[Change], int],
    ) -> list[Event]:
        events = []
        for row in rows:
            data = self.encode(watch, row, node_id)
            if data is not None:
                events.append(Event(seq_of(row), self.fold_key(row), row.hlc, row.node, data))
        return events

    def _absent(self, data: bytes) -> bool:
        """Whether an event says its subject is gone (left out of a snapshot)."""
        return False


def _bookmark(node_id: int, change: Change) -> str:
    return Bookmark(node_id, change.seq, change.hlc).encode()


def _key_text(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


class CounterKind(_GroupKind):
    """Counters: an event per changed counter with its value now."""

    name: ClassVar[str] = "counters"
    ns_prefix: ClassVar[str] = counters.CTR_NS_PREFIX

    def __init__(self, reads: WatchReads, counter: CounterRead) -> None:
        """Read rows with ``reads``, a counter's state with ``counter``."""
        super().__init__(reads)
        self._counter = counter

    def name_of(self, change: Change) -> bytes:
        """The counter's key (the row's key without its node)."""
        return change.key[: -counters.ROW_SUFFIX_BYTES]

    fold_key = name_of

    def encode(self, watch: WatchFilter, change: Change, node_id: int) -> bytes | None:
        """``{"key", "op": "update", "value", "version", "bookmark"}``."""
        key = self.name_of(change)
        state = self._counter(watch.space, key)
        if state.version is None:
            return None  # every row gone (collected): nothing to say
        event = {
            "key": _key_text(key),
            "op": "update",
            "value": state.value,
            "version": encode_version(*state.version),
            "bookmark": _bookmark(node_id, change),
        }
        return json.dumps(event, separators=(",", ":")).encode()


class SetKind(_GroupKind):
    """Sets: an event per changed member, added or removed, as it is now."""

    name: ClassVar[str] = "sets"
    ns_prefix: ClassVar[str] = orsets.SET_NS_PREFIX

    def __init__(self, reads: WatchReads, member: MemberRead) -> None:
        """Read rows with ``reads``, a member's presence with ``member``."""
        super().__init__(reads)
        self._member = member

    def name_of(self, change: Change) -> bytes:
        """The set's key (the row's key up to its 0xff)."""
        return change.key.partition(orsets.KEY_SEPARATOR)[0]

    def fold_key(self, change: Change) -> bytes:
        """The set's key and the member (the row's key without its node)."""
        return change.key.rpartition(orsets.NODE_SEPARATOR)[0]

    def encode(self, watch: WatchFilter, change: Change, node_id: int) -> bytes | None:
        """``{"key", "member", "op": "add" | "remove", "version", "bookmark"}``."""
        key, member, _ = orsets.split_row_key(change.key)
        present, version = self._member(watch.space, key, member)
        if version is None:
            version = (change.hlc, change.node)  # its rows retired: removed
        event = {
            "key": _key_text(key),
            "member": member,
            "op": "add" if present else "remove",
            "version": encode_version(*version),
            "bookmark": _bookmark(node_id, change),
        }
        return json.dumps(event, separators=(",", ":")).encode()

    def _absent(self, data: bytes) -> bool:
        """A removed member (the event's JSON as :meth:`encode` writes it)."""
        return b'"op":"remove"' in data
