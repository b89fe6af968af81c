"""Declared indexes: SQLite expression indexes over the materialized JSON of a collection.

The index and its statements live in :mod:`edgekv.store.doc_queries`, next
to the query SQL whose expressions it matches; this module checks a
declaration and turns the store's refusal into the API's error. Indexes are
declared per node (each PoP chooses its own).
"""

from __future__ import annotations

from edgekv.documents.query import QueryError, check_field
from edgekv.store.doc_queries import DeclaredIndex, IndexLimitReached
from edgekv.store.store import Store


class TooManyIndexes(QueryError):
    """The collection already has as many declared indexes as the node allows."""

    def __init__(self, limit: int) -> None:
        """Refuse one more index beyond ``limit``."""
        super().__init__(
            "too_many_indexes",
            f"a collection has at most {limit} declared indexes (max_indexes_per_collection)",
        )


async def declare(
    store: Store, collection: str, field: str, limit: int
) -> tuple[DeclaredIndex, bool]:
    """Create the index unless it exists; return it and whether it is new.

    A collection holds at most ``limit`` declared indexes (:class:`TooManyIndexes`):
    each one is written on every change of the collection.
    """
    check_field(field)
    try:
        return await store.documents.declare_index(collection, field, limit)
    except IndexLimitReached as refused:
        raise TooManyIndexes(refused.limit) from None


def declared(store: Store, collection: str) -> list[DeclaredIndex]:
    """The indexes declared on ``collection``."""
    return store.documents.declared_indexes(collection)
