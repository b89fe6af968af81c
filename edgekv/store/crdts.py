"""Counters and sets in SQLite: their rows of ``kv``, read and written by their own rules.

A counter or a set is a group of ``kv`` rows, one per node (and, for a set,
per member) -- see :mod:`edgekv_replication.counters` and
:mod:`edgekv_replication.orsets` for the rows and their merge. Each row is an
ordinary last-writer-wins entry of the change log, so replication, the
upstream and tombstone collection take them as they are; this module only
reads a group's rows and writes this node's row inside one writer op, so an
add is a read-modify-write no other write interleaves with.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edgekv.store.cache import ReadCache
from edgekv.store.kv import UPSERT, WriteResult
from edgekv.store.writer import Txn, Writer
from edgekv_replication import counters, orsets

_ROWS = (
    "SELECT key, value, expiration, hlc, node FROM kv"
    " WHERE ns = ? AND key >= ? AND key < ? AND value IS NOT NULL ORDER BY key"
)
_SET_ROWS_PAGE = _ROWS + " LIMIT ?"
_SET_SIZES = 4096
"""Sets whose size the writer keeps between adds (the least recently filled go first)."""
_ROW_NS, _ROW_KEY = 0, 1
"""Where a batch row (``Txn.touched_rows``) holds its namespace and key."""
_NEWEST = (
    "SELECT hlc, node FROM kv WHERE ns = ? AND key >= ? AND key < ?"
    " ORDER BY hlc DESC, node DESC LIMIT 1"
)
# Every set row, tombstones too, grouped by set and member (the retiring pass).
_ALL_SET_ROWS = (
    "SELECT ns, key, value, hlc, node, seq FROM kv"
    " WHERE ns >= '" + orsets.SET_NS_PREFIX + "' AND ns < '@set;' ORDER BY ns, key"
)
# Every counter row, a counter's rows together (the retiring pass).
_ALL_COUNTER_ROWS = (
    "SELECT ns, key, value, expiration, hlc, node, seq FROM kv WHERE ns >= '"
    + counters.CTR_NS_PREFIX
    + "' AND ns < '@ctr;' AND value IS NOT NULL ORDER BY ns, key"
)
_SET_ROWS_READ = 512
"""Rows read per step of a set listing (a member has a row per node that wrote it)."""


class RowTooLarge(ValueError):
    """A reset or removal whose row would exceed the rows' limit (about a thousand PoPs)."""


class SetFull(Exception):
    """An add that would take a set past ``max_set_members``; nothing was applied."""


@dataclass(frozen=True, slots=True)
class CounterWrite:
    """Where a counter write landed, and the value this node then sees."""

    hlc: int
    node: int
    seq: int
    value: int


@dataclass(frozen=True, slots=True)
class CounterState:
    """A counter as read: its value and version (None: never written here)."""

    value: int
    version: tuple[int, int] | None
    changes_at: float | None = None
    """When a row's expiration changes the value (None: never): a cached state ends then."""


@dataclass(frozen=True, slots=True)
class SetPage:
    """A page of a set's members, sorted; ``more`` when members follow ``members[-1]``."""

    members: list[str]
    more: bool
    version: tuple[int, int] | None


def _contributions(rows: Sequence[Any]) -> list[counters.Contribution]:
    # A row's node is its origin: the node in its key, as intake holds every row to.
    decode, contribution = counters.decode_row, counters.Contribution
    return [
        contribution(node, decode(value), hlc, expiration)
        for _, value, expiration, hlc, node in rows
    ]


def _member_rows(rows: Sequence[Any]) -> list[orsets.MemberRow]:
    found = []
    for raw_key, value, _, hlc, _ in rows:
        _, member, origin = orsets.split_row_key(raw_key)
        found.append(orsets.MemberRow(member, origin, orsets.decode_row(value), hlc))
    return found


