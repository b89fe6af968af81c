"""The versioned msgpack envelope of peer messages.

Every peer message is one msgpack array ``[VERSION, kind, body]``. Decoding is
strict: anything that is not exactly a known message of this version raises
:class:`EnvelopeError`, and nothing of it is applied -- a peer payload is taken
whole or not at all.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import msgpack

from edgekv_replication.changes import Change

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Larger than any legal batch (values are at most 25 MiB); bigger is refused."""
MAX_BATCH_CHANGES = 5000
"""Most changes one batch may carry when received (a peer sends at most 500 a
page). A message is refused whole if any array in it is longer than this."""
MAX_ARRAY_ITEMS = MAX_BATCH_CHANGES
"""The longest array a message may hold (a batch's changes, a member list):
msgpack refuses a longer one when it reads its header, before building any of it,
so a batch of a million changes costs the receiver nothing."""

_I64 = (1 << 63) - 1


class EnvelopeError(ValueError):
    """A peer message that does not decode; it is rejected whole."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The puller's answer to Welcome: who pulls, and from where in the server's log."""

    node: int
    incarnation: int
    name: str
    url: str
    cursor: int
    server_incarnation: int
    """The incarnation the cursor belongs to (0: none yet)."""
    echo: bool = False
    """Send the puller its own changes too. Normally they are left out: it has
    them. A node that may have lost its last commits (an unclean stop) asks
    for them, so copies its peers hold come back."""
    region: str = ""
    """The puller's region ("": a node of a version without regions)."""
    regions: bool = True
    """Whether the puller sent the region field. False: a node of the previous
    version, which reads only the messages of its own form (see :func:`encode`)."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's first message on a stream: its identity and the head of its log."""

    node: int
    incarnation: int
    name: str
    head: int
    region: str = ""
    """The server's region ("": a node of a version without regions)."""
    regions: bool = True
    """Whether the server sent the region field. False: a node of the previous
    version, which reads only the messages of its own form (see :func:`encode`)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes after ``after`` up to and including ``upto`` in the sender's log."""

    after: int
    upto: int
    changes: tuple[Change, ...]
    wall_ms: int
    """The sender's wall clock when it sent the batch (clock-offset tracking)."""
    durable: int = -1
    """How far the puller may save its cursor: every change up to here was sent
    or is covered by its marks. Below ``upto`` while changes the puller asked
    to be deferred (:class:`Defer`) are not covered yet; given as -1, ``upto``."""
    mark: int | None = None
    """The sender's origin mark at ``upto``: every write the sender itself
    stamped at or below it is in its log at or below ``upto`` (or replaced there
    by a newer state). None: the sender makes no such claim."""
    relayed: tuple[tuple[int, int], ...] | None = None
    """``(origin, mark)`` pairs of other origins: every write of ``origin``
    stamped at or below ``mark`` is in the sender's log at or below ``upto``
    (or replaced there), so a puller that commits the batch holds them unless
    it asked for ``origin`` to be deferred (``edgekv_replication.relays.
    HeldMarks``). Only marks that moved since the stream's last batch. None: a
    sender that sends none (a puller that did not announce ``relay-marks``
    reads six fields only)."""

    def __post_init__(self) -> None:
        if self.durable < 0:
            object.__setattr__(self, "durable", self.upto)


@dataclass(frozen=True, slots=True)
class Members:
    """The members the sender knows: ``(node, url, name, removed, updated_ms, region)`` each.

    ``region`` is "" when not known (an entry from a node of a version without
    regions, which sends five fields).
    """

    members: tuple[tuple[int, str, str, bool, int, str], ...]


@dataclass(frozen=True, slots=True)
class Defer:
    """Puller to server: leave out changes written by these origins.

    ``marks`` holds ``(origin, mark)`` pairs: the puller pulls each origin
    directly and holds every write it stamped at or below ``mark`` (the mark
    of the origin's last batch it committed). Their changes stay out of the
    stream; those above the mark hold the puller's saved cursor (``durable``)
    back until a later mark covers them. The set only grows within a stream:
    to take an origin out the puller opens a new stream, which resends from
    the saved cursor.
    """

    marks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """Puller to server: its log is applied here up to ``applied`` (committed, maybe not saved).

    Flow control: once a puller has sent one, the server keeps at most a few
    batches beyond the newest ``applied`` in flight, so that a :class:`Defer`
    takes effect within a few batches rather than after megabytes of socket
    buffers. A puller that never sends one gets no limit.
    """

    applied: int


