"""Live key-value entries and documents in key order, a page at a time, for export.

Pages are bounded in rows and in bytes of values, and each one resumes after
the last ``(ns, key)`` of the one before, so an export of any size holds one
page in memory. Namespaces starting with ``_edgekv.`` (the node's own, such
as its runtime tokens) are never exported. The rows of counters and sets
(``@ctr:``/``@set:``) are not entries: :mod:`edgekv.store.crdt_export`
exports their values and members.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from edgekv.store.kv import prefix_upper_bound

RowT = TypeVar("RowT")

RESERVED_PREFIX = "_edgekv."
"""Namespaces the node keeps for itself; no client route reads or writes them."""

_COLUMNS = "SELECT ns, key, value, metadata, expiration FROM kv"
_LIVE = (
    " value IS NOT NULL AND (expiration IS NULL OR expiration > ?)"
    " AND substr(ns, 1, 8) != '_edgekv.'"
    # Counters' and sets' rows ("@ctr:", "@set:") are not entries (see crdt_export).
    " AND substr(ns, 1, 1) != '@'"
)
_ALL = _COLUMNS + " WHERE (ns, key) > (?, ?) AND" + _LIVE + " ORDER BY ns, key LIMIT ?"
_ONE_NS = (
    _COLUMNS
    + " WHERE ns = ? AND key > ? AND key >= ? AND key < ? AND"
    + _LIVE
    + " ORDER BY ns, key LIMIT ?"
)


_DOCS_ALL = (
    "SELECT collection, id, json FROM docs WHERE (collection, id) > (?, ?) AND json IS NOT NULL"
    " AND substr(collection, 1, 8) != '_edgekv.' ORDER BY collection, id LIMIT ?"
)
_DOCS_ONE = (
    "SELECT collection, id, json FROM docs WHERE collection = ? AND id > ? AND id >= ?"
    " AND (? = '' OR substr(id, 1, length(?)) = ?) AND json IS NOT NULL"
    " ORDER BY collection, id LIMIT ?"
)


class DocumentRow(NamedTuple):
    """One live document: collection, id and its JSON text."""

    collection: str
    id: str
    json: str


class DocumentCursor:
    """Walks the live documents of every collection, or of one with an id prefix."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        collection: str | None = None,
        prefix: str = "",
        page_rows: int = 1000,
        page_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        """Read with ``reader``; ``prefix`` only with ``collection``."""
        self._reader = reader
        self._collection = collection
        self._prefix = prefix
        self._after: tuple[str, str] = (collection or "", "")
        self._rows = page_rows
        self._bytes = page_bytes
        self.done = False

    def next_page(self) -> list[DocumentRow]:
        """The next page of documents (empty once :attr:`done`)."""
        if self.done:
            return []
        collection, doc_id = self._after
        if self._collection is None:
            cursor = self._reader.execute(_DOCS_ALL, (collection, doc_id, self._rows))
        else:
            p = self._prefix
            cursor = self._reader.execute(
                _DOCS_ONE, (self._collection, doc_id, p, p, p, p, self._rows)
            )
        page, self.done = _bounded_page(cursor, DocumentRow, self._rows, self._bytes)
        if page:
            self._after = (page[-1].collection, page[-1].id)
        return page


class ExportRow(NamedTuple):
    """One live entry: namespace, key bytes, value, metadata JSON text, expiration."""

    ns: str
    key: bytes
    value: bytes
    metadata: str | None
    expiration: int | None


class ExportCursor:
    """Walks the live entries of every namespace, or of one with a prefix, page by page."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        namespace: str | None = None,
        prefix: bytes = b"",
        page_rows: int = 1000,
        page_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        """Read with ``reader``; ``prefix`` only with ``namespace``."""
        self._reader = reader
        self._namespace = namespace
        self._prefix = prefix
        self._upper = prefix_upper_bound(prefix)
        self._after: tuple[str, bytes] = (namespace or "", b"")
        self._rows = page_rows
        self._bytes = page_bytes
        self.done = False

    def next_page(self, now: float | None = None) -> list[ExportRow]:
        """The next page of entries (empty once :attr:`done`)."""
        if self.done:
            return []
        at = time.time() if now is None else now
        ns, key = self._after
        if self._namespace is None:
            cursor = self._reader.execute(_ALL, (ns, key, at, self._rows))
        else:
            cursor = self._reader.execute(
                _ONE_NS, (self._namespace, key, self._prefix, self._upper, at, self._rows)
            )
        page, self.done = _bounded_page(cursor, ExportRow, self._rows, self._bytes)
        if page:
            self._after = (page[-1].ns, page[-1].key)
        return page


def _bounded_page(
    cursor: sqlite3.Cursor, make: Callable[..., RowT], rows: int, budget: int
) -> tuple[list[RowT], bool]:
    """Rows of ``cursor`` (its third column the value) until ``budget`` bytes of values;
    and whether that was the last page (fewer rows than asked, budget not reached)."""
    page: list[RowT] = []
    size = 0
    for row in cursor:
        page.append(make(*row))
        size += len(row[2])
        if size >= budget:
            break
    cursor.close()
    return page, len(page) < rows and size < budget
