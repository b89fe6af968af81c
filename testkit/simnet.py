"""An in-memory simulated network of replicas, driven by the real sans-IO replication core.

Why this exists: the properties that matter in replication -- every replica
ends in the same state, nothing is lost or resurrected -- only break under
rare schedules (a batch lost just before a partition, a duplicate arriving
after a reconnect, a change stamped ahead of a skewed clock). Real nodes make
those schedules slow and impossible to reproduce. Here a replica is a few
dicts, a link is two lists of bytes and time is an integer, so a hypothesis
state machine can explore thousands of schedules a second, deterministically.

Only storage and transport are simulated. Everything the protocol decides is
the core's own code, the functions a node calls:

* stamps come from :class:`~edgekv_replication.hlc.HybridLogicalClock` (its
  wall clock is the network's time plus a per-replica skew);
* every message is :func:`~edgekv_replication.envelope.encode`-d on send and
  :func:`~edgekv_replication.envelope.decode`-d on receipt;
* the puller runs :class:`~edgekv_replication.session.PullSession` and
  :func:`~edgekv_replication.session.plan_apply`; the server runs
  :class:`~edgekv_replication.session.ServeSession` (admission, the next
  batch, deferrals, heartbeats), as ``edgekv.peers.stream_server`` does;
* relays run :class:`~edgekv_replication.relays.OriginMarks` and
  :class:`~edgekv_replication.relays.RelayDeferrals`.

A :class:`Replica` is a dictionary :class:`~edgekv_replication.log.Log`: its
pages and deferral windows are answered by the rules of
:mod:`edgekv_replication.log` and :class:`~edgekv_replication.relays.Deferral`,
which a node's SQLite log answers in SQL (``tests/test_log_twins.py`` holds
the SQL to those rules). What stays here is storage -- a write moves its key
to the next local seq; an applied remote change takes a new local seq too (so
it relays) and moves the clock past its stamp; a change that loses
last-writer-wins (:func:`~edgekv_replication.changes.wins`, the rule of the
node's upsert) is a no-op and takes no seq; held changes wait for the clock --
and the network: links, partitions, and message loss, duplication,
re-ordering and corruption. A payload that does not decode or a batch that
does not continue at the cursor tears the stream down, and the pull loop
re-opens it from the persisted cursor.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from edgekv_replication import counters, orsets
from edgekv_replication.changes import Change, is_live, wins
from edgekv_replication.envelope import (
    Ack,
    Batch,
    Defer,
    EnvelopeError,
    Hello,
    Members,
    Progress,
    Welcome,
    decode,
    encode,
)
from edgekv_replication.hlc import COUNTER_BITS, HybridLogicalClock
from edgekv_replication.log import PAGE_BYTES, changes_page, page_leaving_out
from edgekv_replication.relays import Deferral, OriginMarks, RelayDeferrals
from edgekv_replication.session import (
    Identity,
    PeerCursor,
    ProtocolError,
    PullSession,
    Refusal,
    ServeSession,
    is_too_far_ahead,
    plan_apply,
)
from edgekv_replication.topology import relays_through

Slot = tuple[str, bytes]
Link = tuple[str, str]
"""``(server, puller)``: the puller pulls the server's log over this link."""

DOWN, UP = "down", "up"
"""Directions on a stream: server to puller, puller to server."""

START_MS = 1_700_000_000_000


class SimInvariantError(AssertionError):
    """The simulation saw something the core promises never happens."""


def dominates(have: Change | None, other: Change) -> bool:
    """Whether state ``have`` is ``other`` or a later write of the same key."""
    return have is not None and (have.state() == other.state() or wins(have, other))


@dataclass(frozen=True)
class Snapshot:
    """A replica's durable state at one commit."""

    state: dict[Slot, Change]
    log: dict[int, Slot]
    seq: int
    held: list[Change]
    cursors: dict[int, PeerCursor]
    hlc: int


