"""Counters and sets as this PoP sees them, in key order, a page at a time, for export.

An export holds what a client reads, not the rows: a counter's value (and
when it stops counting), a set's members. Rows are written only by their own
node (intake refuses others), so another cluster could not take them; a
value can be written anywhere. Each page resumes after the last row of the
one before; a group's rows (one per node, up to about a thousand) that a page
cuts are held until the next, so memory stays one page and one group.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from edgekv.store.export import RESERVED_PREFIX
from edgekv.store.kv import prefix_upper_bound
from edgekv_replication import counters, orsets


class CounterValue(NamedTuple):
    """A counter as this PoP reads it, with the latest expiration of its contributions."""

    ns: str
    key: bytes
    value: int
    expiration: int | None
    """None unless every contribution that counts expires (then the latest of them)."""


class SetMember(NamedTuple):
    """One member present in a set at this PoP."""

    ns: str
    key: bytes
    member: str


def _queries(prefix: str) -> tuple[str, str]:
    columns = "SELECT ns, key, value, expiration, hlc, node FROM kv"
    live = (
        " AND value IS NOT NULL AND substr(ns, 6, 8) != '" + RESERVED_PREFIX + "'"
        " ORDER BY ns, key LIMIT ?"
    )
    upper = prefix[:-1] + ";"  # ':' + 1: every namespace of this kind
    every = f"{columns} WHERE (ns, key) > (?, ?) AND ns >= '{prefix}' AND ns < '{upper}'" + live
    one = f"{columns} WHERE ns = ? AND key > ? AND key >= ? AND key < ?" + live
    return every, one


_COUNTERS = _queries(counters.CTR_NS_PREFIX)
_SETS = _queries(orsets.SET_NS_PREFIX)


class _Rows:
    """The rows of one kind (counters or sets), of every namespace or of one with a prefix."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        queries: tuple[str, str],
        ns_prefix: str,
        namespace: str | None,
        prefix: bytes,
        page_rows: int,
    ) -> None:
        self._reader = reader
        self._queries = queries
        self._ns_prefix = ns_prefix
        self._namespace = None if namespace is None else ns_prefix + namespace
        self._prefix = prefix
        self._upper = prefix_upper_bound(prefix)
        self._after: tuple[str, bytes] = (self._namespace or "", b"")
        self._rows = page_rows
        self.done = False

    def page(self) -> list[Any]:
        """The next rows ``(ns, key, value, expiration, hlc, node)``; empty once done."""
        if self.done:
            return []
        ns, key = self._after
        every, one = self._queries
        if self._namespace is None:
            rows = self._reader.execute(every, (ns, key, self._rows)).fetchall()
        else:
            rows = self._reader.execute(
                one, (self._namespace, key, self._prefix, self._upper, self._rows)
            ).fetchall()
        if len(rows) < self._rows:
            self.done = True
        if rows:
            self._after = (rows[-1][0], bytes(rows[-1][1]))
        return rows

    def name(self, change_ns: str) -> str:
        return change_ns[len(self._ns_prefix) :]


class CounterCursor:
    """Walks the counters of every namespace (or of one, keys with a prefix), page by page."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        namespace: str | None = None,
        prefix: bytes = b"",
        page_rows: int = 1000,
    ) -> None:
        """Read with ``reader``; ``prefix`` only with ``namespace``."""
        self._rows = _Rows(reader, _COUNTERS, counters.CTR_NS_PREFIX, namespace, prefix, page_rows)
        self._pending: list[Any] = []
        self.done = False

    def next_page(self, now: float | None = None) -> list[CounterValue]:
        """The next counters whose value is not 0 (empty pages may come before :attr:`done`)."""
        at = time.time() if now is None else now
        rows = self._rows.page()
        found: list[CounterValue] = []
        for group in self._groups(rows):
            counted = _counter(self._rows.name(group[0][0]), group, at)
            if counted is not None:
                found.append(counted)
        self.done = self._rows.done and not self._pending
        return found

    def _groups(self, rows: list[Any]) -> Iterator[list[Any]]:
        group = self._pending
        for row in rows:
            if group and (row[0], _counter_key(row[1])) != (group[0][0], _counter_key(group[0][1])):
                yield group
                group = []
            group.append(row)
        if self._rows.done:
            if group:
                yield group
            group = []
        self._pending = group  # may continue on the next page


def _counter_key(raw: bytes) -> bytes:
    return bytes(raw[: -counters.ROW_SUFFIX_BYTES])


def _counter(ns: str, group: list[Any], now: float) -> CounterValue | None:
    rows = [
        counters.Contribution(node, counters.decode_row(value), hlc, expiration)
        for _, _, value, expiration, hlc, node in group
    ]
    value = counters.value_of(rows, now)
    if value == 0:
        return None  # reads as a counter never written: nothing to carry over
    live = [c.expiration for c in rows if counters.is_live(c, now)]
    expiration = None if None in live else max(e for e in live if e is not None)
    return CounterValue(ns, _counter_key(group[0][1]), value, expiration)


class SetCursor:
    """Walks the members of the sets of every namespace (or of one), page by page."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        namespace: str | None = None,
        prefix: bytes = b"",
        page_rows: int = 1000,
    ) -> None:
        """Read with ``reader``; ``prefix`` (of set keys) only with ``namespace``."""
        self._rows = _Rows(reader, _SETS, orsets.SET_NS_PREFIX, namespace, prefix, page_rows)
        self._pending: list[tuple[str, bytes, orsets.MemberRow]] = []
        self.done = False

    def next_page(self) -> list[SetMember]:
        """The next members present (empty pages may come before :attr:`done`)."""
        found: list[SetMember] = []
        group = self._pending
        for ns, raw_key, value, _, hlc, _ in self._rows.page():
            key, member, origin = orsets.split_row_key(bytes(raw_key))
            row = (ns, key, orsets.MemberRow(member, origin, orsets.decode_row(value), hlc))
            if group and (ns, key, member) != (group[0][0], group[0][1], group[0][2].member):
                found += self._present(group)
                group = []
            group.append(row)
        if self._rows.done:
            found += self._present(group)
            group = []
        self._pending = group  # a member's rows may continue on the next page
        self.done = self._rows.done
        return found

    def _present(self, group: list[tuple[str, bytes, orsets.MemberRow]]) -> list[SetMember]:
        if not group or not orsets.is_present([row for _, _, row in group]):
            return []
        ns, key, row = group[0]
        return [SetMember(self._rows.name(ns), key, row.member)]
