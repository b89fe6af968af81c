"""Declared indexes: SQLite expression indexes over the materialized JSON of a collection.

An index on ``field`` of ``collection`` is
``CREATE INDEX ... ON docs (collection, json_extract(json, '$.field'), id)``:
equality and range filters on the field, ordering by it and resuming after a
cursor all use it, because :mod:`edgekv.documents.query` writes the very
same expression. Indexes are declared per node (each PoP chooses its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import NamedTuple

from edgekv.documents.query import QueryError, field_expression
from edgekv.store.store import Store
from edgekv.store.writer import Txn


class DeclaredIndex(NamedTuple):
    """One declared index."""

    collection: str
    field: str
    name: str
    created_ms: int


def index_name(collection: str, field: str) -> str:
    """A stable SQLite name for the index (collections and fields may hold '.' and '-')."""
    digest = hashlib.sha256(f"{collection}\0{field}".encode()).hexdigest()[:16]
    return f"docidx_{digest}"


class TooManyIndexes(QueryError):
    """The collection already has as many declared indexes as the node allows."""

    def __init__(self, limit: int) -> None:
        """Refuse one more index beyond ``limit``."""
        super().__init__(
            "too_many_indexes",
            f"a collection has at most {limit} declared indexes (max_indexes_per_collection)",
        )


def declare(
    store: Store, collection: str, field: str, limit: int
) -> asyncio.Future[tuple[DeclaredIndex, bool]]:
    """Create the index unless it exists; resolves to it and whether it is new.

    A collection holds at most ``limit`` declared indexes: each one is written on
    every change of the collection. Counted in the write transaction, so concurrent
    declarations cannot pass it together.
    """
    expression = field_expression(field)
    name = index_name(collection, field)

    def op(txn: Txn) -> tuple[DeclaredIndex, bool]:
        row = txn.conn.execute(
            "SELECT collection, field, name, created_ms FROM doc_indexes"
            " WHERE collection = ? AND field = ?",
            (collection, field),
        ).fetchone()
        if row is not None:
            return DeclaredIndex(*row), False
        (count,) = txn.conn.execute(
            "SELECT count(*) FROM doc_indexes WHERE collection = ?", (collection,)
        ).fetchone()
        if count >= limit:
            raise TooManyIndexes(limit)
        created = DeclaredIndex(collection, field, name, int(time.time() * 1000))
        txn.conn.execute("INSERT INTO doc_indexes VALUES (?, ?, ?, ?)", created)
        txn.conn.execute(f'CREATE INDEX "{name}" ON docs (collection, {expression}, id)')
        return created, True

    return store.writer.submit(op)


def declared(store: Store, collection: str) -> list[DeclaredIndex]:
    """The indexes declared on ``collection``."""
    rows = store.read_all(
        "SELECT collection, field, name, created_ms FROM doc_indexes WHERE collection = ?"
        " ORDER BY field",
        (collection,),
    )
    return [DeclaredIndex(*row) for row in rows]
