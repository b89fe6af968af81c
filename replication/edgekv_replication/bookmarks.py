"""Bookmarks: opaque strings on the wire, structured here.

A write answers with a *bookmark*: where that write sits in the log of the node
that accepted it. A read that carries a bookmark sees that write or newer.
The node issues and checks them, the client keeps them per session; standard
library only, so the client imports this without the replication machinery.
"""

from __future__ import annotations

from typing import NamedTuple

from edgekv_replication.versions import is_hex_field

_BOOKMARK_PREFIX = "b1."


class Bookmark(NamedTuple):
    """Position ``seq`` in the change log of ``node``, reached at clock ``hlc``."""

    node: int
    seq: int
    hlc: int

    def encode(self) -> str:
        """Return the wire form, e.g. ``b1.1f3a.2a.18c...``."""
        return f"{_BOOKMARK_PREFIX}{self.node:x}.{self.seq:x}.{self.hlc:x}"

    @classmethod
    def decode(cls, text: str) -> Bookmark:
        """Parse the wire form, raising ValueError for anything EdgeKV did not issue."""
        if not text.startswith(_BOOKMARK_PREFIX) or len(text) > 64:
            raise ValueError("not an EdgeKV bookmark")
        parts = text[len(_BOOKMARK_PREFIX) :].split(".")
        if len(parts) != 3 or not all(parts) or not all(is_hex_field(p) for p in parts):
            raise ValueError("not an EdgeKV bookmark")
        node, seq, hlc = (int(p, 16) for p in parts)
        return cls(node, seq, hlc)


BOOKMARK_HEADER = "EdgeKV-Bookmark"
"""Request header carrying a session's bookmarks, comma-separated."""
