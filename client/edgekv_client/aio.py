"""The async client, on aiohttp (imported only by whoever uses it).

Same operations and answers as :class:`edgekv_client.Client`; requests and
answers come from the same I/O-free core, so the two cannot differ.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp

from edgekv_client import _aio_http, _core
from edgekv_client._collections import AsyncCollection
from edgekv_client._core import Entry, ListPage, Request
from edgekv_client._crdts import AsyncCounter, AsyncSet
from edgekv_client._session import SessionBookmarks
from edgekv_client._watch import SseParser, WatchCursor, WatchEvent, retry_or_raise, watch_path
from edgekv_client.errors import NotFound, TransportError, Unavailable
from edgekv_replication.bookmarks import BOOKMARK_HEADER


class AsyncClient:
    """An asyncio client of one EdgeKV node (one pool of kept-alive connections).

    >>> async with AsyncClient("http://127.0.0.1:8787") as kv:  # doctest: +SKIP
    ...     await kv.put("flags", "beta", "on")
    ...     await kv.get("flags", "beta")
    b'on'
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8787",
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        """Talk to the node at ``url``; retries as :class:`~edgekv_client.Client` does."""
        # A bad URL is refused now, not at the first request.
        self._scheme, self._host, self._port, self._base = _core.split_url(url)
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._pool: _aio_http.Pool | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def session(self) -> AsyncSession:
        """A session at this node (see :class:`edgekv_client.Session`)."""
        return AsyncSession(self.url, self._token, self._timeout, self._retries)

    def _session_headers(self) -> Mapping[str, str]:
        return {}

    def _remember(self, bookmark: str) -> None:
        """Note a write's bookmark (a plain client forgets it)."""

    async def _send(self, request: Request) -> tuple[int, bytes, Mapping[str, str]]:
        attempt = 0
        while True:
            try:
                return await self._send_once(request)
            except (TransportError, Unavailable) as exc:
                attempt += 1
                if attempt > self._retries or not _core.should_retry(request, exc):
                    raise
                await asyncio.sleep(_core.retry_delay(attempt))

    def _connections(self) -> _aio_http.Pool:
        if self._pool is None:
            tls = None
            if self._scheme == "https":
                import ssl

                tls = ssl.create_default_context()
            self._pool = _aio_http.Pool(self._host, self._port, tls)
        return self._pool

    async def _send_once(self, request: Request) -> tuple[int, bytes, Mapping[str, str]]:
        headers = request.headers
        extra = self._session_headers()
        if extra:
            headers = {**headers, **extra}
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._connections().request(
                    request.method, self._base + request.path, headers, request.body
                )
        except (OSError, TimeoutError) as exc:  # unreachable, reset, not HTTP, or too slow
            raise TransportError(
                f"{request.method} {self.url}{request.path}: {exc or type(exc).__name__}"
            ) from exc
        _core.raise_for_error(answer.status, answer.body)
        seen = answer.headers.get(BOOKMARK_HEADER.lower())
        if seen:
            self._remember(seen)
        return answer.status, answer.body, answer.headers

    async def _json(self, request: Request) -> Any:
        answer = _core.decode_json((await self._send(request))[1])
        if isinstance(answer, dict) and isinstance(answer.get("bookmark"), str):
            self._remember(answer["bookmark"])
        return answer

    async def watch(
        self,
        namespace: str,
        prefix: str = "",
        *,
        keys: Sequence[str] | None = None,
        include_values: bool = True,
        snapshot: bool = False,
        after: str | None = None,
        failover: Sequence[str] = (),
        max_backoff: float = 5.0,
        read_timeout: float = 60.0,
        versions: OrderedDict[str, str] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """``async for event in kv.watch(ns, prefix=...)``: as :meth:`Client.watch`."""
        events = self._watch(
            "kv", namespace, prefix, keys, include_values, snapshot, after, failover,
            max_backoff, read_timeout, versions,
        )  # fmt: skip
        async for event in events:
            yield event

    async def _watch(
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
        versions: OrderedDict[str, str] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        cursor = WatchCursor(kind, [self.url, *failover], after, snapshot, max_backoff, versions)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=read_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                path = watch_path(
                    cursor.kind, space, prefix, keys, include_values, cursor.wants_snapshot()
                )
                try:
                    async with http.get(
                        cursor.url.rstrip("/") + path, headers=cursor.headers(self._token)
                    ) as response:
                        if response.status != 200:
                            retry_or_raise(response.status, await response.read())
                        else:
                            parser = SseParser()
                            async for chunk in response.content.iter_any():
                                for event in cursor.take(parser.feed(chunk)):
                                    if event.bookmark is not None and event.type == "change":
                                        self._remember(event.bookmark)
                                    yield event
                except (aiohttp.ClientError, OSError, TimeoutError, Unavailable):
                    pass  # this PoP is unreachable, stopping or saturated: the next one
                await asyncio.sleep(cursor.failed())

    async def get_with_metadata(
        self, namespace: str, key: str, *, consistency: str | None = None
    ) -> Entry | None:
        """The entry at ``key`` with metadata and expiration, or None if absent."""
        request = _core.get_request(namespace, key, self._token, consistency)
        try:
            _, body, headers = await self._send(request)
        except NotFound:
            return None
        return _core.entry_from_response(body, headers)

    async def get(
        self, namespace: str, key: str, *, consistency: str | None = None
    ) -> bytes | None:
        """The value at ``key``, or None if absent, deleted or expired."""
        entry = await self.get_with_metadata(namespace, key, consistency=consistency)
        return entry.value if entry else None

    async def get_json(self, namespace: str, key: str) -> Any:
        """The JSON value at ``key`` decoded, or None if absent."""
        return _core.load_json(await self.get(namespace, key))

    async def put_json(
        self, namespace: str, key: str, value: object, **options: Any
    ) -> dict[str, Any]:
        """Write ``value`` as JSON (``options`` as for :meth:`put`)."""
        return await self.put(namespace, key, _core.dump_json(value), **options)

    def namespace(self, name: str) -> _core.Namespace:
        """A handle on namespace ``name``; its methods are awaited."""
        return _core.Namespace(self, name)

    def docs(self, collection: str) -> AsyncCollection:
        """The documents of ``collection``; their methods are awaited."""
        return AsyncCollection(self, collection)

    def counter(self, namespace: str, key: str) -> AsyncCounter:
        """The counter ``key`` of ``namespace``: ``.add(n)``, ``.value()``, ``.reset()``."""
        return AsyncCounter(self, namespace, key)

    def set(self, namespace: str, key: str) -> AsyncSet:
        """The set ``key`` of ``namespace``: ``.add(...)``, ``.remove(...)``, ``.members()``."""
        return AsyncSet(self, namespace, key)

    async def put(
        self,
        namespace: str,
        key: str,
        value: bytes | str,
        *,
        ttl: int | None = None,
        expiration: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> dict[str, Any]:
        """Write ``value``; return the answer with its ``bookmark`` and ``version``."""
        request = _core.put_request(
            namespace,
            key,
            value,
            self._token,
            ttl=ttl,
            expiration=expiration,
            metadata=metadata,
            if_match=if_match,
            if_none_match=if_none_match,
        )
        result: dict[str, Any] = await self._json(request)
        return result

    async def delete(
        self, namespace: str, key: str, *, if_match: str | None = None
    ) -> dict[str, Any]:
        """Delete ``key`` (succeeds when absent)."""
        request = _core.delete_request(namespace, key, self._token, if_match)
        result: dict[str, Any] = await self._json(request)
        return result

    async def transaction(
        self,
        namespace: str,
        operations: Iterable[Mapping[str, Any]],
        conditions: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Check ``conditions``, then apply ``operations``, linearizably (strong namespaces)."""
        request = _core.transaction_request(namespace, operations, conditions, self._token)
        result: dict[str, Any] = await self._json(request)
        return result

    async def list_page(
        self, namespace: str, prefix: str = "", limit: int | None = None, cursor: str | None = None
    ) -> ListPage:
        """One page of keys."""
        request = _core.list_request(namespace, prefix, limit, cursor, self._token)
        return _core.page_from_json(await self._json(request))

    async def list(
        self, namespace: str, prefix: str = "", page_size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every key under ``prefix`` in byte order, page by page."""
        cursor = None
        while True:
            page = await self.list_page(namespace, prefix, page_size, cursor)
            for item in page.keys:
                yield item
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    async def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Entry | None]:
        """The entries of up to 100 keys (None where absent).

        Values the node leaves out of its answer (past its byte budget) are fetched one by one.
        """
        answer = await self._json(_core.get_many_request(namespace, keys, self._token))
        entries = _core.entries_from_json(answer)
        for name in _core.omitted_from(answer):
            entries[name] = await self.get_with_metadata(namespace, name)
        return entries

    async def bulk(self, namespace: str, operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply puts and deletes atomically."""
        result: dict[str, Any] = await self._json(
            _core.bulk_request(namespace, operations, self._token)
        )
        return result


class AsyncSession(SessionBookmarks, AsyncClient):
    """An async client carrying its writes' bookmarks (see :class:`edgekv_client.Session`)."""
