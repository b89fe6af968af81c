"""Bookmarks and versions: opaque strings on the wire, structured here.

A write answers with a *bookmark*: where that write sits in the log of the node
that accepted it. A read that carries a bookmark sees that write or newer.
An entry's *version* is its last-writer-wins stamp ``(hlc, node)``.
"""

from __future__ import annotations

from typing import NamedTuple, Self

_BOOKMARK_PREFIX = "b1."


class Bookmark(NamedTuple):
    """Position ``seq`` in the change log of ``node``, reached at clock ``hlc``."""

    node: int
    seq: int
    hlc: int

    def encode(self) -> str:
        """Return the wire form, e.g. ``b1.1f3a...-2a-18c...``."""
        return f"{_BOOKMARK_PREFIX}{self.node:x}.{self.seq:x}.{self.hlc:x}"

    @classmethod
    def decode(cls, text: str) -> Bookmark:
        """Parse the wire form, raising ValueError for anything EdgeKV did not issue."""
        if not text.startswith(_BOOKMARK_PREFIX) or len(text) > 64:
            raise ValueError("not an EdgeKV bookmark")
        parts = text[len(_BOOKMARK_PREFIX) :].split(".")
        if len(parts) != 3 or not all(parts) or not all(_is_hex(p) for p in parts):
            raise ValueError("not an EdgeKV bookmark")
        node, seq, hlc = (int(p, 16) for p in parts)
        return cls(node, seq, hlc)


def _is_hex(text: str) -> bool:
    return len(text) <= 16 and all(c in "0123456789abcdef" for c in text)


def encode_version(hlc: int, node: int) -> str:
    """Return an entry version (its ETag) from its stamp."""
    return f"{hlc:016x}{node:016x}"


def decode_version(text: str) -> tuple[int, int]:
    """Return the ``(hlc, node)`` stamp of a version, raising ValueError if malformed."""
    if len(text) != 32 or not _is_hex(text[:16]) or not _is_hex(text[16:]):
        raise ValueError("not an EdgeKV version")
    return int(text[:16], 16), int(text[16:], 16)


BOOKMARK_HEADER = "EdgeKV-Bookmark"
"""Request header carrying a session's bookmarks, comma-separated."""


class BookmarkSet:
    """The newest bookmark a session has seen from each node (I/O-free, shared by clients).

    Bookmarks of one node are ordered by seq, so keeping the newest per node is
    enough; bookmarks of different nodes are not comparable, so all are kept
    (one per node that took a write of this session).
    """

    def __init__(self) -> None:
        """Start empty."""
        self._newest: dict[int, Bookmark] = {}

    def add(self, text: str) -> None:
        """Take a write's bookmark into account."""
        bookmark = Bookmark.decode(text)
        current = self._newest.get(bookmark.node)
        if current is None or bookmark.seq > current.seq:
            self._newest[bookmark.node] = bookmark

    def header_value(self) -> str:
        """The header value to send ('' when the session has written nothing)."""
        return ",".join(b.encode() for b in self._newest.values())

    def __len__(self) -> int:
        return len(self._newest)


class SessionBookmarks:
    """What makes a client a session: it sends its bookmarks and keeps the new ones.

    Mixed into both clients (``Session``, ``AsyncSession``) ahead of the client
    class, whose constructor it extends and whose no-op hooks it overrides.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8787",
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        bookmarks: BookmarkSet | None = None,
    ) -> None:
        """Start a session (or continue one, given its ``bookmarks``) at ``url``."""
        super().__init__(url, token=token, timeout=timeout, retries=retries)  # type: ignore[call-arg]
        self.bookmarks = bookmarks if bookmarks is not None else BookmarkSet()
        self._settings = (token, timeout, retries)

    def at(self, url: str) -> Self:
        """The same session, talking to the PoP at ``url``."""
        token, timeout, retries = self._settings
        return type(self)(url, token, timeout, retries, self.bookmarks)

    def _session_headers(self) -> dict[str, str]:
        # Sent even when empty: it marks a session read, answered with what the read saw.
        return {BOOKMARK_HEADER: self.bookmarks.header_value()}

    def _remember(self, bookmark: str) -> None:
        self.bookmarks.add(bookmark)