@dataclass(frozen=True, slots=True)
class Ack:
    """The puller has applied the server's log up to ``cursor`` (tombstone collection)."""

    cursor: int


Message = Hello | Welcome | Batch | Members | Ack | Defer | Progress
_KINDS: dict[type[Any], int] = {
    Hello: 1,
    Welcome: 2,
    Batch: 3,
    Members: 4,
    Ack: 5,
    Defer: 6,
    Progress: 7,
}


def encode(message: Message, *, regions: bool = True) -> bytes:
    """Return the wire bytes of ``message``.

    ``regions=False``: in the form of the previous version, for a peer of that
    version (its Hello or Welcome came without a region). Its decoder insists
    on exact field counts, so Hello and Welcome go without their region and
    member entries with five fields; the other kinds are the same in both.
    """
    if isinstance(message, Batch):
        body: list[Any] = [
            message.after,
            message.upto,
            message.wall_ms,
            list(message.changes),  # tuples pack as msgpack arrays
            message.durable,
            message.mark,
        ]
        if message.relayed is not None:
            body.append([list(pair) for pair in message.relayed])
    elif isinstance(message, Hello):
        body = [
            message.node,
            message.incarnation,
            message.name,
            message.url,
            message.cursor,
            message.server_incarnation,
            message.echo,
            message.region,
        ]
        if not regions:
            del body[7:]
    elif isinstance(message, Members):
        width = 6 if regions else 5
        body = [list(member[:width]) for member in message.members]
    elif isinstance(message, Ack):
        body = [message.cursor]
    elif isinstance(message, Defer):
        body = [list(pair) for pair in message.marks]
    elif isinstance(message, Progress):
        body = [message.applied]
    else:
        body = [message.node, message.incarnation, message.name, message.head, message.region]
        if not regions:
            del body[4:]
    packed: bytes = msgpack.packb([VERSION, _KINDS[type(message)], body], use_bin_type=True)
    return packed


