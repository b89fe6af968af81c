"""Both roles of a pull stream, free of I/O: what to say, what to send, what to apply.

Like h11, this one module holds the rules of both ends: the puller
(:class:`PullSession`, :func:`plan_apply`) and the server
(:class:`ServeSession`: admission, the flow-control window, what goes in the
next batch, deferrals). A node pulls from each peer "changes with seq > cursor". The server speaks
first: :class:`~edgekv_replication.envelope.Welcome` names it (node id,
incarnation, name) and the head of its log. The puller answers
:class:`~edgekv_replication.envelope.Hello` with its own identity, its cursor
and the server incarnation that cursor belongs to; the server resumes from
that cursor (:func:`resume_point`: from 0 when the incarnation changed -- a
wiped or replaced peer is re-synced from zero -- or the cursor is past its
head), sends its member list, then streams batches. The puller applies a
batch and advances its cursor in one transaction, so a crash never skips a
change.

These classes hold no sockets and no database: a node drives them over
WebSockets and its SQLite log, the simulated network in the tests over lists
and a dictionary log (both through :class:`~edgekv_replication.log.Log`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgekv_replication.changes import Change, wins
from edgekv_replication.envelope import Ack, Batch, Defer, Hello, Progress, Welcome
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.log import Log
from edgekv_replication.relays import Deferral

PAGE_SIZE = 500
"""Changes a batch holds at most (and a page of the log reads)."""
IN_FLIGHT = 32
"""Batches sent beyond the puller's reported progress (once it reports any):
twice what a puller applies at once, so that the next batches are on their
way while it commits."""
FIRST_IN_FLIGHT = 4
"""The window a stream starts with, doubled with each progress report up to
:data:`IN_FLIGHT`. A puller healed from a partition opens its streams from
every peer at once; before it can ask a relaying peer to defer an origin it
pulls directly, that peer's stream sends a window of relayed copies it then
decodes for nothing (a whole window was a sixth of a 100,000-key catch-up)."""
REMOVED = 4403
"""WebSocket close code: the puller was removed from the cluster."""
RESYNC_REQUIRED = 4410
"""WebSocket close code: the puller is behind tombstones collected at the server."""
WITHDRAWN = 1012
"""WebSocket close code (service restart): the server sent relayed marks of an origin it
no longer vouches for (``RelayDeferrals.withdrawn``); the puller reconnects at once and
stops deferring that origin elsewhere."""


FEATURES = ("regions", "relay-marks")
"""What a puller of this version announces as it opens a stream (a header of
the request, see :func:`reads_regions`). The server speaks first, so it must
know the puller's form before the puller says anything: a puller of the
previous version announces nothing and refuses a Welcome with a region; one
without ``relay-marks`` refuses a batch with relayed marks (``Batch.relayed``)."""


def announced_features(announced: str) -> set[str]:
    """The features a puller announced (comma-separated)."""
    return {feature.strip() for feature in announced.split(",")}


def reads_regions(announced: str) -> bool:
    """Whether a puller that announced ``announced`` (comma-separated) reads region fields."""
    return "regions" in announced_features(announced)


def reads_relay_marks(announced: str) -> bool:
    """Whether a puller that announced ``announced`` reads relayed marks in batches."""
    return "relay-marks" in announced_features(announced)


class ProtocolError(ValueError):
    """The peer broke the session protocol (out-of-order batch, wrong node)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a node is: id, incarnation (changes when its data is wiped), name, URL."""

    node: int
    incarnation: int
    name: str = ""
    url: str = ""
    region: str = ""


@dataclass
class PeerCursor:
    """How far this node has applied a peer's log, for one incarnation of that peer."""

    incarnation: int = 0
    cursor: int = 0


