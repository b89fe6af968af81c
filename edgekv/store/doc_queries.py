"""Queries over documents' materialized JSON, and the expression indexes that serve them.

A field is a dotted path of names (``address.city``); it becomes the
expression ``json_extract(json, '$.address.city')``, written literally into
the SQL so that an index declared on the same field matches it: an index on
``field`` of ``collection`` is ``CREATE INDEX ... ON docs (collection,
json_extract(json, '$.field'), id)``, and equality and range filters on the
field, ordering by it and resuming after a cursor all use it. Indexes are
declared per node (each PoP chooses its own).

The ``where`` / ``order_by`` / ``cursor`` syntax is parsed by
:mod:`edgekv.documents.query` into a :class:`QuerySpec`; :func:`build_sql` turns
it into SQL here.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from edgekv.store.writer import Txn

FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,31}")
"""A field path: names only, so its expression is safe to write into SQL."""
_SQL_OPS = {"==": "=", "=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

# One answer item, written by SQLite: the same text as the GET of the document
# (json_quote escapes the id; the version is the 32 hex digits of (hlc, node)).
_ITEM = (
    """'{"id":' || json_quote(id) || ',"version":"' || printf('%016x%016x', hlc, node)"""
    """ || '","doc":' || json || '}'"""
)
_INDEX_OF_FIELD = (
    "SELECT collection, field, name, created_ms FROM doc_indexes WHERE collection = ? AND field = ?"
)
_INDEX_COUNT = "SELECT count(*) FROM doc_indexes WHERE collection = ?"
_INDEX_DECLARED = "INSERT INTO doc_indexes VALUES (?, ?, ?, ?)"
_INDEXES = (
    "SELECT collection, field, name, created_ms FROM doc_indexes WHERE collection = ?"
    " ORDER BY field"
)


def field_expression(field: str) -> str:
    """The SQL expression of a field path; ValueError unless ``field`` matches :data:`FIELD`."""
    if not FIELD.fullmatch(field):
        raise ValueError(f"a field is a dotted path of names: {field!r}")
    return f"json_extract(json, '$.{field}')"


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``where`` condition: ``field op value``; ``value`` None tests for JSON null."""

    field: str
    op: str
    """One of ``==``, ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (null: ``==``, ``=``, ``!=``)."""
    value: Any


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A parsed query page: what :func:`build_sql` turns into SQL."""

    collection: str
    filters: tuple[Filter, ...]
    order_field: str | None
    descending: bool
    after: tuple[Any, str] | None
    """The ``(order value, id)`` of the document the page resumes after."""
    limit: int


@dataclass(frozen=True, slots=True)
class Query:
    """A query page, ready to run as :attr:`sql` with :attr:`params`.

    :attr:`sql` selects ``id, json, hlc, node, order value``: the plain
    query. :attr:`answer_sql` selects ``item, id, order value`` with the same
    conditions and order, each ``item`` the JSON of one document as the API
    answers it: SQLite writes it faster than Python can.
    """

    sql: str
    params: tuple[Any, ...]
    limit: int
    order_field: str | None
    answer_sql: str = ""


def _condition(where: Filter) -> str:
    if where.value is None:
        test = "IS NOT" if where.op == "!=" else "="
        return f"json_type(json, '$.{where.field}') {test} 'null'"
    return f"{field_expression(where.field)} {_SQL_OPS[where.op]} ?"


def build_sql(spec: QuerySpec) -> Query:
    """The SQL of one page (``limit + 1`` rows: one more tells that the client pages on)."""
    conditions = ["collection = ?", "json IS NOT NULL"]
    params: list[Any] = [spec.collection]
    for where in spec.filters:
        conditions.append(_condition(where))
        if where.value is not None:
            params.append(where.value)
    order_field = spec.order_field
    expression = "NULL" if order_field is None else field_expression(order_field)
    if order_field is not None:
        conditions.append(f"{expression} IS NOT NULL")
    direction = "DESC" if spec.descending else "ASC"
    compare = "<" if spec.descending else ">"
    if spec.after is not None:
        value, after_id = spec.after
        if order_field is None:
            conditions.append(f"id {compare} ?")
            params.append(after_id)
        else:
            conditions.append(f"({expression}, id) {compare} (?, ?)")
            params += [value, after_id]
    if order_field is None:
        order = f"id {direction}"
    else:
        order = f"{expression} {direction}, id {direction}"
    rest = f"FROM docs WHERE {' AND '.join(conditions)} ORDER BY {order} LIMIT ?"
    params.append(spec.limit + 1)
    return Query(
        f"SELECT id, json, hlc, node, {expression} {rest}",
        tuple(params),
        spec.limit,
        order_field,
        f"SELECT {_ITEM}, id, {expression} {rest}",
    )


class DeclaredIndex(NamedTuple):
    """One declared index."""

    collection: str
    field: str
    name: str
    created_ms: int


class IndexLimitReached(RuntimeError):
    """The collection already has as many declared indexes as the node allows."""

    def __init__(self, limit: int) -> None:
        """Refuse one more index beyond ``limit``."""
        super().__init__(f"a collection has at most {limit} declared indexes")
        self.limit = limit


def index_name(collection: str, field: str) -> str:
    """A stable SQLite name for the index (collections and fields may hold '.' and '-')."""
    digest = hashlib.sha256(f"{collection}\0{field}".encode()).hexdigest()[:16]
    return f"docidx_{digest}"


def declare_index(
    txn: Txn, *, collection: str, field: str, limit: int
) -> tuple[DeclaredIndex, bool]:
    """The writer op: create the index unless it exists; it and whether it is new.

    A collection holds at most ``limit`` declared indexes (each one is written
    on every change of the collection), counted in the write transaction, so
    concurrent declarations cannot pass it together.
    """
    expression = field_expression(field)
    row = txn.conn.execute(_INDEX_OF_FIELD, (collection, field)).fetchone()
    if row is not None:
        return DeclaredIndex(*row), False
    (count,) = txn.conn.execute(_INDEX_COUNT, (collection,)).fetchone()
    if count >= limit:
        raise IndexLimitReached(limit)
    name = index_name(collection, field)
    created = DeclaredIndex(collection, field, name, int(time.time() * 1000))
    txn.conn.execute(_INDEX_DECLARED, created)
    txn.conn.execute(f'CREATE INDEX "{name}" ON docs (collection, {expression}, id)')
    return created, True


def declared_indexes(reader: sqlite3.Connection, collection: str) -> list[DeclaredIndex]:
    """The indexes declared on ``collection``, by field."""
    return [DeclaredIndex(*row) for row in reader.execute(_INDEXES, (collection,))]
