"""Read-your-writes across PoPs: reads that carry bookmarks wait until they are reached.

A write answers with a bookmark ``(node, seq, hlc)``: its place in the log of
the node that accepted it. A read may carry bookmarks (header
``EdgeKV-Bookmark`` or query ``bookmark``, comma-separated, as a client
session sends them); this node answers only once it has applied every one of
those logs up to the bookmarked seq -- its own log, or a peer's log through
the cursor of its stream from that peer. Until then the read waits, at most
``bookmark_timeout`` seconds, then answers 503 ``bookmark_not_reached`` with
``Retry-After``: never an older value.

A bookmark of a node this one does not pull from directly (a fixed line
topology) cannot be checked and waits out its timeout; in the default full
mesh every node pulls from every other.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

from aiohttp import web

from edgekv.http.errors import ApiError
from edgekv.node import Node
from edgekv_replication.bookmarks import BOOKMARK_HEADER, Bookmark
from edgekv_replication.versions import encode_version

MAX_BOOKMARKS = 32
HEADER = BOOKMARK_HEADER
# How often a waiting read looks again when no commit woke it (cursor-only progress).
_RECHECK_SECONDS = 0.05


def parse_bookmarks(text: str) -> list[Bookmark]:
    """The bookmarks of a header or query value, or ``invalid_bookmark``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) > MAX_BOOKMARKS:
        raise ApiError("invalid_bookmark", f"at most {MAX_BOOKMARKS} bookmarks per request")
    try:
        return [Bookmark.decode(part) for part in parts]
    except ValueError:
        raise ApiError("invalid_bookmark", "bookmark was not issued by EdgeKV") from None


class Written(Protocol):
    """Where a write landed (a key-value or a document write)."""

    @property
    def hlc(self) -> int:
        """The write's stamp (0 when nothing changed)."""

    @property
    def node(self) -> int:
        """The node whose stamp it is."""

    @property
    def seq(self) -> int:
        """The change-log seq after the write."""


def write_answer(node: Node, result: Written, count: int = 1) -> web.Response:
    """The answer to every write: its bookmark, and its version when it stamped one."""
    node.metrics.writes += count
    bookmark = Bookmark(node.store.node_id, result.seq, result.hlc).encode()
    # Both fields are ASCII hex: the JSON is written directly, on the hot path of writes.
    body = f'{{"bookmark": "{bookmark}"'
    if result.hlc:
        body += f', "version": "{encode_version(result.hlc, result.node)}"'
    return web.Response(text=body + "}", content_type="application/json")


def head_bookmark(node: Node) -> str:
    """A bookmark of everything this node has applied so far."""
    store = node.store
    return Bookmark(store.node_id, store.seq, store.clock.last).encode()


def reached(node: Node, bookmark: Bookmark) -> bool:
    """Whether this node has applied the bookmarked log up to the bookmarked seq."""
    store = node.store
    if bookmark.node == store.node_id:
        return store.seq >= bookmark.seq
    # Not the cursor in SQLite: it becomes visible before the read cache is cleared.
    return store.settled_cursor(bookmark.node) >= bookmark.seq


async def wait_until_reached(node: Node, bookmarks: list[Bookmark]) -> None:
    """Return once every bookmark is reached, or raise ``bookmark_not_reached``."""
    pending = [b for b in bookmarks if not reached(node, b)]
    if not pending:
        return
    loop = asyncio.get_running_loop()
    timeout = node.config.bookmark_timeout
    deadline = loop.time() + timeout
    feed = node.replicator.feed
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ApiError(
                "bookmark_not_reached",
                f"this node has not yet replicated the session's writes (waited {timeout:g} s)",
                headers={"Retry-After": str(max(1, math.ceil(timeout)))},
            )
        await feed.wait_beyond(feed.seq, min(remaining, _RECHECK_SECONDS))
        pending = [b for b in pending if not reached(node, b)]
