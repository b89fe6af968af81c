"""The backbone between regions, without I/O: subjects, message ids, state reports, the floor.

A node publishes its *own* changes (origin == itself) as envelope
:class:`~edgekv_replication.envelope.Batch` messages on its own subject of one
JetStream stream, ``<stream>.changes.<region>.<node id>``, and consumes each
other region's with a durable consumer filtered to that region's subjects, so
its own region's changes (peer streams bring them) never reach it from the
backbone. Every few seconds (at most 5, six times per ``member_down_timeout``) it
also publishes a
:class:`State` report on plain NATS (``<stream>.state.<node id>``, not kept
by the stream): who it is, how far its own writes are on the backbone and
how far it has consumed, and now and then its member list, so members spread
across regions.

**Tombstones and the backbone** (:class:`StampFloor`). The stream keeps every
message, so a write superseded long ago by a delete is still in it; a node
that collected the delete's tombstone and then consumed that old write would
bring the key back. A tombstone stamped ``h`` may therefore go only when
(1) every member has published all of its own writes stamped up to ``h``, and
(2) every member has since consumed everything the stream held then for it
(every other region's subjects). Each report carries (1) as ``published_ms``
(the wall-clock part of the origin mark at the node's published position) and
(2) as ``caught_up_ms`` (the node's wall clock when a fetch found nothing more
pending, everything before it applied: the oldest such time of its consumers,
one per other region). The floor keeps, for each moment it saw every member's
``published_ms``, that minimum, and lets it count once every member's
``caught_up_ms`` is past that moment plus a margin for clock skew.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from edgekv_replication.envelope import EnvelopeError
from edgekv_replication.intake import REGION, member_problem

STATE_VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024
"""A state report larger than this is refused unread."""
MAX_STATE_MEMBERS = 5000
NODE_HEADER = "EdgeKV-Node"
INCARNATION_HEADER = "EdgeKV-Incarnation"
_HEX16 = re.compile(r"[0-9a-f]{16}")
_I64 = (1 << 63) - 1


def region_token(region: str) -> str:
    """``region`` as one subject token: ``.`` (a token separator) becomes ``~``.

    One-to-one, since no region holds a ``~`` (:data:`~edgekv_replication.intake.REGION`).
    """
    return region.replace(".", "~")


def changes_subject(stream: str, region: str, node: int | None = None) -> str:
    """The subject ``node`` of ``region`` publishes its own changes on (every node's: ``None``)."""
    return f"{stream}.changes.{region_token(region)}." + ("*" if node is None else f"{node:016x}")


def all_changes(stream: str) -> str:
    """The subjects of every node's changes: what the stream holds."""
    return f"{stream}.changes.*.*"


def consumer_name(node: int, region: str) -> str:
    """The durable consumer through which ``node`` reads ``region``'s changes."""
    return f"edgekv-{node:016x}-{region_token(region)}"


def state_subject(stream: str, node: int | None = None) -> str:
    """The subject of ``node``'s state reports (every node's: ``None``)."""
    return f"{stream}.state." + ("*" if node is None else f"{node:016x}")


def message_id(node: int, incarnation: int, upto: int) -> str:
    """``Nats-Msg-Id`` of a batch: the same batch published again after a restart is dropped."""
    return f"{node:016x}.{incarnation:016x}.{upto}"


def origin_of(subject: str, headers: Mapping[str, str] | None) -> tuple[int, int]:
    """The origin node and incarnation a changes message claims; EnvelopeError if malformed.

    The node named by the headers must be the one of the subject.
    """
    headers = headers or {}
    node_hex = headers.get(NODE_HEADER, "")
    incarnation_hex = headers.get(INCARNATION_HEADER, "")
    if not (_HEX16.fullmatch(node_hex) and _HEX16.fullmatch(incarnation_hex)):
        raise EnvelopeError("a backbone message needs 16-hex-digit node and incarnation headers")
    if not subject.endswith("." + node_hex):
        raise EnvelopeError(f"message of node {node_hex} on another node's subject {subject}")
    node, incarnation = int(node_hex, 16), int(incarnation_hex, 16)
    if node > _I64 or incarnation > _I64:
        raise EnvelopeError("node or incarnation beyond 63 bits")
    return node, incarnation


@dataclass(frozen=True, slots=True)
class State:
    """A node's periodic report on the backbone."""

    node: int
    region: str
    published_ms: int | None
    """Every write this node stamped at or before this wall-clock ms is on the backbone."""
    caught_up_ms: int | None
    """This node had applied everything the stream held for it at this wall-clock ms."""
    members: tuple[tuple[int, str, str, bool, int, str], ...] = ()
    """Its member list (sent now and then, not in every report)."""


def encode_state(state: State) -> bytes:
    """The wire bytes of ``state``."""
    packed: bytes = msgpack.packb(
        [
            STATE_VERSION,
            state.node,
            state.region,
            state.published_ms,
            state.caught_up_ms,
            [list(member) for member in state.members],
        ],
        use_bin_type=True,
    )
    return packed


def decode_state(data: bytes) -> State:
    """Decode a state report strictly; EnvelopeError if it is not exactly one.

    Member entries are only decoded here; the receiver screens them as it
    does a peer's (:func:`~edgekv_replication.intake.screen_members`).
    """
    if len(data) > MAX_STATE_BYTES:
        raise EnvelopeError(f"state report of {len(data)} bytes exceeds {MAX_STATE_BYTES}")
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            max_array_len=MAX_STATE_MEMBERS,
            max_map_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise EnvelopeError(f"not a state report: {exc}") from None
    if type(body) is not tuple or len(body) != 6 or body[0] != STATE_VERSION:
        raise EnvelopeError("a state report is [1, node, region, published, caught_up, members]")
    _, node, region, published_ms, caught_up_ms, raw_members = body
    if type(node) is not int or not 0 < node <= _I64:
        raise EnvelopeError("node id out of range")
    if type(region) is not str or not REGION.fullmatch(region):
        raise EnvelopeError("region does not match [A-Za-z0-9_.-]{1,64}")
    for value in (published_ms, caught_up_ms):
        if value is not None and (type(value) is not int or not 0 <= value <= _I64):
            raise EnvelopeError("published and caught-up times are 63-bit integers or nil")
    if type(raw_members) is not tuple:
        raise EnvelopeError("members must be an array")
    members = tuple(_member(item) for item in raw_members)
    return State(node, region, published_ms, caught_up_ms, members)


def _member(item: Any) -> tuple[int, str, str, bool, int, str]:
    if type(item) is not tuple or len(item) != 6:
        raise EnvelopeError("a member is an array of 6 fields")
    # Shapes only; member_problem with the real clock screens them on arrival.
    if member_problem(item, now_ms=_I64, max_ahead_ms=0) is not None:
        raise EnvelopeError(f"malformed member entry {item!r}")
    node, url, name, removed, updated_ms, region = item
    return (node, url, name, removed, updated_ms, region)


class Take(enum.Enum):
    """What a consumer does with one batch of the backbone."""

    SKIP = "skip"
    """Acknowledge it unapplied: applied already, or own or of this region (peer streams
    bring it; the region filters deliver such a batch only from a member that moved)."""
    APPLY = "apply"
    """Check it (intake) and apply it, moving the origin's cursor to its end."""
    HOLD = "hold"
    """Hand it back to come again: a batch of its origin before it is still out."""


@dataclass
class Consumption:
    """Per origin, batches apply in order, each exactly once (sans-IO).

    JetStream delivers a message not acknowledged before a crash again only
    after its ``ack_wait``, so after newer ones; a batch continues from the
    previous one's end (``after``), and one that does not continue the
    origin's cursor waits (:attr:`Take.HOLD`), as does every later one of the
    origin, until the missing one has applied. So do the batches of a node not
    known as a member yet (its region decides where its changes come from)
    and those behind a batch intake refused (:meth:`refused`).
    """

    me: int
    region: str
    held: dict[int, int] = field(default_factory=dict)
    """Origin -> the end of its batch that holds the others back."""

    def decide(self, origin: int, region: str | None, after: int, upto: int, cursor: int) -> Take:
        """What to do with ``origin``'s batch ``(after, upto]``; ``cursor``: applied so far."""
        if origin == self.me or region == self.region or upto <= cursor:
            return Take.SKIP
        if self.held.get(origin, upto) < upto:
            return Take.HOLD  # behind a held batch
        if after > cursor or region is None:
            self.held[origin] = upto
            return Take.HOLD
        self.held.pop(origin, None)
        return Take.APPLY

    def refused(self, origin: int, upto: int) -> None:
        """Intake refused ``origin``'s batch ending at ``upto``: it and later ones wait."""
        self.held[origin] = upto


class StampFloor:
    """How old a tombstone must be before the backbone lets it go (see the module's text)."""

    def __init__(self, margin_ms: int, kept: int = 600) -> None:
        """``margin_ms``: allowance for the members' clocks differing."""
        self.margin_ms = margin_ms
        self._seen: deque[tuple[int, int]] = deque(maxlen=kept)
        """(when observed, every member's published_ms minimum then), oldest first."""
        self._floor: int | None = None

    def observe(
        self,
        now_ms: int,
        reports: Iterable[tuple[int | None, int | None]],
    ) -> int | None:
        """Take every member's latest ``(published_ms, caught_up_ms)``; return the floor.

        ``reports`` holds one pair per member that must count (this node
        included); a member with no report yet is a pair of ``None`` and
        holds the floor where it is.
        """
        published, caught_up = [], []
        for pub, cau in reports:
            published.append(pub)
            caught_up.append(cau)
        if any(value is None for value in published):
            return self._floor
        self._seen.append((now_ms, min(p for p in published if p is not None)))
        if any(value is None for value in caught_up):
            return self._floor
        everyone = min(c for c in caught_up if c is not None)
        while self._seen and self._seen[0][0] + self.margin_ms <= everyone:
            _, floor = self._seen.popleft()
            if self._floor is None or floor > self._floor:
                self._floor = floor
        return self._floor

    @property
    def floor(self) -> int | None:
        """Tombstones stamped before this wall-clock ms may go (None: none yet)."""
        return self._floor