@dataclass
class PullSession:
    """The puller's side of one stream from one peer.

    The server speaks first (Welcome); the puller answers Hello with the
    cursor it holds for that peer's incarnation, and from then on accepts
    only batches that continue exactly at its cursor.
    """

    me: Identity
    peer: Identity | None = None
    cursor: int = 0
    """How far the peer's log is applied here (committed)."""
    head: int = 0
    echo: bool = False
    """Ask for our own changes too (after an unclean stop; see ``Hello.echo``)."""
    received: int = 0
    """Where the batches received so far end (at or ahead of :attr:`cursor`)."""
    saving: int = 0
    """The cursor the batches received so far save (see ``Batch.durable``)."""
    saved: int = 0
    """The cursor saved with the last committed batch: what to acknowledge."""
    regions: bool = True
    """The server reads region fields (its Welcome had one); False: it is of the
    previous version, and what we send it is encoded in that form
    (``encode(message, regions=False)``)."""

    def on_welcome(
        self, welcome: Welcome, remembered: PeerCursor, acked: int, purged: int
    ) -> Hello:
        """Take the server's identity; return our Hello with the cursor to resume from.

        ``acked``: how far the server has acknowledged *our* log; ``purged``: the
        seq of the newest tombstone collected here. A server that has not seen
        every collected tombstone is refused (ProtocolError): its data may
        still hold keys they deleted, so it must re-sync in full.
        """
        if acked < purged:
            raise ProtocolError(
                "peer has not seen tombstones collected here; "
                "it must re-sync in full (wipe its data directory)"
            )
        if welcome.node == self.me.node:
            raise ProtocolError("connected to itself")
        self.peer = Identity(welcome.node, welcome.incarnation, welcome.name, "", welcome.region)
        self.regions = welcome.regions
        same_incarnation = remembered.incarnation == welcome.incarnation
        # Another incarnation is another log: start it from zero.
        self.cursor = remembered.cursor if same_incarnation else 0
        self.received = self.saving = self.saved = self.cursor
        self.head = welcome.head
        return Hello(
            self.me.node,
            self.me.incarnation,
            self.me.name,
            self.me.url,
            self.cursor,
            welcome.incarnation,
            self.echo,
            self.me.region,
        )

    def accept(self, batch: Batch) -> PeerCursor:
        """Take ``batch`` for applying; return the cursor it continues from.

        Raises ProtocolError unless it continues exactly where the batches
        received so far end. Batches may be applied behind their receipt (a
        node applies one while decoding the next), so this position runs ahead
        of :attr:`cursor`; the returned cursor is the precondition of the
        batch's transaction: it may only commit where the one before it did.
        """
        if self.peer is None:
            raise ProtocolError("batch before welcome")
        if batch.after != self.received:
            raise ProtocolError(f"batch starts after {batch.after}, expected {self.received}")
        if batch.durable < self.saving:
            raise ProtocolError(f"batch saves cursor {batch.durable}, behind {self.saving}")
        after = PeerCursor(self.peer.incarnation, self.saving)
        self.received, self.saving = batch.upto, batch.durable
        return after

    def cursor_after(self, batch: Batch) -> PeerCursor:
        """The cursor to persist together with applying ``batch``."""
        assert self.peer is not None
        return PeerCursor(self.peer.incarnation, batch.durable)

    def advanced(self, batch: Batch) -> PeerCursor:
        """Record that ``batch`` was applied (call after its commit)."""
        assert self.peer is not None
        self.cursor, self.saved = batch.upto, batch.durable
        self.head = max(self.head, batch.upto)
        return PeerCursor(self.peer.incarnation, batch.durable)

    @property
    def lag(self) -> int:
        """Changes the peer had that we had not applied, as last heard."""
        return max(0, self.head - self.cursor)


def resume_point(hello: Hello, me: Identity, head: int) -> int:
    """Where the server resumes a puller: its cursor, or 0 for another incarnation."""
    if hello.server_incarnation != me.incarnation or hello.cursor > head:
        return 0
    return hello.cursor


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream is closed right after the puller's Hello: a close code and reason."""

    code: int
    reason: bytes


