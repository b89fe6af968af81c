"""Client sessions: the bookmarks a session has seen, sent with every request.

The wire form of a bookmark and its header live in
:mod:`edgekv_replication.bookmarks`, shared with the node; what a session keeps
and sends is the client's own.
"""

from __future__ import annotations

from typing import Self

from edgekv_replication.bookmarks import BOOKMARK_HEADER, Bookmark


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
