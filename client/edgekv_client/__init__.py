"""EdgeKV client: talk to an EdgeKV node from Python.

>>> from edgekv_client import Client
>>> kv = Client("http://127.0.0.1:8787")  # doctest: +SKIP
>>> kv.put("flags", "beta", "on")  # doctest: +SKIP
"""

from edgekv_client._core import Entry, ListPage
from edgekv_client.bookmarks import Bookmark, BookmarkSet
from edgekv_client.client import Client, Session
from edgekv_client.errors import (
    ApiError,
    EdgeKVError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    TooLarge,
    TransportError,
    Unauthorized,
    Unavailable,
)
from edgekv_client.local import IncompatibleStore, LocalReader

__all__ = [
    "ApiError",
    "Bookmark",
    "BookmarkSet",
    "Client",
    "EdgeKVError",
    "Entry",
    "Forbidden",
    "IncompatibleStore",
    "InvalidRequest",
    "ListPage",
    "LocalReader",
    "NotFound",
    "PreconditionFailed",
    "Session",
    "TooLarge",
    "TransportError",
    "Unauthorized",
    "Unavailable",
]