class Crdts:
    """Counters and sets of one node; created by :class:`~edgekv.store.store.Store`."""

    def __init__(
        self, reader: sqlite3.Connection, writer: Writer, node_id: int, cache_entries: int = 0
    ) -> None:
        """Read with ``reader``, write this node's rows with ``writer`` as ``node_id``.

        ``cache_entries``: how many counters' states to keep (as the key-value read
        cache keeps entries), kept exact by :meth:`invalidate` after every commit.
        """
        self._reader = reader
        self.writer = writer
        self.node_id = node_id
        self.cache: ReadCache[CounterState] = ReadCache(cache_entries)
        self._set_sizes: ReadCache[int] = ReadCache(_SET_SIZES)
        """Members per set, as counted by the writer: a set at its limit refuses
        every add, and counting it again for each refusal (every row decoded)
        would let one client hold the writer for everyone's writes."""

    def invalidate(self, slots: Iterable[tuple[str, bytes]]) -> None:
        """Forget the counters a commit touched (``slots``: the rows' ``(ns, key)``).

        Called by the writer after each commit, before it acknowledges the writes
        (through the store, with the key-value cache's slots).
        """
        slots = slots if isinstance(slots, list) else list(slots)
        self._set_sizes.invalidate(
            (ns, key.partition(orsets.KEY_SEPARATOR)[0])
            for ns, key in slots
            if ns.startswith(orsets.SET_NS_PREFIX)
        )
        if not self.cache:
            self.cache.invalidate(())  # moves the generation on: no fill from before
            return
        self.cache.invalidate(
            (ns, key[: -counters.ROW_SUFFIX_BYTES])
            for ns, key in slots
            if ns.startswith(counters.CTR_NS_PREFIX)
        )

    # -- counters -----------------------------------------------------------------------

    def counter(self, ns: str, key: bytes, now: float | None = None) -> CounterState:
        """The counter's value and version as this node holds it."""
        at = time.time() if now is None else now
        slot = (counters.counter_ns(ns), key)
        cached = self.cache.lookup(slot)
        if isinstance(cached, CounterState) and (
            cached.changes_at is None or at < cached.changes_at
        ):
            return cached
        generation = self.cache.generation
        low, high = counters.rows_range(key)
        rows = _contributions(self._reader.execute(_ROWS, (slot[0], low, high)).fetchall())
        if not rows:
            state = CounterState(0, None)
        else:
            ahead = [c.expiration for c in rows if c.expiration is not None and c.expiration > at]
            state = CounterState(
                counters.value_of(rows, at), counters.version_of(rows), min(ahead, default=None)
            )
        self.cache.fill(slot, state, generation)
        return state

    def member(self, ns: str, key: bytes, member: str) -> tuple[bool, tuple[int, int] | None]:
        """Whether ``member`` is in set ``key`` here, and its rows' newest stamp (None: none)."""
        rows = self._set_rows(self._reader, orsets.set_ns(ns), key, member)
        if not rows:
            return False, None
        return orsets.is_present(rows), orsets.version_of(rows)

    def counter_add(
        self, ns: str, key: bytes, amount: int, expiration: int | None = None
    ) -> asyncio.Future[CounterWrite]:
        """Add ``amount`` (raises :class:`~edgekv_replication.counters.CounterOverflow`)."""

        def op(txn: Txn) -> CounterWrite:
            change_ns = counters.counter_ns(ns)
            rows = self._counter_rows(txn.conn, change_ns, key)
            stamp = txn.clock.now()
            row, row_expiration, value = counters.plan_add(
                rows, self.node_id, amount, stamp, time.time(), expiration
            )
            seq = self._put(
                txn, change_ns, counters.row_key(key, self.node_id), counters.encode_row(row),
                row_expiration, stamp,
            )  # fmt: skip
            return CounterWrite(stamp, self.node_id, seq, value)

        return self.writer.submit(op, single_statement=True)

    def counter_reset(self, ns: str, key: bytes) -> asyncio.Future[WriteResult]:
        """Remove every contribution this node holds (observed-remove).

        This node's row is written even when it holds none (a counter never
        written here), as a delete of an absent key is: the answer does not
        tell a token that may only write whether the counter existed.
        """

        def op(txn: Txn) -> WriteResult:
            change_ns = counters.counter_ns(ns)
            rows = self._counter_rows(txn.conn, change_ns, key)
            stamp = txn.clock.now()
            row = counters.plan_reset(rows, self.node_id, stamp)
            own = next((c for c in rows if c.node == self.node_id), None)
            seq = self._put(
                txn, change_ns, counters.row_key(key, self.node_id), counters.encode_row(row),
                own.expiration if own else None, stamp,
            )  # fmt: skip
            return WriteResult(stamp, self.node_id, seq)

        return self.writer.submit(op, single_statement=True)

    @staticmethod
    def _counter_rows(
        conn: sqlite3.Connection, change_ns: str, key: bytes
    ) -> list[counters.Contribution]:
        low, high = counters.rows_range(key)
        return _contributions(conn.execute(_ROWS, (change_ns, low, high)).fetchall())

    def _put(
        self, txn: Txn, ns: str, key: bytes, value: bytes | None, expiration: int | None, stamp: int
    ) -> int:
        # What peers' intake would refuse is never written: it would halt replication.
        if value is not None and len(value) > counters.MAX_ROW_BYTES:
            raise RowTooLarge(
                f"the row would be {len(value)} bytes, over {counters.MAX_ROW_BYTES}: too many "
                "PoPs' contributions in one reset or removal"
            )
        txn.conn.execute(
            UPSERT, (txn.next_seq(), ns, key, value, None, expiration, stamp, self.node_id)
        )
        txn.touched.append((ns, key))
        return txn.take_seq()

    # -- sets ---------------------------------------------------------------------------

    def set_page(
        self,
        ns: str,
        key: bytes,
        prefix: str = "",
        after: str | None = None,
        limit: int = 1000,
    ) -> SetPage:
        """Up to ``limit`` members starting with ``prefix``, sorted, after member ``after``."""
        change_ns = orsets.set_ns(ns)
        low, high = orsets.rows_range(key, prefix)
        if after is not None:
            low = max(low, orsets.after_member(key, after))
        members: list[str] = []
        pending: list[orsets.MemberRow] = []
        while True:
            raw = self._reader.execute(
                _SET_ROWS_PAGE, (change_ns, low, high, _SET_ROWS_READ)
            ).fetchall()
            rows = _member_rows(raw)
            # A member's rows may continue past this read: hold the last member back.
            complete = len(raw) < _SET_ROWS_READ
            for row in rows:
                if pending and pending[0].member != row.member:
                    if orsets.is_present(pending):
                        members.append(pending[0].member)
                        if len(members) > limit:
                            break
                    pending = []
                pending.append(row)
            if len(members) > limit:
                break
            if complete:
                if pending and orsets.is_present(pending):
                    members.append(pending[0].member)
                break
            low = bytes(raw[-1][0]) + b"\x00"
        newest = self._reader.execute(_NEWEST, (change_ns, *orsets.rows_range(key))).fetchone()
        version = (int(newest[0]), int(newest[1])) if newest else None
        return SetPage(members[:limit], len(members) > limit, version)

    def set_update(
        self,
        ns: str,
        key: bytes,
        add: Sequence[str],
        remove: Sequence[str],
        max_members: int,
        clear: bool = False,
    ) -> asyncio.Future[WriteResult]:
        """Remove ``remove`` (every member, with ``clear``), then add ``add``, atomically.

        Raises :class:`SetFull` (nothing applied) if the set would pass ``max_members``.
        """

        def op(txn: Txn) -> WriteResult:
            change_ns = orsets.set_ns(ns)
            result = WriteResult(0, self.node_id, txn.seq)
            if clear:
                by_member: dict[str, list[orsets.MemberRow]] = {}
                for row in self._set_rows(txn.conn, change_ns, key, None):
                    by_member.setdefault(row.member, []).append(row)
                remove_plan = list(by_member.items())
            else:
                remove_plan = [(m, self._set_rows(txn.conn, change_ns, key, m)) for m in remove]
            for member, rows in remove_plan:
                new = orsets.plan_remove(rows, self.node_id)
                if new is not None:
                    stamp = txn.clock.now()
                    result = self._put_member(txn, change_ns, key, member, new, stamp)
                elif not clear:
                    result = self._rewrite_member(txn, change_ns, key, member, rows)
            added = [(m, self._set_rows(txn.conn, change_ns, key, m)) for m in add]
            newcomers = sum(1 for _, rows in added if not orsets.is_present(rows))
            if newcomers and self._count(txn, change_ns, key) + newcomers > max_members:
                raise SetFull(
                    f"the set would hold more than max_set_members ({max_members}) members"
                )
            for member, rows in added:
                stamp = txn.clock.now()  # the add's stamp is its row's
                new = orsets.plan_add(rows, self.node_id, stamp)
                result = self._put_member(txn, change_ns, key, member, new, stamp)
            return result

        return self.writer.submit(op)

    @staticmethod
    def _set_rows(
        conn: sqlite3.Connection, change_ns: str, key: bytes, member: str | None
    ) -> list[orsets.MemberRow]:
        if member is None:
            low, high = orsets.rows_range(key)
        else:
            low = key + orsets.KEY_SEPARATOR + member.encode() + orsets.NODE_SEPARATOR
            high = low + orsets.KEY_SEPARATOR
        return _member_rows(conn.execute(_ROWS, (change_ns, low, high)).fetchall())

    def _count(self, txn: Txn, change_ns: str, key: bytes) -> int:
        """The set's members, from the size cache when no commit has touched it since."""
        slot = (change_ns, key)
        cached = self._set_sizes.lookup(slot)
        if isinstance(cached, int):
            # Valid only for the committed rows: not if this transaction wrote some.
            if not _touches_set(txn, change_ns, key):
                return cached
            generation = None
        else:
            generation = self._set_sizes.generation
        rows = self._set_rows(txn.conn, change_ns, key, None)
        size = sum(1 for _ in orsets.members_of(rows))
        # What this transaction wrote may still roll back (a refused add rolls back
        # its own removals): only a count of committed rows is kept.
        if generation is not None and not _touches_set(txn, change_ns, key):
            self._set_sizes.fill(slot, size, generation)
        return size

    def _rewrite_member(
        self, txn: Txn, change_ns: str, key: bytes, member: str, rows: list[orsets.MemberRow]
    ) -> WriteResult:
        """Write this node's row of a member it does not hold as present, unchanged.

        The removal of an absent member is written all the same (this node's
        row as it is, or a tombstone when it has none: nothing changes in the
        set, and tombstone collection takes it), as a delete of an absent key
        is, so its answer does not tell a token that may only write whether
        the member was there.
        """
        own = next((r for r in rows if r.node == self.node_id), None)
        stamp = txn.clock.now()
        value = None if own is None else orsets.encode_row(own.row)
        seq = self._put(
            txn, change_ns, orsets.row_key(key, member, self.node_id), value, None, stamp
        )
        return WriteResult(stamp, self.node_id, seq)

    def _put_member(
        self, txn: Txn, change_ns: str, key: bytes, member: str, row: orsets.Row, stamp: int
    ) -> WriteResult:
        seq = self._put(
            txn, change_ns, orsets.row_key(key, member, self.node_id), orsets.encode_row(row),
            None, stamp,
        )  # fmt: skip
        return WriteResult(stamp, self.node_id, seq)

    def retire_counter_rows(self, acked_seq: int, before_hlc: int) -> asyncio.Future[int]:
        """Drop resets no longer needed from this node's counter rows; return how many changed.

        A row is settled (see :func:`~edgekv_replication.counters.retired`) by the
        tombstones' rule: at or below ``acked_seq`` (every member has applied this
        node's log up to here) and stamped before ``before_hlc`` (the horizon).
        """

        def op(txn: Txn) -> int:
            changed = 0
            for (change_ns, key), group in _counter_groups(txn.conn.execute(_ALL_COUNTER_ROWS)):
                own = next((c for c, _ in group if c.node == self.node_id), None)
                if own is None or (not own.row.resets and not (own.row.p or own.row.n)):
                    continue
                seqs = {c.node: seq for c, seq in group}

                def settled(row: counters.Contribution, seqs: dict[int, int] = seqs) -> bool:
                    return seqs[row.node] <= acked_seq and row.hlc < before_hlc

                stamp = txn.clock.now()
                new = counters.retired([c for c, _ in group], self.node_id, stamp, settled)
                if new is not None:
                    self._put(
                        txn, change_ns, counters.row_key(key, self.node_id),
                        counters.encode_row(new), own.expiration, stamp,
                    )  # fmt: skip
                    changed += 1
            return changed

        return self.writer.submit(op)

    def retire_set_rows(self, acked_seq: int, before_hlc: int) -> asyncio.Future[int]:
        """Retire covered adds and settled removals in this node's set rows; return how many.

        A row is settled (see :func:`~edgekv_replication.orsets.retired`) by the
        tombstones' rule: at or below ``acked_seq`` and stamped before
        ``before_hlc``. A row left empty becomes a tombstone, which tombstone
        collection deletes later.
        """

        def op(txn: Txn) -> int:
            changed = 0
            for (change_ns, key, member), group in _member_groups(txn.conn.execute(_ALL_SET_ROWS)):
                if not any(r.node == self.node_id for r, _ in group):
                    continue
                seqs = {r.node: seq for r, seq in group}

                def settled(row: orsets.MemberRow, seqs: dict[int, int] = seqs) -> bool:
                    return seqs[row.node] <= acked_seq and row.hlc < before_hlc

                new = orsets.retired([r for r, _ in group], self.node_id, settled)
                if new is None:
                    continue
                value = None if new is orsets.RETIRE else orsets.encode_row(new)
                self._put(
                    txn, change_ns, orsets.row_key(key, member, self.node_id), value, None,
                    txn.clock.now(),
                )  # fmt: skip
                changed += 1
            return changed

        return self.writer.submit(op)