def decode(data: bytes) -> Message:
    """Return the message in ``data``, or raise EnvelopeError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EnvelopeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    # A batch of a catch-up is thousands of small objects without a single reference
    # cycle: the cyclic collector, left on, would sweep the whole heap several times
    # per batch for nothing (it was a third of the decoding time). Arrays decode to
    # tuples, which cost less to make than lists.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decode(data)
    finally:
        if collecting:
            gc.enable()


def _decode(data: bytes) -> Message:
    try:
        outer = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            max_array_len=MAX_ARRAY_ITEMS,
            max_map_len=0,  # no message holds a map
        )
    except ValueError as exc:
        if "exceeds max_" in str(exc):
            raise EnvelopeError(
                f"message too large: {exc} (a batch holds at most {MAX_BATCH_CHANGES} changes)"
            ) from None
        raise EnvelopeError(f"not msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise EnvelopeError(f"not msgpack: {exc}") from None
    if type(outer) is not tuple or len(outer) != 3:
        raise EnvelopeError("envelope must be [version, kind, body]")
    version, kind, body = outer
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    if type(body) is not tuple:
        raise EnvelopeError("body must be an array")
    if kind == 1:
        regions = len(body) != 7  # 7: from a node without regions
        if not regions:
            body = (*body, "")
        node, incarnation, name, url, cursor, server_incarnation, echo, region = _fields(
            body, (_u63, _u63, _text, _text, _u63, _u63, _bool, _text)
        )
        return Hello(
            node, incarnation, name, url, cursor, server_incarnation, echo, region, regions
        )
    if kind == 2:
        regions = len(body) != 4  # 4: from a node without regions
        if not regions:
            body = (*body, "")
        node, incarnation, name, head, region = _fields(body, (_u63, _u63, _text, _u63, _text))
        return Welcome(node, incarnation, name, head, region, regions)
    if kind == 3:
        if len(body) == 4:  # from a node that defers nothing
            body = (*body, body[1], None)
        relayed = None
        if len(body) == 7:  # with relayed marks
            *body, raw_relayed = body
            if type(raw_relayed) is not tuple:
                raise EnvelopeError("relayed marks must be an array")
            relayed = tuple(_pair(item) for item in raw_relayed)
        after, upto, wall_ms, raw_changes, durable, mark = _fields(
            tuple(body), (_u63, _u63, _u63, _array, _u63, _opt_u63)
        )
        if upto < after:
            raise EnvelopeError("batch ends before it starts")
        if durable > upto:
            raise EnvelopeError("batch saves a cursor beyond its end")
        changes = tuple(map(_change, raw_changes))
        if changes and not (after < min(map(_seq, changes)) and max(map(_seq, changes)) <= upto):
            raise EnvelopeError("change seq outside the batch's range")
        return Batch(after, upto, changes, wall_ms, durable, mark, relayed)
    if kind == 4:
        return Members(tuple(_member(item) for item in body))
    if kind == 5:
        return Ack(*_fields(body, (_u63,)))
    if kind == 6:
        return Defer(tuple(_pair(item) for item in body))
    if kind == 7:
        return Progress(*_fields(body, (_u63,)))
    raise EnvelopeError(f"unknown message kind {kind!r}")


def _member(item: object) -> tuple[int, str, str, bool, int, str]:
    if type(item) is not tuple:
        raise EnvelopeError("a member must be an array")
    if len(item) == 5:  # from a node without regions
        item = (*item, "")
    node, url, name, removed, updated_ms, region = _fields(
        item, (_u63, _text, _text, _bool, _u63, _text)
    )
    return (node, url, name, removed, updated_ms, region)


def _pair(item: object) -> tuple[int, int]:
    if type(item) is not tuple:
        raise EnvelopeError("an origin mark must be an array")
    origin, mark = _fields(item, (_u63, _u63))
    return (origin, mark)


def _opt_u63(value: object) -> int | None:
    return None if value is None else _u63(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise EnvelopeError(f"expected a boolean, got {value!r}")
    return value


def _change(item: object) -> Change:
    # Inlined checks (not _fields): a catch-up decodes hundreds of thousands of these.
    if type(item) is not tuple or len(item) != 8:
        raise EnvelopeError("a change must be an array of 8 fields")
    ns, key, value, metadata, expiration, hlc, node, seq = item
    if type(ns) is not str or not ns or type(key) is not bytes or not key:
        raise EnvelopeError("a change needs a namespace (string) and a key (bytes)")
    if value is not None and type(value) is not bytes:
        raise EnvelopeError("a value must be bytes or nil")
    if metadata is not None and type(metadata) is not str:
        raise EnvelopeError("metadata must be a string or nil")
    if expiration is not None and (type(expiration) is not int or not -_I64 <= expiration <= _I64):
        raise EnvelopeError(f"expiration must be an integer or nil, got {expiration!r}")
    if not (
        type(hlc) is int
        and type(node) is int
        and type(seq) is int
        and 0 <= hlc <= _I64
        and 0 <= node <= _I64
        and 0 <= seq <= _I64
    ):
        raise EnvelopeError(f"hlc, node and seq must be non-negative 63-bit integers: {item!r}")
    # The checked tuple becomes the Change as it is (no second tuple built field by field).
    return _new_change(Change, item)


_new_change = tuple.__new__
_seq = itemgetter(7)


def _fields(body: tuple[Any, ...], checks: tuple[Any, ...]) -> list[Any]:
    if len(body) != len(checks):
        raise EnvelopeError(f"expected {len(checks)} fields, got {len(body)}")
    return [check(value) for check, value in zip(checks, body, strict=True)]


def _u63(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _I64:
        raise EnvelopeError(f"expected a non-negative 63-bit integer, got {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not -_I64 <= value <= _I64:
        raise EnvelopeError(f"expected an integer or nil, got {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise EnvelopeError(f"expected bytes, got {type(value).__name__}")
    return value


def _opt_bytes(value: object) -> bytes | None:
    return None if value is None else _bytes(value)


def _array(value: object) -> tuple[Any, ...]:
    if type(value) is not tuple:
        raise EnvelopeError("expected an array")
    return value