@dataclass
class ServeSession:
    """The server's side of one stream to one puller.

    The server speaks first (:meth:`welcome`), admits the puller's Hello
    (:meth:`on_hello`: where it resumes, or why it is refused), then sends
    batches of its log after the cursor (:meth:`next_batch`, :meth:`sent`),
    no more than the flow-control window beyond the puller's reported
    progress (:meth:`may_send`), and an empty batch as heartbeat when idle
    (:meth:`heartbeat`). What the puller says meanwhile goes to
    :meth:`on_message`. The session works per batch: rows are the log's.
    """

    me: Identity
    page_size: int = PAGE_SIZE
    peer: int = 0
    """The puller's node id (once admitted)."""
    cursor: int = 0
    """Where the batches sent so far end."""
    echo: bool = False
    """The puller asked for its own changes too (``Hello.echo``)."""
    deferral: Deferral = field(default_factory=Deferral)
    applied: int | None = None
    """The newest Progress (None: the puller reports none; no flow control)."""
    window: int = FIRST_IN_FLIGHT
    """Batches that may be in flight beyond :attr:`applied`."""
    in_flight: deque[int] = field(default_factory=deque)
    """Where each batch sent past the puller's progress ends."""
    marks_seen: dict[int, int] = field(default_factory=dict)
    """The deferral marks the window was last moved for."""
    regions: bool = True
    """The puller reads region fields: it announced them (:func:`reads_regions`)
    and its Hello had one. False: a puller of the previous version; everything
    sent to it is encoded in that form (``encode(message, regions=False)``)."""
    relay_marks: bool = False
    """The puller reads relayed marks (it announced ``relay-marks``): its batches carry them."""
    relayed_sent: dict[int, int] = field(default_factory=dict)
    """The relayed marks sent on this stream so far (only newer ones go again)."""

    def welcome(self, head: int) -> Welcome:
        """The first message of every stream: who this node is and how far its log goes."""
        return Welcome(self.me.node, self.me.incarnation, self.me.name, head, self.me.region)

    def on_hello(
        self, hello: Hello, head: int, must_resync: Callable[[int, int], bool], removed: bool
    ) -> int | Refusal:
        """Admit the puller of ``hello``: the cursor it resumes from, or why it is refused.

        ``must_resync(node, cursor)``: whether resuming there could resurrect
        keys whose tombstones this node collected (then it re-syncs in full);
        ``removed``: the puller was removed from the cluster.
        """
        if removed:
            return Refusal(REMOVED, b"removed from the cluster")
        cursor = resume_point(hello, self.me, head)
        if must_resync(hello.node, cursor):
            return Refusal(RESYNC_REQUIRED, b"resync required")
        self.peer, self.cursor, self.echo = hello.node, cursor, hello.echo
        self.regions = self.regions and hello.regions
        return cursor

    def on_message(self, message: Ack | Defer | Progress) -> int | None:
        """Take what the puller said; for an Ack, return the cursor it acknowledges."""
        if isinstance(message, Progress):
            self.applied = max(self.applied or 0, message.applied)
        elif isinstance(message, Ack):
            return message.cursor
        else:
            self.deferral.update(message.marks)
        return None

    def may_send(self) -> bool:
        """Whether the window lets another batch go now (it doubles as progress comes)."""
        applied = self.applied
        if applied is None:
            return True
        in_flight = self.in_flight
        if in_flight and in_flight[0] <= applied:
            self.window = min(IN_FLIGHT, 2 * self.window)
            while in_flight and in_flight[0] <= applied:
                in_flight.popleft()
        return len(in_flight) < self.window

    def next_batch(
        self,
        log: Log,
        head: int,
        wall_ms: int,
        mark_at: Callable[[int], int | None],
        max_bytes: int,
        held_at: Callable[[int], Mapping[int, int]] | None = None,
    ) -> Batch | None:
        """The next batch after :attr:`cursor`; None when there is nothing after it.

        ``head``: the log's head, read before the page (every change up to it
        is visible to the read); ``mark_at(upto)``: this node's origin mark of
        a batch ending at ``upto``; ``held_at(upto)``: the marks of other
        origins it holds there (``HeldMarks.at``: sent as ``Batch.relayed``
        to a puller that reads them). A page of nothing but gaps or left-out
        rows still moves the cursor (to ``head``). With :attr:`echo` the
        puller's own changes are sent too.
        """
        cursor, deferral = self.cursor, self.deferral
        if head <= cursor and deferral.marks == self.marks_seen:
            # Nothing committed past the cursor and no new marks to save further
            # by: the page would be empty (an idle stream asks every heartbeat).
            return None
        if deferral.marks != self.marks_seen:
            # Newer marks may cover deferred changes: the puller may save further.
            log.advance_window(deferral, cursor)
            self.marks_seen = dict(deferral.marks)
        if self.echo:
            page = log.changes_after(cursor, self.page_size, max_bytes)
            end = page[-1].seq if page else cursor
            changes = deferral.split(page)
        else:
            # The puller's own writes would be no-ops there: they stay in the log.
            changes, end = log.page_after(
                cursor, self.page_size, self.peer, head, deferral, max_bytes
            )
        if end <= cursor and head <= cursor:
            return None
        upto = end if end > cursor else head
        return Batch(
            cursor,
            upto,
            tuple(changes),
            wall_ms,
            deferral.durable(upto),
            mark_at(upto),
            self._relayed(held_at, upto),
        )

    def _relayed(
        self, held_at: Callable[[int], Mapping[int, int]] | None, upto: int
    ) -> tuple[tuple[int, int], ...] | None:
        """The held marks at ``upto`` that moved since last sent (None: the puller reads none)."""
        if not self.relay_marks:
            return None
        if held_at is None:
            return ()
        sent = self.relayed_sent
        return tuple(
            sorted(
                (origin, mark)
                for origin, mark in held_at(upto).items()
                # The puller's own writes: it holds them (or, after an unclean
                # stop, asks for them again); a claim would hide them.
                if origin != self.peer and mark > sent.get(origin, -1)
            )
        )

    def sent(self, batch: Batch) -> None:
        """Record that ``batch`` (from :meth:`next_batch`) went out."""
        self.cursor = batch.upto
        self.in_flight.append(batch.upto)
        if batch.relayed:
            self.relayed_sent.update(batch.relayed)

    def heartbeat(
        self,
        wall_ms: int,
        mark: int | None,
        held_at: Callable[[int], Mapping[int, int]] | None = None,
    ) -> Batch:
        """An empty batch at the cursor: tells the puller the stream is alive, and the marks."""
        cursor = self.cursor
        relayed = self._relayed(held_at, cursor)
        if relayed:
            self.relayed_sent.update(relayed)
        return Batch(cursor, cursor, (), wall_ms, self.deferral.durable(cursor), mark, relayed)