def _touches_set(txn: Txn, change_ns: str, key: bytes) -> bool:
    """Whether ``txn`` has written a row of set ``key`` (its own ops or applied batches)."""
    start = key + orsets.KEY_SEPARATOR
    if any(ns == change_ns and k.startswith(start) for ns, k in txn.touched):
        return True
    return any(
        row[_ROW_NS] == change_ns and row[_ROW_KEY].startswith(start)
        for rows in txn.touched_rows
        for row in rows
    )


def _counter_groups(
    rows: Iterable[Any],
) -> Iterator[tuple[tuple[str, bytes], list[tuple[counters.Contribution, int]]]]:
    """Counter rows grouped by (namespace, counter key), each with its local seq."""
    group: list[tuple[counters.Contribution, int]] = []
    slot: tuple[str, bytes] | None = None
    for ns, raw_key, value, expiration, hlc, node, seq in rows:
        here = (ns, raw_key[: -counters.ROW_SUFFIX_BYTES])
        if here != slot:
            if slot is not None:
                yield slot, group
            slot, group = here, []
        contribution = counters.Contribution(node, counters.decode_row(value), hlc, expiration)
        group.append((contribution, seq))
    if slot is not None:
        yield slot, group


def _member_groups(
    rows: Iterable[Any],
) -> Iterator[tuple[tuple[str, bytes, str], list[tuple[orsets.MemberRow, int]]]]:
    """Set rows (tombstones as empty rows) grouped by (namespace, set key, member)."""
    group: list[tuple[orsets.MemberRow, int]] = []
    slot: tuple[str, bytes, str] | None = None
    for ns, raw_key, value, hlc, _, seq in rows:
        key, member, origin = orsets.split_row_key(raw_key)
        row = orsets.decode_row(value) if value is not None else orsets.Row()
        if (ns, key, member) != slot:
            if slot is not None:
                yield slot, group
            slot, group = (ns, key, member), []
        group.append((orsets.MemberRow(member, origin, row, hlc), seq))
    if slot is not None:
        yield slot, group
