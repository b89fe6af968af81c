"""Counter and set handles: ``client.counter(ns, key)`` and ``client.set(ns, key)``.

For the blocking and the async client and their sessions: each method builds
its request here and sends it through the client it was made from, so a
session's bookmarks go with counter and set reads and writes (read-your-writes
at any PoP). Nothing here imports aiohttp: the async handles only await their
client.

A bounded add refused in a strong namespace raises
:class:`~edgekv_client.PreconditionFailed` with ``code == "counter_out_of_bounds"``
and the current value in ``details["value"]``; a full set raises it with
``code == "set_full"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from edgekv_client._core import Request, build_request
from edgekv_client.errors import error_for

if TYPE_CHECKING:
    from edgekv_client._collections import AsyncSender, Sender


class SetPage(NamedTuple):
    """One page of a set's members, sorted by their UTF-8 bytes."""

    members: list[str]
    version: str | None
    list_complete: bool
    cursor: str | None


def _path(kind: str, namespace: str, key: str) -> str:
    if key in ("", ".", ".."):
        raise error_for(
            "invalid_key", f"a key is a non-empty string other than . and ..: {key!r}", 400
        )
    return f"/v1/{kind}/{quote(namespace, safe='')}/{quote(key, safe='/')}"


def add_request(
    namespace: str,
    key: str,
    amount: int,
    token: str | None,
    ttl: int | None = None,
    expiration: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> Request:
    """``POST /v1/counters/{ns}/{key}``."""
    body: dict[str, int] = {"add": amount}
    for name, value in (
        ("ttl", ttl),
        ("expiration", expiration),
        ("min", minimum),
        ("max", maximum),
    ):
        if value is not None:
            body[name] = value
    return build_request("POST", _path("counters", namespace, key), token, json_body=body)


def counter_request(method: str, namespace: str, key: str, token: str | None) -> Request:
    """``GET`` (value) or ``DELETE`` (reset) of a counter."""
    return build_request(method, _path("counters", namespace, key), token)


def update_request(
    namespace: str, key: str, add: Iterable[str], remove: Iterable[str], token: str | None
) -> Request:
    """``POST /v1/sets/{ns}/{key}``."""
    body = {"add": list(add), "remove": list(remove)}
    return build_request("POST", _path("sets", namespace, key), token, json_body=body)


def members_request(
    namespace: str,
    key: str,
    token: str | None,
    prefix: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Request:
    """``GET /v1/sets/{ns}/{key}``: one page."""
    query = {"prefix": prefix or None, "limit": limit, "cursor": cursor}
    return build_request("GET", _path("sets", namespace, key), token, query=query)


def clear_request(namespace: str, key: str, token: str | None) -> Request:
    """``DELETE /v1/sets/{ns}/{key}``."""
    return build_request("DELETE", _path("sets", namespace, key), token)


def _value_of(answer: Mapping[str, Any]) -> int | None:
    """The value an add answers; None when it has none (a token that may not read)."""
    value = answer.get("value")
    return None if value is None else int(value)


def page_from_json(answer: Mapping[str, Any]) -> SetPage:
    """A set page from its JSON answer."""
    return SetPage(
        list(answer["members"]), answer["version"], bool(answer["list_complete"]), answer["cursor"]
    )


class Counter:
    """One counter through a blocking client or session.

    >>> hits = client.counter("stats", "page:/home")  # doctest: +SKIP
    >>> hits.add(1)  # the value this PoP then sees  # doctest: +SKIP
    42
    """

    def __init__(self, client: Sender, namespace: str, key: str) -> None:
        """Handle counter ``key`` of ``namespace`` through ``client``."""
        self.client, self.namespace, self.key = client, namespace, key

    def __repr__(self) -> str:
        return f"Counter({self.namespace!r}, {self.key!r})"

    def add(
        self,
        amount: int = 1,
        *,
        ttl: int | None = None,
        expiration: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """Add ``amount`` (negative subtracts); return the value this PoP then sees.

        ``minimum``/``maximum`` bound the value (strong namespaces only). None
        when the token may write the namespace but not read it: the node does
        not tell such a token the value.
        """
        request = add_request(
            self.namespace, self.key, amount, self.client._token, ttl, expiration, minimum, maximum
        )
        return _value_of(self.client._json(request))

    def value(self) -> int:
        """The counter's value at this PoP (0 if never written)."""
        request = counter_request("GET", self.namespace, self.key, self.client._token)
        return int(self.client._json(request)["value"])

    def reset(self) -> dict[str, Any]:
        """Remove every contribution this PoP has seen; concurrent adds elsewhere survive."""
        request = counter_request("DELETE", self.namespace, self.key, self.client._token)
        answer: dict[str, Any] = self.client._json(request)
        return answer


class Set:
    """One add-wins set of strings through a blocking client or session.

    >>> tags = client.set("posts", "p1:tags")  # doctest: +SKIP
    >>> tags.add("red", "blue"); tags.remove("blue"); tags.members()  # doctest: +SKIP
    ['red']
    """

    def __init__(self, client: Sender, namespace: str, key: str) -> None:
        """Handle set ``key`` of ``namespace`` through ``client``."""
        self.client, self.namespace, self.key = client, namespace, key

    def __repr__(self) -> str:
        return f"Set({self.namespace!r}, {self.key!r})"

    def add(self, *members: str) -> dict[str, Any]:
        """Add ``members``; return the answer with its bookmark."""
        return self.update(add=members)

    def remove(self, *members: str) -> dict[str, Any]:
        """Remove ``members`` (the adds this PoP has seen); return the answer."""
        return self.update(remove=members)

    def update(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> dict[str, Any]:
        """Remove and add in one write."""
        request = update_request(self.namespace, self.key, add, remove, self.client._token)
        answer: dict[str, Any] = self.client._json(request)
        return answer

    def clear(self) -> dict[str, Any]:
        """Remove every member this PoP has seen."""
        answer: dict[str, Any] = self.client._json(
            clear_request(self.namespace, self.key, self.client._token)
        )
        return answer

    def page(
        self, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> SetPage:
        """One page of members (sorted), resuming after ``cursor``."""
        request = members_request(
            self.namespace, self.key, self.client._token, prefix, limit, cursor
        )
        return page_from_json(self.client._json(request))

    def iterate(self, prefix: str | None = None, page_size: int | None = None) -> Iterator[str]:
        """Every member, page by page."""
        cursor = None
        while True:
            page = self.page(prefix, page_size, cursor)
            yield from page.members
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    def members(self, prefix: str | None = None) -> list[str]:
        """Every member (starting with ``prefix``), sorted."""
        return list(self.iterate(prefix))


class AsyncCounter:
    """One counter through an async client or session; :class:`Counter`, awaited."""

    def __init__(self, client: AsyncSender, namespace: str, key: str) -> None:
        """Handle counter ``key`` of ``namespace`` through ``client``."""
        self.client, self.namespace, self.key = client, namespace, key

    def __repr__(self) -> str:
        return f"AsyncCounter({self.namespace!r}, {self.key!r})"

    async def add(
        self,
        amount: int = 1,
        *,
        ttl: int | None = None,
        expiration: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """Add ``amount``; return the value this PoP then sees (None: the token may not read)."""
        request = add_request(
            self.namespace, self.key, amount, self.client._token, ttl, expiration, minimum, maximum
        )
        return _value_of(await self.client._json(request))

    async def value(self) -> int:
        """The counter's value at this PoP (0 if never written)."""
        request = counter_request("GET", self.namespace, self.key, self.client._token)
        return int((await self.client._json(request))["value"])

    async def reset(self) -> dict[str, Any]:
        """Remove every contribution this PoP has seen."""
        request = counter_request("DELETE", self.namespace, self.key, self.client._token)
        answer: dict[str, Any] = await self.client._json(request)
        return answer


class AsyncSet:
    """One add-wins set through an async client or session; :class:`Set`, awaited."""

    def __init__(self, client: AsyncSender, namespace: str, key: str) -> None:
        """Handle set ``key`` of ``namespace`` through ``client``."""
        self.client, self.namespace, self.key = client, namespace, key

    def __repr__(self) -> str:
        return f"AsyncSet({self.namespace!r}, {self.key!r})"

    async def add(self, *members: str) -> dict[str, Any]:
        """Add ``members``."""
        return await self.update(add=members)

    async def remove(self, *members: str) -> dict[str, Any]:
        """Remove ``members`` (the adds this PoP has seen)."""
        return await self.update(remove=members)

    async def update(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> dict[str, Any]:
        """Remove and add in one write."""
        request = update_request(self.namespace, self.key, add, remove, self.client._token)
        answer: dict[str, Any] = await self.client._json(request)
        return answer

    async def clear(self) -> dict[str, Any]:
        """Remove every member this PoP has seen."""
        request = clear_request(self.namespace, self.key, self.client._token)
        answer: dict[str, Any] = await self.client._json(request)
        return answer

    async def page(
        self, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> SetPage:
        """One page of members (sorted), resuming after ``cursor``."""
        request = members_request(
            self.namespace, self.key, self.client._token, prefix, limit, cursor
        )
        return page_from_json(await self.client._json(request))

    async def iterate(
        self, prefix: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[str]:
        """Every member, page by page."""
        cursor = None
        while True:
            page = await self.page(prefix, page_size, cursor)
            for member in page.members:
                yield member
            if page.list_complete or page.cursor is None:
                return
            cursor = page.cursor

    async def members(self, prefix: str | None = None) -> list[str]:
        """Every member (starting with ``prefix``), sorted."""
        return [member async for member in self.iterate(prefix)]
