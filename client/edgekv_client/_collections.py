"""Collection handles: ``client.docs("users")`` for the blocking and the async client.

Each method builds its request with :mod:`edgekv_client._docs` and sends it
through the client it was made from, so a :class:`~edgekv_client.Session`'s
bookmarks go with document reads and writes as with key-value ones. Nothing
here imports aiohttp: the async handle only awaits its client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from edgekv_client import _docs
from edgekv_client._core import Request
from edgekv_client._docs import Document, DocumentPage, Where
from edgekv_client._watch import WatchEvent
from edgekv_client.errors import NotFound

# What a handle needs of its client, as protocols: the clients import this
# module to make handles, so naming their classes here would tie the modules
# in a cycle (even as a type-only import). Defined for the type checker only:
# building Protocol classes would add to every ``import edgekv_client``.
if TYPE_CHECKING:

    class Sender(Protocol):
        """A blocking client or session: sends a request, returns its decoded JSON answer."""

        _token: str | None

        def _json(self, request: Request) -> Any: ...

        def _watch(
            self,
            kind: str,
            space: str,
            prefix: str,
            keys: Sequence[str] | None,
            include_values: bool,
            snapshot: bool,
            after: str | None,
            failover: Sequence[str],
            max_backoff: float,
            read_timeout: float,
        ) -> Iterator[WatchEvent]: ...

    class AsyncSender(Protocol):
        """An async client or session: :class:`Sender`, awaited."""

        _token: str | None

        async def _json(self, request: Request) -> Any: ...

        def _watch(
            self,
            kind: str,
            space: str,
            prefix: str,
            keys: Sequence[str] | None,
            include_values: bool,
            snapshot: bool,
            after: str | None,
            failover: Sequence[str],
            max_backoff: float,
            read_timeout: float,
        ) -> AsyncIterator[WatchEvent]: ...


class Collection:
    """The documents of one collection, through a blocking client.

    >>> users = client.docs("users")  # doctest: +SKIP
    >>> users.put("ann", {"name": "Ann", "age": 31})  # doctest: +SKIP
    >>> users.patch("ann", {"address": {"city": "Oslo"}})  # doctest: +SKIP
    >>> [d.id for d in users.query(where=[("age", ">=", 30)], order_by="age")]  # doctest: +SKIP
    ['ann']
    """

    def __init__(self, client: Sender, name: str) -> None:
        """Handle collection ``name`` through ``client`` (or a session)."""
        self.client = client
        self.name = name
        self._token = client._token

    def __repr__(self) -> str:
        return f"Collection({self.name!r})"

    def watch(
        self,
        prefix: str = "",
        *,
        ids: Sequence[str] | None = None,
        include_values: bool = True,
        snapshot: bool = False,
        after: str | None = None,
        failover: Sequence[str] = (),
        max_backoff: float = 5.0,
        read_timeout: float = 60.0,
    ) -> Iterator[WatchEvent]:
        """Follow the collection's documents (ids under ``prefix``, or ``ids``) for ever.

        As :meth:`edgekv_client.Client.watch`; each event's ``value`` is the
        whole document (``op`` ``put`` or ``delete``).
        """
        return self.client._watch(
            "docs", self.name, prefix, ids, include_values, snapshot, after, failover,
            max_backoff, read_timeout,
        )  # fmt: skip

    def get(self, doc_id: str) -> Document | None:
        """The document with its version, or None if absent or deleted."""
        try:
            answer = self.client._json(_docs.get_request(self.name, doc_id, self._token))
        except NotFound:
            return None
        return _docs.document_from_json(answer)

    def put(self, doc_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the document (creating it); return the answer's ``bookmark`` and ``version``."""
        return self._write(_docs.put_request(self.name, doc_id, document, self._token))

    def patch(self, doc_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply an RFC 7386 merge patch (``None`` removes a field; objects merge).

        Raises :class:`~edgekv_client.NotFound` when the document does not exist.
        """
        return self._write(_docs.patch_request(self.name, doc_id, patch, self._token))

    def delete(self, doc_id: str) -> dict[str, Any]:
        """Delete the document (succeeds when absent); return the answer with its bookmark."""
        return self._write(_docs.delete_request(self.name, doc_id, self._token))

    def create_index(self, field: str) -> dict[str, Any]:
        """Declare an index on ``field`` (a dotted path) at this PoP, for queries to use."""
        return self._write(_docs.index_request(self.name, field, self._token))

    def indexes(self) -> list[dict[str, Any]]:
        """The indexes declared on the collection (``field``, ``name``, ``created_ms``)."""
        answer = self.client._json(_docs.indexes_request(self.name, self._token))
        return list(answer["indexes"])

    def query_page(
        self,
        where: Where = (),
        order_by: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DocumentPage:
        """One page of the documents matching every filter of ``where``.

        ``where``: ``"age>=30"``, ``("age", ">=", 30)``, a list of those, or
        ``{"team": "red"}`` for equality. ``order_by``: a field, ``-field``
        for descending. ``limit``: the page size (1 to 1000; the node's
        default 100). ``cursor``: the previous page's, to resume after it.
        """
        request = _docs.query_request(self.name, where, order_by, limit, cursor, self._token)
        return _docs.page_from_json(self.client._json(request))

    def query(
        self,
        where: Where = (),
        order_by: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Document]:
        """Iterate the matching documents page by page (at most ``limit`` of them, if given)."""
        returned = 0
        while limit is None or returned < limit:
            size = _docs.next_page_limit(limit, page_size, returned)
            page = self.query_page(where, order_by, size, cursor)
            yield from page.documents
            returned += len(page.documents)
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    def _write(self, request: Request) -> dict[str, Any]:
        result: dict[str, Any] = self.client._json(request)
        return result


class AsyncCollection:
    """The documents of one collection, through an async client: :class:`Collection`, awaited."""

    def __init__(self, client: AsyncSender, name: str) -> None:
        """Handle collection ``name`` through ``client`` (or an async session)."""
        self.client = client
        self.name = name
        self._token = client._token

    def __repr__(self) -> str:
        return f"AsyncCollection({self.name!r})"

    def watch(
        self,
        prefix: str = "",
        *,
        ids: Sequence[str] | None = None,
        include_values: bool = True,
        snapshot: bool = False,
        after: str | None = None,
        failover: Sequence[str] = (),
        max_backoff: float = 5.0,
        read_timeout: float = 60.0,
    ) -> AsyncIterator[WatchEvent]:
        """``async for event in users.watch()``: as :meth:`Collection.watch`."""
        return self.client._watch(
            "docs", self.name, prefix, ids, include_values, snapshot, after, failover,
            max_backoff, read_timeout,
        )  # fmt: skip

    async def get(self, doc_id: str) -> Document | None:
        """The document with its version, or None if absent or deleted."""
        try:
            answer = await self.client._json(_docs.get_request(self.name, doc_id, self._token))
        except NotFound:
            return None
        return _docs.document_from_json(answer)

    async def put(self, doc_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the document (creating it); return the answer's ``bookmark`` and ``version``."""
        return await self._write(_docs.put_request(self.name, doc_id, document, self._token))

    async def patch(self, doc_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply an RFC 7386 merge patch; :class:`~edgekv_client.NotFound` if absent."""
        return await self._write(_docs.patch_request(self.name, doc_id, patch, self._token))

    async def delete(self, doc_id: str) -> dict[str, Any]:
        """Delete the document (succeeds when absent)."""
        return await self._write(_docs.delete_request(self.name, doc_id, self._token))

    async def create_index(self, field: str) -> dict[str, Any]:
        """Declare an index on ``field`` at this PoP, for queries to use."""
        return await self._write(_docs.index_request(self.name, field, self._token))

    async def indexes(self) -> list[dict[str, Any]]:
        """The indexes declared on the collection (``field``, ``name``, ``created_ms``)."""
        answer = await self.client._json(_docs.indexes_request(self.name, self._token))
        return list(answer["indexes"])

    async def query_page(
        self,
        where: Where = (),
        order_by: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DocumentPage:
        """One page of the matching documents (arguments as for :meth:`Collection.query_page`)."""
        request = _docs.query_request(self.name, where, order_by, limit, cursor, self._token)
        return _docs.page_from_json(await self.client._json(request))

    async def query(
        self,
        where: Where = (),
        order_by: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Document]:
        """Iterate the matching documents page by page (at most ``limit`` of them, if given)."""
        returned = 0
        while limit is None or returned < limit:
            size = _docs.next_page_limit(limit, page_size, returned)
            page = await self.query_page(where, order_by, size, cursor)
            for document in page.documents:
                yield document
            returned += len(page.documents)
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    async def _write(self, request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await self.client._json(request)
        return result
