"""Watch resume tokens: where a watcher has got, in a form any PoP can serve.

A watch event's ``id`` (and so a browser's ``Last-Event-ID``) is a token of two
parts:

* ``node``, ``incarnation``, ``seq``: the position in the change log of the
  node that sent it. The same node (same incarnation) resumes exactly there.
* ``covered``: a version vector, origin node -> hlc. Every write an origin
  stamped at or below its entry has reached the watcher (or a newer state of
  its key has). Another node resumes by sending the newest state of every
  matching key whose stamp the vector does not cover.

A node fills the vector from what it knows is complete, never from the
largest stamp it has seen: its own writes up to its origin mark, and each
peer's up to the mark of the newest batch of that peer's own stream
(:mod:`edgekv_replication.relays`). A relayed copy can arrive before older
writes of its origin, so "the largest stamp seen" would skip those.

Standard library only: the client imports this to keep tokens per session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from edgekv_replication.versions import is_hex_field

_PREFIX = "w1."
MAX_ORIGINS = 64
"""Most origins one token names (a cluster has far fewer nodes)."""
MAX_TOKEN_CHARS = 16 + 4 * 17 + MAX_ORIGINS * 34
"""Longest token this module writes; anything longer is refused unread."""

LAST_EVENT_ID = "Last-Event-ID"
"""The request header browsers' EventSource send when they reconnect."""


class WatchToken(NamedTuple):
    """A watcher's position at ``node`` and the writes it has had from every origin."""

    node: int
    incarnation: int
    seq: int
    covered: Mapping[int, int]

    def encode(self) -> str:
        """The wire form: ``w1.<node>.<incarnation>.<seq>.<origin>-<hlc>_...`` (hex)."""
        return encode_token(self.node, self.incarnation, self.seq, vector_text(self.covered))

    @classmethod
    def decode(cls, text: str) -> WatchToken:
        """Parse the wire form, raising ValueError for anything EdgeKV did not issue."""
        if len(text) > MAX_TOKEN_CHARS or not text.startswith(_PREFIX):
            raise ValueError("not an EdgeKV watch token")
        parts = text[len(_PREFIX) :].split(".")
        if len(parts) != 4 or not all(parts[:3]) or not all(map(is_hex_field, parts[:3])):
            raise ValueError("not an EdgeKV watch token")
        covered: dict[int, int] = {}
        if parts[3]:
            entries = parts[3].split("_")
            if len(entries) > MAX_ORIGINS:
                raise ValueError("not an EdgeKV watch token")
            for entry in entries:
                origin, sep, hlc = entry.partition("-")
                if not sep or not origin or not hlc or not is_hex_field(origin):
                    raise ValueError("not an EdgeKV watch token")
                if not is_hex_field(hlc) or int(origin, 16) in covered:
                    raise ValueError("not an EdgeKV watch token")
                covered[int(origin, 16)] = int(hlc, 16)
        node, incarnation, seq = (int(part, 16) for part in parts[:3])
        return cls(node, incarnation, seq, covered)


def vector_text(covered: Mapping[int, int]) -> str:
    """The vector part of a token's wire form (a node encodes it once per change of it)."""
    return "_".join(f"{origin:x}-{hlc:x}" for origin, hlc in sorted(covered.items()))


def token_head(node: int, incarnation: int) -> str:
    """What every token a node incarnation issues starts with (its seq follows)."""
    return f"{_PREFIX}{node:x}.{incarnation:x}."


def encode_token(node: int, incarnation: int, seq: int, vector: str) -> str:
    """A token's wire form from its fields and :func:`vector_text`."""
    return f"{token_head(node, incarnation)}{seq:x}.{vector}"


def covers(covered: Mapping[int, int], hlc: int, node: int) -> bool:
    """Whether the write stamped ``(hlc, node)`` is covered by the vector ``covered``."""
    return hlc <= covered.get(node, -1)


def merged(first: Mapping[int, int], second: Mapping[int, int]) -> dict[int, int]:
    """The vector covering what either covers (both must hold for the same watcher)."""
    out = dict(first)
    for origin, hlc in second.items():
        if hlc > out.get(origin, -1):
            out[origin] = hlc
    return out


def below_any(covered: Mapping[int, int], collected: Mapping[int, int]) -> bool:
    """Whether an origin's collected tombstones reach past what ``covered`` holds.

    ``collected``: origin -> the newest stamp of its rows deleted by tombstone
    collection. A watcher not covered up to it may have missed a delete.
    """
    return any(hlc > covered.get(origin, -1) for origin, hlc in collected.items())