class Replica:
    """One node: HLC, entries keyed by ``(ns, key)``, the local log, held changes, cursors."""

    def __init__(
        self,
        network: Network,
        name: str,
        node: int,
        incarnation: int,
        max_offset_ms: int,
    ) -> None:
        """Create an empty replica whose wall clock is the network's time plus its skew."""
        self.network = network
        self.name = name
        self.max_offset_ms = max_offset_ms
        self.skew_ms = 0
        self._reset(node, incarnation)

    def _reset(self, node: int, incarnation: int) -> None:
        self.node = node
        self.incarnation = incarnation
        self.clock = HybridLogicalClock(0, self.wall_ms)
        self.state: dict[Slot, Change] = {}
        self.log: dict[int, Slot] = {}
        """Local seq -> key; insertion order is seq order (an overwrite re-inserts at the end)."""
        self.seq = 0
        self.held: list[Change] = []
        self.cursors: dict[int, PeerCursor] = {}
        """Persisted: how far each peer node's log (of one incarnation) is applied here."""
        self.recovered = False
        """Reopened after losing its last commits: asks peers for echoes of its own writes."""
        self.members: dict[int, tuple[int, str, str, bool, int, str]] = {}
        self.marks = OriginMarks(self.clock, 0, valid=True)
        """Checkpoints of this replica's own writes (the marks its streams send)."""
        self.relays = RelayDeferrals()
        """Which origins this replica pulls directly and asks other servers to defer."""

    def snapshot(self) -> Snapshot:
        """The durable state as of now (what a later power loss may revert to)."""
        return Snapshot(
            dict(self.state),
            dict(self.log),
            self.seq,
            list(self.held),
            {node: PeerCursor(c.incarnation, c.cursor) for node, c in self.cursors.items()},
            self.clock.last,
        )

    def revert(self, snapshot: Snapshot) -> None:
        """Go back to ``snapshot`` after an unclean stop, as a node's store reopens.

        Same node id, but a new incarnation (its log may reuse lost seqs, so peers
        must re-sync it from zero) and a clock moved past every stamp it could
        have issued before the loss (see ``edgekv.store.store``).
        """
        self.state, self.log, self.seq = dict(snapshot.state), dict(snapshot.log), snapshot.seq
        self.held = list(snapshot.held)
        self.cursors = {n: PeerCursor(c.incarnation, c.cursor) for n, c in snapshot.cursors.items()}
        self.incarnation = self.network._new_id()
        self.recovered = True  # as a node's store after an unclean stop: asks for echoes
        jumped = (self.wall_ms() + self.max_offset_ms + 1) << COUNTER_BITS
        self.clock = HybridLogicalClock(max(snapshot.hlc, jumped), self.wall_ms)
        # As a node after an unclean stop: it claims no marks; what it was asked is gone.
        self.marks = OriginMarks(self.clock, self.seq, valid=False)
        self.relays = RelayDeferrals()

    # -- identity and clock ------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """Who this replica says it is on a stream."""
        return Identity(self.node, self.incarnation, self.name, f"sim://{self.name}")

    def wall_ms(self) -> int:
        """This replica's wall clock: the network's time shifted by its skew."""
        return self.network.now_ms + self.skew_ms

    # -- storage ---------------------------------------------------------------

    def current(self, ns: str, key: bytes) -> Change | None:
        """The stored state of ``(ns, key)``, tombstones included."""
        return self.state.get((ns, key))

    def accepts(self, incoming: Change, current: Change | None) -> bool:
        """The merge rule for remote changes (the store's LWW upsert); tests may break it."""
        return wins(incoming, current)

    def _store(self, change: Change) -> Change:
        slot = (change.ns, change.key)
        old = self.state.get(slot)
        if old is not None:
            del self.log[old.seq]
        self.seq += 1
        stored = change._replace(seq=self.seq)
        self.state[slot] = stored
        self.log[self.seq] = slot
        self.marks.committed(self.seq)
        return stored

    def put(
        self,
        ns: str,
        key: bytes,
        value: bytes | None,
        metadata: str | None = None,
        expiration: int | None = None,
        stamp: int | None = None,
    ) -> Change:
        """A local write (``value=None``: a delete) with a fresh stamp (or ``stamp``, one
        taken from the clock for it); returns the stored state."""
        hlc = self.clock.now() if stamp is None else stamp
        change = Change(ns, key, value, metadata, expiration, hlc, self.node)
        if not wins(change, self.current(ns, key)):
            # The store would silently keep the old row: the write would be lost.
            raise SimInvariantError(f"{self.name}: a fresh local stamp lost to the stored one")
        return self._store(change)

    def delete(self, ns: str, key: bytes) -> Change:
        """A local delete: a tombstone with its own stamp."""
        return self.put(ns, key, None)

    def merge_remote(self, change: Change) -> bool:
        """Merge one remote state; it takes a new seq (and moves the clock) only if it wins."""
        if not self.accepts(change, self.current(change.ns, change.key)):
            return False
        self._store(change._replace(seq=0))
        self.clock.observe(change.hlc)
        return True

    # -- counters and sets: this replica's rows, planned as a node plans them -------

    def counter_rows(self, ns: str, key: bytes) -> list[counters.Contribution]:
        """The rows of counter ``key`` this replica holds (edgekv.store.crdts reads the same)."""
        low, high = counters.rows_range(key)
        return [
            counters.Contribution(
                counters.split_row_key(c.key)[1], counters.decode_row(c.value), c.hlc, c.expiration
            )
            for (row_ns, row_key), c in sorted(self.state.items())
            if row_ns == counters.counter_ns(ns) and low <= row_key < high and c.value is not None
        ]

    def counter_add(self, ns: str, key: bytes, amount: int) -> Change:
        """Add to a counter: this replica's row, rewritten with a fresh stamp."""
        rows = self.counter_rows(ns, key)
        row, expiration, _ = counters.plan_add(
            rows, self.node, amount, self.clock.now(), self.network.now_ms / 1000
        )
        return self.put(
            counters.counter_ns(ns), counters.row_key(key, self.node), counters.encode_row(row),
            None, expiration,
        )  # fmt: skip

    def counter_reset(self, ns: str, key: bytes) -> Change | None:
        """Reset a counter (observed-remove); None when it holds no row of it."""
        rows = self.counter_rows(ns, key)
        if not rows:
            return None
        row = counters.plan_reset(rows, self.node, self.clock.now())
        own = next((c for c in rows if c.node == self.node), None)
        return self.put(
            counters.counter_ns(ns), counters.row_key(key, self.node), counters.encode_row(row),
            None, own.expiration if own else None,
        )  # fmt: skip

    def counter_value(self, ns: str, key: bytes) -> int:
        """The counter's value as a read here answers it."""
        return counters.value_of(self.counter_rows(ns, key), self.network.now_ms / 1000)

    def member_rows(self, ns: str, key: bytes, member: str | None = None) -> list[orsets.MemberRow]:
        """The rows of set ``key`` (of one member) this replica holds, in key order."""
        low, high = orsets.rows_range(key)
        rows = []
        for (row_ns, row_key), c in sorted(self.state.items()):
            if row_ns == orsets.set_ns(ns) and low <= row_key < high and c.value is not None:
                _, found, node = orsets.split_row_key(row_key)
                if member is None or found == member:
                    rows.append(orsets.MemberRow(found, node, orsets.decode_row(c.value), c.hlc))
        return rows

    def set_add(self, ns: str, key: bytes, member: str) -> Change:
        """Add a member: this replica's row of it, with the add's stamp."""
        stamp = self.clock.now()  # the add's stamp is its row's, as the node writes it
        row = orsets.plan_add(self.member_rows(ns, key, member), self.node, stamp)
        return self.put(
            orsets.set_ns(ns), orsets.row_key(key, member, self.node), orsets.encode_row(row),
            stamp=stamp,
        )  # fmt: skip

    def set_remove(self, ns: str, key: bytes, member: str) -> Change | None:
        """Remove a member (the adds this replica has seen); None if it is not present."""
        row = orsets.plan_remove(self.member_rows(ns, key, member), self.node)
        if row is None:
            return None
        return self.put(
            orsets.set_ns(ns), orsets.row_key(key, member, self.node), orsets.encode_row(row)
        )

    def retire_set_rows(self, ns: str, key: bytes) -> list[Change]:
        """Retire what this replica's set rows no longer need (:func:`orsets.retired`).

        Settled -- every member has acknowledged it, the tombstones' rule -- is
        answered by looking at every replica: each holds the row's state or a newer one.
        """
        low, high = orsets.rows_range(key)
        groups: dict[str, list[orsets.MemberRow]] = {}
        for (row_ns, row_key), c in sorted(self.state.items()):
            if row_ns == orsets.set_ns(ns) and low <= row_key < high:
                _, member, node = orsets.split_row_key(row_key)
                row = orsets.decode_row(c.value) if c.value is not None else orsets.Row()
                groups.setdefault(member, []).append(orsets.MemberRow(member, node, row, c.hlc))

        def settled(row: orsets.MemberRow) -> bool:
            slot = (orsets.set_ns(ns), orsets.row_key(key, row.member, row.node))
            held = [r.state.get(slot) for r in self.network.replicas.values()]
            return all(c is not None and c.hlc >= row.hlc for c in held)

        written = []
        for member, rows in groups.items():
            new = orsets.retired(rows, self.node, settled)
            if new is not None:
                value = None if new is orsets.RETIRE else orsets.encode_row(new)
                written.append(
                    self.put(orsets.set_ns(ns), orsets.row_key(key, member, self.node), value)
                )
        return written

    def retire_counter_rows(self, ns: str, key: bytes) -> Change | None:
        """Drop this replica's spent counter resets (:func:`counters.retired`), settled as
        :meth:`retire_set_rows` says."""
        rows = self.counter_rows(ns, key)
        own = next((c for c in rows if c.node == self.node), None)
        if own is None:
            return None

        def settled(row: counters.Contribution) -> bool:
            slot = (counters.counter_ns(ns), counters.row_key(key, row.node))
            held = [r.state.get(slot) for r in self.network.replicas.values()]
            return all(c is not None and c.hlc >= row.hlc for c in held)

        stamp = self.clock.now()
        new = counters.retired(rows, self.node, stamp, settled)
        if new is None:
            return None
        return self.put(
            counters.counter_ns(ns), counters.row_key(key, self.node), counters.encode_row(new),
            None, own.expiration, stamp=stamp,
        )  # fmt: skip

    def set_members(self, ns: str, key: bytes) -> list[str]:
        """The set's members as a read here answers them."""
        return list(orsets.members_of(self.member_rows(ns, key)))

    # -- the Log a stream's server pages (the node's is SQLite) --------------------

    def _entries(self, cursor: int) -> Iterator[Change]:
        """The log's changes with seq > ``cursor``, in seq order."""
        return (self.state[slot] for seq, slot in self.log.items() if seq > cursor)

    def stretch(self, after: int, upto: int) -> Iterator[Change]:
        """The log's changes with ``after`` < seq <= ``upto``, in seq order."""
        return itertools.takewhile(lambda change: change.seq <= upto, self._entries(after))

    def changes_after(self, cursor: int, limit: int, max_bytes: int = PAGE_BYTES) -> list[Change]:
        """Up to ``limit`` states of the local log with seq > ``cursor``, in seq order."""
        return changes_page(self._entries, cursor, limit, max_bytes)

    def page_after(
        self,
        cursor: int,
        limit: int,
        leave_out: int,
        head: int,
        deferral: Deferral | None = None,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[list[Change], int]:
        """A stream's page, by the rule the node's SQL answers by."""
        return page_leaving_out(self._entries, cursor, limit, leave_out, head, deferral, max_bytes)

    def advance_window(self, deferral: Deferral, upto: int) -> None:
        """Move ``deferral``'s window on, by :meth:`Deferral.advance` over this log."""
        window = deferral.window
        if window is not None:
            deferral.advance(self.stretch(window - 1, upto))

    def apply_batch(self, batch: Batch, session: PullSession) -> tuple[int, int]:
        """Apply a checked batch and persist the cursor, "in one transaction"."""
        plan = plan_apply(batch, self.current, self.wall_ms(), self.max_offset_ms)
        applied = sum(self.merge_remote(change) for change in plan.apply)
        self.held.extend(change._replace(seq=0) for change in plan.hold)
        assert session.peer is not None
        self.cursors[session.peer.node] = session.cursor_after(batch)
        session.advanced(batch)
        return applied, len(plan.hold)

    def release_held(self) -> int:
        """Merge the held changes the clock has caught up with; return how many left the hold."""
        wall = self.wall_ms()
        ready = [c for c in self.held if not is_too_far_ahead(c, wall, self.max_offset_ms)]
        self.held = [c for c in self.held if is_too_far_ahead(c, wall, self.max_offset_ms)]
        for change in ready:
            self.merge_remote(change)
        return len(ready)

    # -- what a reader sees ------------------------------------------------------

    def full_state(self) -> dict[Slot, tuple[object, ...]]:
        """Every stored state, tombstones included, without the local seq."""
        return {slot: change.state() for slot, change in self.state.items()}

    def live_view(self, now_seconds: float) -> dict[Slot, tuple[object, ...]]:
        """What reads return at ``now_seconds``: value, metadata and expiration of live keys."""
        return {
            slot: (c.value, c.metadata, c.expiration)
            for slot, c in self.state.items()
            if is_live(c, now_seconds)
        }


@dataclass
class Stream:
    """One pull stream over a link: the puller's session, the server's cursor, two queues."""

    server: Replica
    puller: Replica
    session: PullSession
    serving: ServeSession
    """The server's side of the stream."""
    down: list[bytes] = field(default_factory=list)
    up: list[bytes] = field(default_factory=list)
    admitted: bool = False
    """The server has read and admitted the puller's Hello."""
    deferred: dict[int, int] = field(default_factory=dict)
    """The puller's side: what it last asked the server to defer."""

    @property
    def established(self) -> bool:
        """Both handshake messages got through."""
        return self.admitted and self.session.peer is not None

    def queue(self, direction: str) -> list[bytes]:
        """The message queue of one direction."""
        return self.down if direction == DOWN else self.up


class _TornDown(Exception):
    """Internal: the stream broke (the node logs it and the pull loop reconnects)."""


class _Restart(_TornDown):
    """Internal: the puller ends the stream to open it again (it defers too much)."""


class Network:
    """Replicas, the directed links between them, and the streams open on those links.

    Nothing happens unless asked: the caller (a test, or the hypothesis state
    machine) decides which message is delivered, dropped, duplicated or taken
    out of order, when servers send, when clocks move and when links break.
    :meth:`settle` runs a fault-free network to quiescence.
    """

    def __init__(
        self,
        names: Iterable[str],
        links: Iterable[Link] | None = None,
        *,
        max_offset_ms: int = 500,
        page_size: int = 3,
        seed: int = 0,
    ) -> None:
        """Create replicas ``names``; by default every replica pulls from every other."""
        self.now_ms = START_MS
        self.page_size = page_size
        self._rng = random.Random(seed)
        self.replicas: dict[str, Replica] = {}
        for name in names:
            self.replicas[name] = Replica(self, name, self._new_id(), self._new_id(), max_offset_ms)
        if links is None:
            links = itertools.permutations(self.replicas, 2)
        self.links: set[Link] = set(links)
        self.blocked: set[Link] = set()
        self.streams: dict[Link, Stream] = {}
        self.stats: Counter[str] = Counter()
        self.relays_designated = False
        """:meth:`designate_relays` was called (and is again when node ids change)."""
        self.hellos: list[tuple[Link, Hello]] = []
        """Every Hello a server read, in order (tests look at cursors and incarnations)."""

    def _new_id(self) -> int:
        return self._rng.randrange(1, 1 << 63)

    def __getitem__(self, name: str) -> Replica:
        """The replica called ``name``."""
        return self.replicas[name]

    # -- links and streams -------------------------------------------------------

    def connect(self) -> int:
        """Open a stream on every link that is up and has none (the pull loops' retry)."""
        opened = 0
        for server_name, puller_name in self.links & self.blocked:
            # A connection attempt that fails: the server is not pulled directly.
            self.replicas[puller_name].relays.stream_ended(self.replicas[server_name].node)
        for link in sorted(self.links - self.blocked - set(self.streams)):
            server, puller = self.replicas[link[0]], self.replicas[link[1]]
            session = PullSession(puller.identity, echo=puller.recovered)
            serving = ServeSession(server.identity, page_size=self.page_size, relay_marks=True)
            stream = Stream(server, puller, session, serving)
            self.streams[link] = stream
            stream.down.append(encode(serving.welcome(server.seq)))
            self.stats["opened"] += 1
            opened += 1
        return opened

    def designate_relays(self) -> None:
        """Each replica takes an origin it does not pull directly through one server only.

        The ring is every replica by node id (:func:`~edgekv_replication.
        topology.relays_through`); the direct servers are the links. Call again
        when node ids change (a wipe), as a node does when members change.
        """
        self.relays_designated = True
        ring = sorted(r.node for r in self.replicas.values())
        for replica in self.replicas.values():
            direct = {self.replicas[s].node for s, p in self.links if p == replica.name}
            replica.relays.designate(relays_through(replica.node, ring, direct))

    def teardown(self, link: Link, reason: str) -> None:
        """Close the stream on ``link``; whatever was in flight on it is lost."""
        stream = self.streams.pop(link, None)
        if stream is not None:
            failed = reason != _Restart.__name__
            stream.puller.relays.stream_ended(stream.server.node, failed)
            self.stats["torn_down"] += 1
            self.stats[f"torn_down:{reason}"] += 1

    def partition(self, a: str, b: str) -> None:
        """Cut both directions between ``a`` and ``b`` (open streams break)."""
        for link in ((a, b), (b, a)):
            self.blocked.add(link)
            self.teardown(link, "partition")

    def heal(self, a: str, b: str) -> None:
        """Restore both directions between ``a`` and ``b`` (streams re-open on connect)."""
        self.blocked -= {(a, b), (b, a)}

    def heal_all(self) -> None:
        """Remove every partition."""
        self.blocked.clear()

    # -- message faults ----------------------------------------------------------

    def pending(self) -> list[tuple[Link, str, int]]:
        """Every message in flight, as ``(link, direction, index in its queue)``."""
        return [
            (link, direction, index)
            for link, stream in sorted(self.streams.items())
            for direction in (DOWN, UP)
            for index in range(len(stream.queue(direction)))
        ]

    def deliver(self, link: Link, direction: str, index: int = 0) -> None:
        """Deliver one message; ``index > 0`` overtakes the messages before it."""
        stream = self.streams[link]
        data = stream.queue(direction).pop(index)
        self.stats["delivered"] += 1
        try:
            if direction == DOWN:
                self._puller_receives(stream, data)
            else:
                self._server_receives(stream, data)
        except (EnvelopeError, ProtocolError, _TornDown) as exc:
            self.stats["rejected"] += 1
            self.teardown(link, type(exc).__name__)

    def drop(self, link: Link, direction: str, index: int = 0) -> None:
        """Lose one message in flight."""
        del self.streams[link].queue(direction)[index]
        self.stats["dropped"] += 1

    def duplicate(self, link: Link, direction: str, index: int = 0) -> None:
        """Send one message in flight again (the copy goes to the back of the queue)."""
        queue = self.streams[link].queue(direction)
        queue.append(queue[index])
        self.stats["duplicated"] += 1

    def corrupt(self, link: Link, direction: str, index: int = 0) -> None:
        """Truncate one message in flight (it must be rejected whole)."""
        queue = self.streams[link].queue(direction)
        queue[index] = queue[index][: len(queue[index]) // 2]
        self.stats["corrupted"] += 1

    # -- the protocol ------------------------------------------------------------

    def _puller_receives(self, stream: Stream, data: bytes) -> None:
        message = decode(data)
        puller, session = stream.puller, stream.session
        if session.peer is None:
            if not isinstance(message, Welcome):
                raise ProtocolError("expected Welcome")
            remembered = puller.cursors.get(message.node, PeerCursor())
            # No tombstone collection here (see below): nothing for a peer to have missed.
            hello = session.on_welcome(message, remembered, acked=0, purged=0)
            puller.relays.stream_started(message.node)
            stream.up.append(encode(hello))
        elif isinstance(message, Members):
            for member in message.members:
                puller.members[member[0]] = member
        elif isinstance(message, Batch):
            session.accept(message)
            if message.mark is not None:
                puller.relays.pulling(session.peer.node)
            if message.relayed is not None:
                puller.relays.relaying(session.peer.node, (o for o, _ in message.relayed))
            applied, held = puller.apply_batch(message, session)
            self.stats["changes_received"] += len(message.changes)
            self.stats["applied"] += applied
            self.stats["held"] += held
            server = session.peer.node
            puller.relays.holding = bool(puller.held)
            puller.relays.committed(server, message.mark, message.relayed or (), puller.seq)
            if puller.relays.must_restart(server):
                raise _Restart("defers an origin no longer pulled directly")
            wanted = puller.relays.wanted(server)
            if wanted != stream.deferred:
                stream.up.append(encode(Defer(tuple(wanted.items()))))
                puller.relays.asked(server, set(wanted))
                stream.deferred = wanted
                self.stats["defer_sent"] += 1
        else:
            raise ProtocolError(f"unexpected {type(message).__name__}")

    def _server_receives(self, stream: Stream, data: bytes) -> None:
        message = decode(data)
        serving = stream.serving
        if stream.admitted:
            if isinstance(message, (Ack, Defer, Progress)):
                serving.on_message(message)
            return  # anything else after the Hello is drained
        if not isinstance(message, Hello):
            raise EnvelopeError("expected Hello")
        server = stream.server
        self.hellos.append(((server.name, stream.puller.name), message))
        # No tombstone collection here: nobody must re-sync; nobody is removed.
        admitted = serving.on_hello(message, server.seq, lambda node, cursor: False, False)
        if isinstance(admitted, Refusal):
            raise _TornDown(admitted.reason.decode())
        stream.admitted = True
        members = tuple(
            (r.node, f"sim://{r.name}", r.name, False, self.now_ms, "")
            for r in self.replicas.values()
        )
        stream.down.append(encode(Members(members)))
        self._pump(stream)

    def _pump(self, stream: Stream, heartbeat: bool = False) -> int:
        """Send the server's batches after its stream cursor (or a heartbeat when caught up)."""
        if not stream.admitted:
            return 0
        server, serving, sent = stream.server, stream.serving, 0
        if server.relays.withdrawn(serving.relayed_sent):
            # It passed on marks of an origin it no longer vouches for: the
            # puller must stop deferring that origin elsewhere (see RelayDeferrals).
            self.teardown((server.name, stream.puller.name), "withdrawn")
            return 0
        while serving.may_send():
            held = server.relays.relayed_at
            batch = serving.next_batch(
                server, server.seq, server.wall_ms(), server.marks.at, PAGE_BYTES, held
            )
            if batch is None:
                break
            stretch = server.stretch(batch.after, batch.upto)
            self.stats["deferred_left_out"] += sum(map(serving.deferral.defers, stretch))
            stream.down.append(encode(batch))
            serving.sent(batch)
            sent += 1
        if heartbeat and not sent:
            mark = server.marks.at(serving.cursor)
            beat = serving.heartbeat(server.wall_ms(), mark, server.relays.relayed_at)
            stream.down.append(encode(beat))
            sent += 1
        return sent

    def pump(self) -> int:
        """Every server sends what it has committed since it last sent; return batch count."""
        return sum(self._pump(stream) for _, stream in sorted(self.streams.items()))

    def heartbeat(self) -> int:
        """Every established stream sends (an empty batch when idle): exposes lost batches."""
        return sum(self._pump(s, heartbeat=True) for _, s in sorted(self.streams.items()))

    def expire_stalled(self) -> int:
        """Time out streams whose handshake was lost (nothing in flight, never established)."""
        stalled = [
            link
            for link, s in sorted(self.streams.items())
            if not s.established and not s.down and not s.up
        ]
        for link in stalled:
            self.teardown(link, "timeout")
        return len(stalled)

    # -- clocks ----------------------------------------------------------------

    def release_held(self) -> int:
        """Every replica applies the held changes its clock has caught up with."""
        return sum(r.release_held() for r in self.replicas.values())

    def advance(self, ms: int) -> None:
        """Let time pass on every wall clock; held changes are released, as in a node."""
        self.now_ms += ms
        self.release_held()

    def set_skew(self, name: str, skew_ms: int) -> None:
        """Set how far ``name``'s wall clock is off (it may step backwards)."""
        self.replicas[name].skew_ms = skew_ms

    def catch_up_clocks(self) -> None:
        """Move time so every wall clock has passed every stamp anywhere (nothing stays held)."""
        stamps = [
            c.hlc >> COUNTER_BITS
            for r in self.replicas.values()
            for c in itertools.chain(r.state.values(), r.held)
        ]
        if stamps:
            newest = max(stamps)
            self.now_ms = max([self.now_ms, *(newest - r.skew_ms for r in self.replicas.values())])
        self.release_held()

    # -- lifecycle -------------------------------------------------------------

    def wipe(self, name: str, keep_node_id: bool = False) -> Replica:
        """Replace ``name``'s data with an empty database: new incarnation (and node id)."""
        replica = self.replicas[name]
        for link in [link for link in self.streams if name in link]:
            self.teardown(link, "wipe")
        node = replica.node if keep_node_id else self._new_id()
        replica._reset(node, self._new_id())
        self.stats["wiped"] += 1
        if self.relays_designated:
            self.designate_relays()  # its new id moves it on the ring
        return replica

    def lose_tail(self, name: str, snapshot: Snapshot) -> Replica:
        """Power loss under ``synchronous=normal``: the last commits are gone, identity stays."""
        replica = self.replicas[name]
        for link in [link for link in self.streams if name in link]:
            self.teardown(link, "crash")
        replica.revert(snapshot)
        self.stats["crashed"] += 1
        if self.relays_designated:
            self.designate_relays()
        return replica

    # -- running ---------------------------------------------------------------

    def deliver_all(self) -> int:
        """Deliver everything in flight, in order, until the queues are empty."""
        delivered = 0
        while True:
            pending = self.pending()
            if not pending:
                return delivered
            link, direction, _ = pending[0]
            self.deliver(link, direction)
            delivered += 1

    def settle(self, max_rounds: int = 10_000) -> None:
        """Run without faults until nothing more can happen on the links that are up.

        Lost messages are noticed the way a node notices them: a heartbeat
        that does not continue at the puller's cursor breaks the stream, and a
        handshake that never completes times out; both reconnect.
        """
        for _ in range(max_rounds):
            self.connect()
            self.pump()
            if self.deliver_all() or self.release_held() or self.expire_stalled():
                continue
            torn = self.stats["torn_down"]
            self.heartbeat()
            self.deliver_all()
            if self.stats["torn_down"] == torn:
                return
        raise SimInvariantError(f"the network did not settle in {max_rounds} rounds")


# -- checks ------------------------------------------------------------------------


def check_log(replica: Replica) -> None:
    """The log and the entries agree: one seq per key, in order, none beyond the head."""
    seqs = list(replica.log)
    if seqs != sorted(seqs) or (seqs and seqs[-1] > replica.seq):
        raise SimInvariantError(f"{replica.name}: log out of order {seqs} (head {replica.seq})")
    if len(replica.log) != len(replica.state):
        raise SimInvariantError(f"{replica.name}: log and entries differ in size")
    for seq, slot in replica.log.items():
        if replica.state[slot].seq != seq:
            raise SimInvariantError(f"{replica.name}: {slot} is at seq {seq} in the log only")


def check_cursors(network: Network) -> None:
    """No cursor skips a change: everything at or below it is applied (or held) by the puller."""
    by_node = {r.node: r for r in network.replicas.values()}
    for puller in network.replicas.values():
        for node, cursor in puller.cursors.items():
            server = by_node.get(node)
            if server is None or server.incarnation != cursor.incarnation:
                continue
            if cursor.cursor > server.seq:
                raise SimInvariantError(f"{puller.name}: cursor beyond {server.name}'s head")
            for seq, slot in server.log.items():
                if seq > cursor.cursor:
                    break
                change = server.state[slot]
                if dominates(puller.state.get(slot), change):
                    continue
                if _covered(network, puller, change, by_node):
                    continue
                if any(dominates(h, change) for h in puller.held if (h.ns, h.key) == slot):
                    continue
                raise SimInvariantError(
                    f"{puller.name} is past seq {seq} of {server.name} without {change}"
                )


def _covered(
    network: Network, puller: Replica, change: Change, by_node: dict[int, Replica]
) -> bool:
    """Whether a deferred change was passed as covered by its origin's mark, rightly.

    The mark's promise: the puller holds the change (or newer), or the origin's
    own state of the key has moved past it (that newer state reaches the
    puller as any other change does).
    """
    if change.hlc > puller.relays.marks.get(change.node, -1):
        return False
    origin = by_node.get(change.node)
    if origin is None:
        return True  # wiped since: its writes live on only where they were copied
    newer = origin.state.get((change.ns, change.key))
    if newer is not None and wins(newer, change):
        return True
    # A relayed mark (``Batch.relayed``) promises the same of the relay's state:
    # the key moved on there, and that newer state reaches the puller as any does.
    slot = (change.ns, change.key)
    return any(
        (held := r.state.get(slot)) is not None and wins(held, change)
        for r in network.replicas.values()
    )


def check_bounded_by(network: Network, expected: dict[Slot, Change]) -> None:
    """No replica holds a state newer than the join of every write made (nothing invented)."""
    for replica in network.replicas.values():
        for change in itertools.chain(replica.state.values(), replica.held):
            best = expected.get((change.ns, change.key))
            if best is None or not dominates(best, change):
                raise SimInvariantError(f"{replica.name} holds {change} that nobody wrote")


def assert_converged(network: Network, expected: dict[Slot, Change] | None = None) -> None:
    """Every replica has the same states (tombstones included) and reads the same keys.

    With ``expected`` (the join of every write that survives somewhere), the
    common state must also be exactly that: no write lost, none resurrected.
    """
    replicas = list(network.replicas.values())
    for replica in replicas:
        if replica.held:
            raise AssertionError(f"{replica.name} still holds {replica.held}")
    first = replicas[0]
    now_seconds = network.now_ms / 1000
    for other in replicas[1:]:
        mine, theirs = first.full_state(), other.full_state()
        if mine != theirs:
            differing = sorted(
                slot for slot in mine.keys() | theirs.keys() if mine.get(slot) != theirs.get(slot)
            )
            raise AssertionError(
                f"{first.name} and {other.name} differ at {differing}:"
                f" {[mine.get(s) for s in differing]} != {[theirs.get(s) for s in differing]}"
            )
        if first.live_view(now_seconds) != other.live_view(now_seconds):
            raise AssertionError(f"{first.name} and {other.name} read differently")
    if expected is not None:
        want = {slot: change.state() for slot, change in expected.items()}
        if first.full_state() != want:
            raise AssertionError(f"converged on {first.full_state()}, expected {want}")