def stamp_too_far_ahead(hlc: int, local_wall_ms: int, max_offset_ms: int) -> bool:
    """Whether a stamp is further ahead of our clock than we accept (or follow) yet."""
    return (hlc >> COUNTER_BITS) > local_wall_ms + max_offset_ms


def is_too_far_ahead(change: Change, local_wall_ms: int, max_offset_ms: int) -> bool:
    """Whether ``change`` is stamped further ahead of our clock than we accept yet."""
    return stamp_too_far_ahead(change.hlc, local_wall_ms, max_offset_ms)


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    """What to do with a batch: changes that win locally, and those held back."""

    apply: list[Change]
    hold: list[Change]


def plan_apply(
    batch: Batch,
    current: Callable[[str, bytes], Change | None],
    local_wall_ms: int,
    max_offset_ms: int,
) -> ApplyPlan:
    """Decide, change by change, what a batch does to local state.

    A change stamped too far in the future is held, neither applied nor
    dropped, until the local clock catches up. Of the rest, those that beat the
    local state under last-writer-wins are applied; the others are no-ops
    (duplicates, echoes of our own writes, older states).
    """
    hold = []
    newest: dict[tuple[str, bytes], Change] = {}
    for change in batch.changes:
        if is_too_far_ahead(change, local_wall_ms, max_offset_ms):
            hold.append(change)
            continue
        slot = (change.ns, change.key)
        existing = newest.get(slot) or current(*slot)
        if wins(change, existing):
            newest[slot] = change
    apply = list(newest.values())
    return ApplyPlan(apply, hold)
