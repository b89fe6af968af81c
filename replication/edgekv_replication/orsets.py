"""Add-wins observed-remove sets of strings as last-writer-wins rows: state, merge, writes.

A set ``(ns, key)`` is held as rows, one per member and node that added or
removed it, each an ordinary change of the change log (namespace ``"@set:" +
ns``, key ``key + 0xff + member + 0x00 + node as 16 hex digits``, so a set's
rows list in member order). A row is written by its node only, with its own
stamps, so last-writer-wins keeps that node's newest state of the member and
merging replicas row by row is a join (:func:`merge_replicas`); every
transport of key-value changes carries sets unchanged.

A row holds (JSON, :func:`encode_row`):

``a``  the stamp (hlc) of this node's latest add of the member, 0 if none.
``r``  the adds this node removed: ``origin -> hlc`` of the newest add of
       that origin it had seen when it removed the member.

A member is present when some node's latest add is newer than every removal
of that node's adds: **add wins**. A remove takes away only the adds its node
had seen; an add it had not seen -- concurrent, at another PoP, across a
partition -- survives, and the member stays. Clearing a set (DELETE) removes
every member this way.

Limits: a member is a non-empty UTF-8 string of at most :data:`MAX_MEMBER_BYTES`
bytes without NUL (the row key's separator).

Standard library only: the client's :class:`LocalReader` decodes rows too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from edgekv_replication.json_objects import unique_object

SET_NS_PREFIX = "@set:"
"""Namespace prefix of set rows (``@`` and ``:`` are never in a key-value namespace)."""
KEY_SEPARATOR = b"\xff"
"""Between a set's key and a member: no UTF-8 text holds this byte."""
NODE_SEPARATOR = b"\x00"
"""Between a member and a row's node: members hold no NUL, and NUL sorts first, so
rows list in member order."""
MAX_MEMBER_BYTES = 512
MAX_ROW_BYTES = 64 * 1024
"""A set row is at most this long: removals of about two thousand nodes' adds."""
_ROWS = json.JSONDecoder(object_pairs_hook=unique_object)
"""Rows from peers are held to what this node writes (json.dumps): no name twice."""
_I63 = (1 << 63) - 1


class BadRow(ValueError):
    """A set row that does not decode as one (refused at intake)."""


class BadMember(ValueError):
    """A member that is not a non-empty UTF-8 string of at most 512 bytes without NUL."""


