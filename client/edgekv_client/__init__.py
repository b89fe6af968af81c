"""EdgeKV client: talk to an EdgeKV node from Python.

>>> from edgekv_client import Client
>>> kv = Client("http://127.0.0.1:8787")  # doctest: +SKIP
>>> kv.put("flags", "beta", "on")  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from edgekv_client._collections import AsyncCollection, Collection
from edgekv_client._core import Entry, ListPage, Namespace
from edgekv_client._crdts import AsyncCounter, AsyncSet, Counter, Set, SetPage
from edgekv_client._docs import Document, DocumentPage
from edgekv_client._session import BookmarkSet
from edgekv_client._watch import WatchEvent
from edgekv_client.client import Client, Session
from edgekv_client.errors import (
    ApiError,
    EdgeKVError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    StorageFull,
    TooLarge,
    TransportError,
    Unauthorized,
    Unavailable,
)
from edgekv_client.local import IncompatibleStore, LocalReader
from edgekv_replication.bookmarks import Bookmark

if TYPE_CHECKING:  # imported lazily at run time (see __getattr__); typed as the classes
    from edgekv_client.aio import AsyncClient, AsyncSession

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncCollection",
    "AsyncCounter",
    "AsyncSession",
    "AsyncSet",
    "Bookmark",
    "BookmarkSet",
    "Client",
    "Collection",
    "Counter",
    "Document",
    "DocumentPage",
    "EdgeKVError",
    "Entry",
    "Forbidden",
    "IncompatibleStore",
    "InvalidRequest",
    "ListPage",
    "LocalReader",
    "Namespace",
    "NotFound",
    "PreconditionFailed",
    "Session",
    "Set",
    "SetPage",
    "StorageFull",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "WatchEvent",
]


def __getattr__(name: str) -> object:
    # The async client needs aiohttp: import it only for those who use it, so
    # `import edgekv_client` stays light for blocking users and edge functions.
    if name in ("AsyncClient", "AsyncSession"):
        from edgekv_client import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
