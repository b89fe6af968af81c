"""The blocking HTTP client (standard library only, keep-alive connection)."""

from __future__ import annotations

import http.client
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from edgekv_client import _core, _http
from edgekv_client._collections import Collection
from edgekv_client._core import Entry, ListPage, Request
from edgekv_client._crdts import Counter, Set
from edgekv_client._session import SessionBookmarks
from edgekv_client._watch import SseParser, WatchCursor, WatchEvent, retry_or_raise, watch_path
from edgekv_client.errors import NotFound, TransportError, Unavailable
from edgekv_replication.bookmarks import BOOKMARK_HEADER


class Client:
    """A blocking client of one EdgeKV node.

    >>> with Client("http://127.0.0.1:8787") as kv:  # doctest: +SKIP
    ...     kv.put("flags", "beta", b"on")
    ...     kv.get("flags", "beta")
    b'on'
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8787",
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        """Talk to the node at ``url``, authenticating with ``token`` if given.

        Idempotent requests (GET, PUT, DELETE, get-many) are sent again, up to
        ``retries`` times with jittered backoff, when the node cannot be
        reached or is stopping; nothing else is retried.
        """
        self.url = url
        self._scheme, self._host, self._port, self._base = _core.split_url(url)
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._conn: _http.Connection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> _http.Connection:
        if self._conn is not None and self._conn.dropped():
            self._conn.close()
            self._conn = None
        if self._conn is None:
            tls = None
            if self._scheme == "https":
                import ssl  # on first use: ssl is a large share of the import time

                tls = ssl.create_default_context()
            self._conn = _http.Connection(self._host, self._port, self._timeout, tls)
        return self._conn

    def _session_headers(self) -> Mapping[str, str]:
        """Headers a session adds to every request (none for a plain client)."""
        return {}

    def _remember(self, bookmark: str) -> None:
        """Note a write's bookmark (a plain client forgets it)."""

    def _send(self, request: Request) -> tuple[int, bytes, Mapping[str, str]]:
        attempt = 0
        while True:
            try:
                return self._send_once(request)
            except (TransportError, Unavailable) as exc:
                attempt += 1
                if attempt > self._retries or not _core.should_retry(request, exc):
                    raise
                time.sleep(_core.retry_delay(attempt))

    def _send_once(self, request: Request) -> tuple[int, bytes, Mapping[str, str]]:
        headers = request.headers
        extra = self._session_headers()
        if extra:
            headers = {**headers, **extra}
        try:
            answer = self._connection().request(
                request.method, self._base + request.path, headers, request.body
            )
        except (OSError, ValueError) as exc:  # unreachable, reset, or not HTTP
            self.close()
            raise TransportError(f"{request.method} {self.url}{request.path}: {exc}") from exc
        _core.raise_for_error(answer.status, answer.body)
        seen = answer.headers.get(BOOKMARK_HEADER.lower())
        if seen:
            self._remember(seen)
        return answer.status, answer.body, answer.headers

    def _json(self, request: Request) -> Any:
        answer = _core.decode_json(self._send(request)[1])
        if isinstance(answer, dict) and isinstance(answer.get("bookmark"), str):
            self._remember(answer["bookmark"])
        return answer

    def session(self) -> Session:
        """A session at this node: reads see this session's writes, made at any PoP.

        >>> with Client("http://127.0.0.1:8787").session() as s:  # doctest: +SKIP
        ...     s.put("carts", "u1", b"3 items")
        ...     s.at("http://127.0.0.1:8788").get("carts", "u1")  # waits if needed
        b'3 items'
        """
        return Session(self.url, self._token, self._timeout, self._retries)

    def get_with_metadata(
        self, namespace: str, key: str, *, consistency: str | None = None
    ) -> Entry | None:
        """Return the entry at ``key`` with metadata and expiration, or None if absent.

        ``consistency="strong"`` (strong namespaces) reads the latest committed
        value from the upstream instead of this PoP's copy.
        """
        request = _core.get_request(namespace, key, self._token, consistency)
        try:
            _, body, headers = self._send(request)
        except NotFound:
            return None
        return _core.entry_from_response(body, headers)

    def get(self, namespace: str, key: str, *, consistency: str | None = None) -> bytes | None:
        """Return the value at ``key``, or None if absent, deleted or expired."""
        entry = self.get_with_metadata(namespace, key, consistency=consistency)
        return entry.value if entry else None

    def get_json(self, namespace: str, key: str) -> Any:
        """Return the JSON value at ``key`` decoded, or None if absent."""
        return _core.load_json(self.get(namespace, key))

    def put_json(self, namespace: str, key: str, value: object, **options: Any) -> dict[str, Any]:
        """Write ``value`` as JSON (``options`` as for :meth:`put`)."""
        return self.put(namespace, key, _core.dump_json(value), **options)

    def namespace(self, name: str) -> _core.Namespace:
        """A handle on namespace ``name``: ``client.namespace("flags").get("beta")``."""
        return _core.Namespace(self, name)

    def docs(self, collection: str) -> Collection:
        """The documents of ``collection``: ``client.docs("users").get("ann")``."""
        return Collection(self, collection)

    def counter(self, namespace: str, key: str) -> Counter:
        """The counter ``key`` of ``namespace``: ``.add(n)``, ``.value()``, ``.reset()``."""
        return Counter(self, namespace, key)

    def set(self, namespace: str, key: str) -> Set:
        """The set ``key`` of ``namespace``: ``.add(...)``, ``.remove(...)``, ``.members()``."""
        return Set(self, namespace, key)

    def put(
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
        """Write ``value``; return the answer with its ``bookmark`` and ``version``.

        In a strong namespace, ``if_match`` (a version, or ``"*"``: any live
        value) or ``if_none_match=True`` (create only) make the write
        conditional; :class:`~edgekv_client.PreconditionFailed` when it fails.
        """
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
        result: dict[str, Any] = self._json(request)
        return result

    def delete(self, namespace: str, key: str, *, if_match: str | None = None) -> dict[str, Any]:
        """Delete ``key`` (succeeds when absent); return the answer with its bookmark."""
        request = _core.delete_request(namespace, key, self._token, if_match)
        result: dict[str, Any] = self._json(request)
        return result

    def transaction(
        self,
        namespace: str,
        operations: Iterable[Mapping[str, Any]],
        conditions: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Check ``conditions``, then apply ``operations``, linearizably (strong namespaces).

        A condition is ``{"key": k, "version": v}`` or ``{"key": k, "exists": bool}``;
        operations are as for :meth:`bulk`.
        """
        request = _core.transaction_request(namespace, operations, conditions, self._token)
        result: dict[str, Any] = self._json(request)
        return result

    def list_page(
        self,
        namespace: str,
        prefix: str = "",
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ListPage:
        """Return one page of keys."""
        request = _core.list_request(namespace, prefix, limit, cursor, self._token)
        return _core.page_from_json(self._json(request))

    def list(
        self, namespace: str, prefix: str = "", page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Iterate every key (with expiration and metadata) under ``prefix``, page by page."""
        cursor = None
        while True:
            page = self.list_page(namespace, prefix, page_size, cursor)
            yield from page.keys
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Entry | None]:
        """Return the entries of up to 100 keys (None where absent).

        Values the node leaves out of its answer (past its byte budget) are fetched one by one.
        """
        answer = self._json(_core.get_many_request(namespace, keys, self._token))
        entries = _core.entries_from_json(answer)
        for name in _core.omitted_from(answer):
            entries[name] = self.get_with_metadata(namespace, name)
        return entries

    def bulk(self, namespace: str, operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply puts and deletes atomically (``{"op": "put", "key", "value", ...}``)."""
        result: dict[str, Any] = self._json(_core.bulk_request(namespace, operations, self._token))
        return result

    def watch(
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
    ) -> Iterator[WatchEvent]:
        """Follow the changes of ``namespace`` (under ``prefix``, or of ``keys``) for ever.

        >>> for event in kv.watch("flags", prefix="beta"):  # doctest: +SKIP
        ...     print(event.key, event.op, event.value)

        ``snapshot=True`` first yields every live key (then a ``ready``
        event). Whenever a stream ends, the watch opens another with the token
        of its last event, at this PoP and then the ``failover`` URLs in turn
        (with backoff up to ``max_backoff`` seconds): no change is missed, and
        none is yielded twice or older than one yielded before (see
        :class:`~edgekv_client.WatchEvent` for ``relist``). ``after`` resumes
        from a token saved earlier (``event.token``). A session remembers each
        event's bookmark, so its reads anywhere see what the watch saw.
        """
        return self._watch(
            "kv", namespace, prefix, keys, include_values, snapshot, after, failover,
            max_backoff, read_timeout, versions,
        )  # fmt: skip

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
        versions: OrderedDict[str, str] | None = None,
    ) -> Iterator[WatchEvent]:
        cursor = WatchCursor(kind, [self.url, *failover], after, snapshot, max_backoff, versions)
        while True:
            scheme, host, port, base = _core.split_url(cursor.url)
            conn: http.client.HTTPConnection
            if scheme == "https":
                import ssl

                context = ssl.create_default_context()
                conn = http.client.HTTPSConnection(
                    host, port, timeout=read_timeout, context=context
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=read_timeout)
            path = watch_path(kind, space, prefix, keys, include_values, cursor.wants_snapshot())
            try:
                conn.request("GET", base + path, headers=cursor.headers(self._token))
                answer = conn.getresponse()
                if answer.status != 200:
                    retry_or_raise(answer.status, answer.read())
                else:
                    parser = SseParser()
                    while chunk := answer.read1(65536):
                        for event in cursor.take(parser.feed(chunk)):
                            if event.bookmark is not None and event.type == "change":
                                self._remember(event.bookmark)
                            yield event
            except (OSError, http.client.HTTPException, Unavailable):
                pass  # this PoP is unreachable, stopping or saturated: the next one
            finally:
                conn.close()
            time.sleep(cursor.failed())

    def cluster_status(self) -> dict[str, Any]:
        """Return the node's cluster status document (admin scope)."""
        request = _core.build_request("GET", "/v1/cluster/status", self._token)
        result: dict[str, Any] = self._json(request)
        return result

    def remove_member(self, node_id: str) -> dict[str, Any]:
        """Remove a dead member by its hex node id (admin scope)."""
        request = _core.build_request("DELETE", f"/v1/cluster/members/{node_id}", self._token)
        result: dict[str, Any] = self._json(request)
        return result


class Session(SessionBookmarks, Client):
    """A client that carries the bookmarks of its writes and sends them with every request.

    A node answers a read that carries bookmarks only once it has replicated
    those writes (or fails with :class:`~edgekv_client.errors.Unavailable`,
    code ``bookmark_not_reached``), so a session reads its own writes and
    never goes back in time, whichever PoP it talks to. :meth:`at` opens the
    same session at another PoP.
    """