@dataclass(frozen=True, slots=True)
class Row:
    """One node's state of one member."""

    added: int = 0
    removed: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A row as a replica holds it."""

    member: str
    node: int
    row: Row
    hlc: int


# -- names --------------------------------------------------------------------------


def set_ns(ns: str) -> str:
    """The change namespace of a set in ``ns``."""
    return SET_NS_PREFIX + ns


def is_set_ns(ns: str) -> bool:
    """Whether ``ns`` (a change's namespace) holds set rows."""
    return ns.startswith(SET_NS_PREFIX)


def check_member(member: object) -> bytes:
    """The UTF-8 bytes of a valid member, else :class:`BadMember`."""
    if type(member) is not str or not member:
        raise BadMember("a member is a non-empty string")
    try:
        raw = member.encode("utf-8")
    except UnicodeEncodeError:
        raise BadMember("a member must be valid Unicode (no lone surrogates)") from None
    if len(raw) > MAX_MEMBER_BYTES:
        raise BadMember(f"a member is {len(raw)} bytes of UTF-8; the limit is {MAX_MEMBER_BYTES}")
    if NODE_SEPARATOR in raw:
        raise BadMember("a member holds no NUL character")
    return raw


def row_key(key: bytes, member: str, node: int) -> bytes:
    """The change key of ``node``'s row of ``member`` in set ``key``."""
    return key + KEY_SEPARATOR + member.encode() + NODE_SEPARATOR + b"%016x" % node


def split_row_key(raw: bytes) -> tuple[bytes, str, int]:
    """``(set key, member, node)`` of a row's change key; BadRow if it is not one."""
    key, sep, rest = raw.partition(KEY_SEPARATOR)
    member, sep2, node = rest.rpartition(NODE_SEPARATOR)
    if not (sep and sep2 and key and len(node) == 16):
        raise BadRow("a set row's key is the set key, 0xff, the member, NUL and 16 hex digits")
    try:
        text = member.decode("utf-8")
        check_member(text)
    except (UnicodeDecodeError, BadMember) as exc:
        raise BadRow(f"a set row's member is invalid: {exc}") from None
    try:
        hex_node = node.decode("ascii")
        if hex_node != hex_node.lower():
            raise ValueError(hex_node)
        return key, text, int(hex_node, 16)
    except ValueError:
        raise BadRow("a set row's node is 16 lowercase hex digits") from None


def rows_range(key: bytes, prefix: str = "") -> tuple[bytes, bytes]:
    """The change keys ``[low, high)`` of the rows of set ``key`` whose member starts so."""
    low = key + KEY_SEPARATOR + prefix.encode()
    if prefix:
        return low, _after_prefix(low)
    return low, key + KEY_SEPARATOR + KEY_SEPARATOR


def _after_prefix(prefix: bytes) -> bytes:
    # Members are UTF-8 (no 0xff byte), so the last byte can always be raised.
    return prefix[:-1] + bytes([prefix[-1] + 1])


def after_member(key: bytes, member: str) -> bytes:
    """The lowest change key past every row of ``member`` (a cursor's resume point)."""
    return key + KEY_SEPARATOR + member.encode() + b"\x01"


# -- rows as bytes --------------------------------------------------------------------


def encode_row(row: Row) -> bytes:
    """A row's stored value: compact JSON, removals by origin in hex."""
    body: dict[str, Any] = {"a": row.added}
    if row.removed:
        body["r"] = {f"{origin:016x}": hlc for origin, hlc in sorted(row.removed.items())}
    return json.dumps(body, separators=(",", ":")).encode()


def _u63(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _I63:
        raise BadRow(f"expected a non-negative 63-bit integer, got {value!r}")
    return value


def decode_row(value: bytes) -> Row:
    """The row a stored value holds; BadRow if it is not a set row."""
    if len(value) > MAX_ROW_BYTES:
        raise BadRow(f"a set row of {len(value)} bytes; the limit is {MAX_ROW_BYTES}")
    try:
        body = _ROWS.decode(value.decode("utf-8"))
    except (ValueError, RecursionError):
        raise BadRow("a set row is JSON") from None
    if type(body) is not dict or not {"a"} <= body.keys() <= {"a", "r"}:
        raise BadRow("a set row is an object of a and r")
    raw_removed = body.get("r", {})
    if type(raw_removed) is not dict:
        raise BadRow("a set row's removals are an object")
    removed: dict[int, int] = {}
    for origin, hlc in raw_removed.items():
        if len(origin) != 16:
            raise BadRow("a removal's origin is 16 hex digits")
        try:
            removed[int(origin, 16)] = _u63(hlc)
        except ValueError:
            raise BadRow("a removal is origin (16 hex digits) -> hlc") from None
    return Row(_u63(body["a"]), removed)


# -- membership ---------------------------------------------------------------------


def is_present(rows: Iterable[MemberRow]) -> bool:
    """Whether the member of ``rows`` (all of one member) is in the set: an add unremoved."""
    rows = list(rows)
    removed: dict[int, int] = {}
    for r in rows:
        for origin, hlc in r.row.removed.items():
            removed[origin] = max(removed.get(origin, 0), hlc)
    return any(r.row.added > removed.get(r.node, 0) for r in rows)


def members_of(rows: Iterable[MemberRow]) -> Iterator[str]:
    """The present members among ``rows`` (in member order, as the rows come)."""
    for member, group in groupby(rows, key=lambda r: r.member):
        if is_present(group):
            yield member


def version_of(rows: Iterable[MemberRow]) -> tuple[int, int]:
    """The newest stamp ``(hlc, node)`` among the rows."""
    return max(((r.hlc, r.node) for r in rows), default=(0, 0))


def plan_add(rows: list[MemberRow], node: int, stamp: int) -> Row:
    """The new row of ``node`` after adding the member: its add stamped ``stamp``."""
    own = next((r for r in rows if r.node == node), None)
    return Row(stamp, own.row.removed if own else {})


def plan_remove(rows: list[MemberRow], node: int) -> Row | None:
    """The new row of ``node`` after removing the member: every add it holds, removed.

    None when the member is not present here (nothing to remove, nothing written).
    """
    if not is_present(rows):
        return None
    own = next((r for r in rows if r.node == node), None)
    removed = dict(own.row.removed) if own else {}
    for r in rows:
        if r.row.added:
            removed[r.node] = max(removed.get(r.node, 0), r.row.added)
    return Row(own.row.added if own else 0, removed)


RETIRE = Row()
"""What :func:`retired` answers for a row that may go: its writer deletes it (a tombstone)."""


def retired(rows: list[MemberRow], node: int, settled: Callable[[MemberRow], bool]) -> Row | None:
    """``node``'s row of a member with what is no longer needed taken out; None: unchanged.

    The collection of removed members' metadata, run by each node on its own rows:

    * an add that a removal covers is retired (``added`` set to 0): it can never
      count again, and the row no longer needs a removal to hold it down;
    * a removal of an origin's add is dropped once that origin's row here holds
      no add it covers (retired, or added anew since) and that row is
      ``settled`` -- every member has acknowledged it (the tombstones' rule), so
      no replica can still hold the covered add without its retirement;
    * a row left with neither is answered :data:`RETIRE`: its writer deletes it,
      and the tombstone is collected by the tombstones' rule.
    """
    own = next((r for r in rows if r.node == node), None)
    if own is None:
        return None
    removed: dict[int, int] = {}
    for r in rows:
        for origin, hlc in r.row.removed.items():
            removed[origin] = max(removed.get(origin, 0), hlc)
    added = own.row.added if own.row.added > removed.get(node, 0) else 0
    by_node = {r.node: r for r in rows}
    kept = {}
    for origin, hlc in own.row.removed.items():
        target = by_node.get(origin)
        if target is None:
            continue  # its row is gone here: collected, after every member had its tombstone
        if 0 < target.row.added <= hlc or not settled(target):
            kept[origin] = hlc
    new = Row(added, kept)
    if new == own.row:
        return None
    return RETIRE if not added and not kept else new


# -- replicas, for properties and the simulated network -------------------------------

Replica = dict[tuple[str, int], MemberRow]
"""One replica's rows of one set, by (member, node)."""


def merge_replicas(a: Replica, b: Replica) -> Replica:
    """Row by row, the newer stamp wins (one writer per row: its newest state)."""
    merged = dict(a)
    for slot, theirs in b.items():
        mine = merged.get(slot)
        if mine is None or (theirs.hlc, encode_row(theirs.row)) > (mine.hlc, encode_row(mine.row)):
            merged[slot] = theirs
    return merged


def replica_members(replica: Replica) -> list[str]:
    """The members a replica holds, sorted by UTF-8 bytes (as the API lists them)."""
    rows = sorted(replica.values(), key=lambda r: (r.member.encode(), r.node))
    return list(members_of(rows))
