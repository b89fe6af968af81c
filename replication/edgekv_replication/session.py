"""Pull-session logic, free of I/O: what to say, what to apply, where the cursor goes.

A node pulls from each peer "changes with seq > cursor". The puller opens with
:class:`~edgekv_replication.envelope.Hello` naming its cursor and the peer
incarnation that cursor belongs to; the server answers
:class:`~edgekv_replication.envelope.Welcome` with the cursor it will resume
from (0 when its incarnation changed: a wiped or replaced peer is re-synced
from zero) and then streams batches. The puller applies a batch and advances
its cursor in one transaction, so a crash never skips a change.

These classes hold no sockets and no database: a node drives them over
WebSockets and SQLite, the simulated network in the tests over lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgekv_replication.changes import Change, wins
from edgekv_replication.envelope import Batch, Hello, Welcome
from edgekv_replication.hlc import COUNTER_BITS


class ProtocolError(ValueError):
    """The peer broke the session protocol (out-of-order batch, wrong node)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a node is: id, incarnation (changes when its data is wiped), name, URL."""

    node: int
    incarnation: int
    name: str = ""
    url: str = ""


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

    def on_welcome(self, welcome: Welcome, remembered: PeerCursor) -> Hello:
        """Take the server's identity; return our Hello with the cursor to resume from."""
        if welcome.node == self.me.node:
            raise ProtocolError("connected to itself")
        self.peer = Identity(welcome.node, welcome.incarnation, welcome.name)
        same_incarnation = remembered.incarnation == welcome.incarnation
        # Another incarnation is another log: start it from zero.
        self.cursor = remembered.cursor if same_incarnation else 0
        self.received = self.cursor
        self.head = welcome.head
        return Hello(
            self.me.node,
            self.me.incarnation,
            self.me.name,
            self.me.url,
            self.cursor,
            welcome.incarnation,
            self.echo,
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
        self.received = batch.upto
        return PeerCursor(self.peer.incarnation, batch.after)

    def cursor_after(self, batch: Batch) -> PeerCursor:
        """The cursor to persist together with applying ``batch``."""
        assert self.peer is not None
        return PeerCursor(self.peer.incarnation, batch.upto)

    def advanced(self, batch: Batch) -> PeerCursor:
        """Record that ``batch`` was applied (call after its commit)."""
        assert self.peer is not None
        self.cursor = batch.upto
        self.head = max(self.head, batch.upto)
        return PeerCursor(self.peer.incarnation, batch.upto)

    @property
    def lag(self) -> int:
        """Changes the peer had that we had not applied, as last heard."""
        return max(0, self.head - self.cursor)


def resume_point(hello: Hello, me: Identity, head: int) -> int:
    """Where the server resumes a puller: its cursor, or 0 for another incarnation."""
    if hello.server_incarnation != me.incarnation or hello.cursor > head:
        return 0
    return hello.cursor


def make_batch(
    changes: Sequence[Change],
    after: int,
    head: int,
    wall_ms: int,
    leave_out_node: int | None = None,
) -> Batch:
    """A batch of one page of ``changes`` (seq order, all > ``after``).

    An empty page means caught up: the batch moves the cursor to ``head``.
    Changes written by ``leave_out_node`` (the puller itself, which has them)
    are left out, but the batch still covers the whole page.
    """
    upto = changes[-1].seq if changes else max(after, head)
    if leave_out_node is not None:
        changes = [change for change in changes if change.node != leave_out_node]
    return Batch(after, upto, tuple(changes), wall_ms)


def is_too_far_ahead(change: Change, local_wall_ms: int, max_offset_ms: int) -> bool:
    """Whether ``change`` is stamped further ahead of our clock than we accept yet."""
    return (change.hlc >> COUNTER_BITS) > local_wall_ms + max_offset_ms


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
