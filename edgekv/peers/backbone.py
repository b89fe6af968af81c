"""The NATS JetStream backbone between regions (``--backbone nats://host:4222``).

Three loops over one connection:

* **publish**: this node's own changes (origin == itself), paged from its log
  in seq order, as envelope batches on ``<stream>.changes.<region>.<node>`` with a
  ``Nats-Msg-Id`` per batch (a batch published again after a restart is
  dropped by JetStream). The position is saved in SQLite (a cursor under the
  reserved peer id :data:`PUBLISHED`) after JetStream acknowledged the
  batch, so a restart resumes from it and nothing acknowledged locally is
  skipped; local writes never wait for the backbone.
* **consume**: a durable pull consumer per other region, filtered to that
  region's subjects (nats-server 2.9 has one filter per consumer), added as
  members make regions known and reading each from the start of the stream.
  This node's own region is never read (its changes come over peer streams).
  Each batch is checked by the one intake rule and applied as a
  peer batch, moving that origin's cursor (``peer_cursors``, keyed by the
  origin, holding the origin's seq) in the same transaction. The message is
  acknowledged to JetStream only after that commit: a crash before it gets
  the message again, and the origin's cursor then shows it is applied
  already, so nothing is lost or applied twice. A batch refused by intake
  is not acknowledged (redelivered later, the origin stalled, the reason in
  status and the log), exactly as a peer stream that keeps sending it.
* **state**: once a second a report on plain NATS (not stored): published and
  caught-up positions for tombstone collection
  (:class:`~edgekv_replication.backbone.StampFloor`), and now and then the
  member list, so membership spreads across regions.

Any failure closes the connection; the node retries with backoff, and status
shows the backbone down with its lag meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.client import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge

from edgekv.config import Config
from edgekv.peers.membership import Membership
from edgekv.store.peer_state import CursorMoved
from edgekv.store.store import Store
from edgekv_replication.backbone import (
    INCARNATION_HEADER,
    NODE_HEADER,
    Consumption,
    StampFloor,
    State,
    Take,
    all_changes,
    changes_subject,
    consumer_name,
    decode_state,
    encode_state,
    message_id,
    origin_of,
)
from edgekv_replication.envelope import Batch, EnvelopeError, decode, encode
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.intake import Refused, check_changes, limits_of
from edgekv_replication.session import PeerCursor

log = logging.getLogger(__name__)

PUBLISHED = 0
"""The reserved peer id under which the publish position is saved (node ids are never 0)."""
PAGE_CHANGES = 500
FETCH_MESSAGES = 64
FETCH_WAIT = 5.0
"""Seconds a fetch waits for a message: it returns as soon as one is there, so this only
sets how often an idle consumer asks (and how stale its caught-up time may be)."""
REPORT_INTERVAL_MAX = 5.0
"""State reports are N-squared traffic (each node hears every other's): at most one per
this many seconds, and at least six per ``member_down_timeout``."""
PUBLISHED_REFRESH = 10.0
"""Seconds between saves of the published position when it has not moved."""
STATE_INTERVAL = 1.0
MEMBERS_EVERY = 60
"""State reports per one that carries the member list (and whenever it changed): a
list of 1,000 members is about 80 KB, which every node receives from every node."""
RETRY_MIN, RETRY_MAX = 0.2, 5.0
REFUSED_RETRY_SECONDS = 5.0
HOLD_SECONDS = 1.0
"""Redelivery delay of a batch held back behind another of its origin."""
MIN_CONSUMER_IDLE = 3600.0
"""A consumer nobody pulled from for the tombstone horizon (at least this) is removed by
the server: its node is off the backbone past the horizon and must re-sync anyway."""


@dataclass(frozen=True, slots=True)
class _Taken:
    """What to do with one consumed message, once the batches before it committed."""

    message: Msg
    hold: float = 0.0
    """Hand it back (``nak``) to come again after this many seconds; 0: acknowledge."""
    origin: int = 0
    region: str = ""
    batch: Batch | None = None
    done: asyncio.Future[Any] | None = None
    """Its batch's commit; None: acknowledged without applying."""


class BackboneMetrics:
    """Backbone counters and gauges in the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the metrics in ``registry``."""
        self.published = Counter(
            "edgekv_backbone_changes_published",
            "Own changes published to the backbone.",
            registry=registry,
        )
        self.consumed = Counter(
            "edgekv_backbone_changes_consumed",
            "Changes of other regions consumed from the backbone, by origin region.",
            ["region"],
            registry=registry,
        )
        self.skipped = Counter(
            "edgekv_backbone_messages_skipped",
            "Backbone messages acknowledged without applying (already applied, or of a member "
            "of this region: one that moved, as the region filters leave the rest out).",
            registry=registry,
        )
        self.up = Gauge(
            "edgekv_backbone_up", "1 while the backbone is connected.", registry=registry
        )
        self.pending = Gauge(
            "edgekv_backbone_pending_messages",
            "Messages in the backbone not yet consumed by this node.",
            registry=registry,
        )
        self.unpublished = Gauge(
            "edgekv_backbone_unpublished_seq",
            "Seqs of this node's log not yet published (others' rows among them are skipped).",
            registry=registry,
        )


class Backbone:
    """This node's side of the NATS JetStream backbone."""

    def __init__(
        self,
        config: Config,
        store: Store,
        membership: Membership,
        registry: CollectorRegistry,
        on_applied: Callable[[int, int | None], None],
        on_down: Callable[[set[int]], None],
        on_members: Callable[[], None],
    ) -> None:
        """Prepare the backbone of ``store``.

        ``on_applied(origin, mark)``: a batch of ``origin`` carrying ``mark``
        committed here (relay deferral). ``on_down(origins)``: the backbone
        went down (deferrals of those origins, resting on it, end).
        ``on_members()``: the member table changed (streams may need starting).
        """
        assert config.backbone is not None
        self.config = config
        self.url = config.backbone
        self.stream = config.backbone_stream
        self.store = store
        self.membership = membership
        self.node = store.identity.node_id
        self.incarnation = store.identity.incarnation
        self.limits = limits_of(config)
        self.metrics = BackboneMetrics(registry)
        self._on_applied = on_applied
        self._on_down = on_down
        self._on_members = on_members
        self._max_offset_ms = int(config.max_clock_offset * 1000)
        self.state = "connecting"
        self.last_error: str | None = None
        self.last_contact_ms: int | None = None
        self.pending = 0
        self.lag_ms = 0
        self.caught_up_ms: int | None = None
        """Every region's consumer was caught up at this wall-clock ms (the oldest of them)."""
        self._caught_up: dict[str, int | None] = {}
        """Per other region: when its consumer last found nothing pending (None: not yet)."""
        self._pending: dict[str, int] = {}
        """Per other region: messages its consumer has not read yet."""
        self.reports: dict[int, tuple[int | None, int | None, int]] = {}
        """Each node's last report: (published_ms, caught_up_ms, when heard)."""
        self.floor = StampFloor(margin_ms=2 * self._max_offset_ms + 2000)
        self.origins: set[int] = set()
        """Origins whose changes this node takes from the backbone (relay deferral)."""
        self.consumption = Consumption(self.node, config.region)
        """Which consumed batches apply, in order per origin."""
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        """Monotonic time since when the backbone has been down (None: up, or not tried)."""
        last_contact = store.peer_acks().get(PUBLISHED)
        if last_contact is not None:
            # The last contact saved before this start counts too: a node stopped for
            # longer than the horizon must re-sync as one cut off that long.
            away_s = max(0, store.clock.wall_ms() - last_contact[1]) / 1000
            self._down_since = time.monotonic() - away_s
        self._nc: Client | None = None
        self._wake_publisher = asyncio.Event()
        saved = store.peer_cursor(PUBLISHED)
        self._last_upto = saved.cursor if saved.incarnation == self.incarnation else 0
        """The end of the last batch published (saved): the next one continues from it."""
        self._position = self._last_upto
        """How far the log has been read for publishing (pages without own changes
        are passed over, unsaved: a restart reads them again, cheaply)."""
        store.on_commit(lambda _: self._wake_publisher.set())

    # -- status --------------------------------------------------------------

    @property
    def published_seq(self) -> int:
        """How far this node's log is published (its own changes in it)."""
        return self._position

    def status(self) -> dict[str, Any]:
        """The ``backbone`` object of ``cluster status``."""
        return {
            "url": self.url,
            "stream": self.stream,
            "state": self.state,
            "published_seq": self.published_seq,
            "lag_changes": max(0, self.store.seq - self.published_seq),
            "pending_messages": self.pending,
            "lag_ms": self.lag_ms,
            "last_contact_ms": self.last_contact_ms,
            "last_error": self.last_error,
        }

    def stamp_floor(self) -> int | None:
        """Tombstones stamped before this wall-clock ms may go, as far as the backbone goes."""
        return self.floor.floor

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect (and keep reconnecting) in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop every loop and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)

    def _set_state(self, state: str, error: str | None) -> None:
        if state == "down" and self.state != "down":
            log.warning("backbone %s unreachable: %s", self.url, error)
            self._down_since = time.monotonic()
        elif state == "up" and self.state != "up":
            log.info("backbone %s connected (stream %s)", self.url, self.stream)
        self.state = state
        self.metrics.up.set(1 if state == "up" else 0)
        if error is not None:
            self.last_error = error

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            lost = asyncio.Event()
            try:
                await self._connect(lost)
                if self._out_of_contact_too_long():
                    await self._close()
                    return
                self._set_state("up", None)
                self._down_since = None
                delay = RETRY_MIN
                loops = [
                    asyncio.create_task(self._publish_loop()),
                    asyncio.create_task(self._consume_loop()),
                    asyncio.create_task(self._state_loop()),
                    asyncio.create_task(lost.wait()),
                ]
                try:
                    done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in loops:
                        task.cancel()
                    await asyncio.gather(*loops, return_exceptions=True)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                raise ConnectionError("the connection to the backbone was lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("backbone failure", exc_info=True)
                self._set_state("down", f"{type(exc).__name__}: {exc}")
            await self._close()
            # Origins taken from the backbone come relayed by regional peers meanwhile.
            origins, self.origins = self.origins, set()
            self._on_down(origins)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_MAX, delay * 2)

    def _out_of_contact_too_long(self) -> bool:
        """Whether the backbone was down past the tombstone horizon: then re-sync, as a peer.

        The other members stopped waiting for this node's reports after the
        horizon and may have collected tombstones of keys it still holds, or
        writes it has not published yet: publishing them now could bring
        deleted keys back. It stays off the backbone (regional peers refuse it
        likewise, close code 4410) until its data directory is wiped.
        """
        horizon = self.config.tombstone_horizon
        if self._down_since is None or time.monotonic() - self._down_since <= horizon:
            return False
        self.state = "resync_required"
        self.metrics.up.set(0)
        self.last_error = (
            f"out of contact with the backbone for more than tombstone_horizon ({horizon:g} s): "
            "tombstones may have been collected without this node; re-sync in full "
            "(wipe its data directory)"
        )
        log.error("backbone %s: %s", self.url, self.last_error)
        return True

    async def _connect(self, lost: asyncio.Event) -> None:
        async def closed() -> None:
            lost.set()

        async def error(exc: Exception) -> None:
            self.last_error = f"{type(exc).__name__}: {exc}"

        self._nc = await nats.connect(
            self.url,
            name=f"edgekv-{self.node:016x}",
            connect_timeout=2,
            allow_reconnect=False,  # reconnecting is ours: one path for every failure
            # Else nats-py retries the first connection itself, for about two minutes.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            ping_interval=1,
            max_outstanding_pings=3,
            disconnected_cb=closed,
            closed_cb=closed,
            error_cb=error,
        )
        js = self._nc.jetstream(timeout=5)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=self.stream, subjects=[all_changes(self.stream)]))

    # -- publishing -------------------------------------------------------------

    async def _publish_loop(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream(timeout=5)
        subject = changes_subject(self.stream, self.config.region, self.node)
        max_bytes = max(1024, self._nc.max_payload // 2)
        while True:
            self._wake_publisher.clear()
            position = self._position
            head = self.store.seq
            self.metrics.unpublished.set(max(0, head - position))
            if position >= head:
                await self._wait_publisher(STATE_INTERVAL)
                continue
            page = self.store.changes_after(position, PAGE_CHANGES, max_bytes)
            upto = page[-1].seq if len(page) == PAGE_CHANGES else head
            if page and page[-1].seq > upto:
                upto = page[-1].seq
            own = tuple(change for change in page if change.node == self.node)
            if own:
                # ``after`` is the previous batch's end, so consumers can tell a
                # batch is missing (redelivered later) and wait for it.
                mark = self.store.origin_marks.at(upto)
                batch = Batch(self._last_upto, upto, own, self.store.clock.wall_ms(), upto, mark)
                await js.publish(
                    subject,
                    encode(batch),
                    headers={
                        "Nats-Msg-Id": message_id(self.node, self.incarnation, upto),
                        NODE_HEADER: f"{self.node:016x}",
                        INCARNATION_HEADER: f"{self.incarnation:016x}",
                    },
                )
                self.metrics.published.inc(len(own))
                await self.store.save_peer_cursor(PUBLISHED, PeerCursor(self.incarnation, upto))
                self._last_upto = upto
            self._position = upto
            self.last_contact_ms = self.store.clock.wall_ms()

    async def _wait_publisher(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_publisher.wait(), seconds)

    def published_ms(self) -> int | None:
        """Every own write stamped at or before this wall-clock ms is on the backbone."""
        position = self.published_seq
        if position >= self.store.seq:
            # All of the log is out. A write stamped now commits within the
            # writer's turn; the second of slack (and the floor's margin) cover it.
            return max(self.store.clock.last >> COUNTER_BITS, self.store.clock.wall_ms() - 1000)
        mark = self.store.origin_marks.at(position)
        return None if mark is None else mark >> COUNTER_BITS

    # -- consuming ----------------------------------------------------------------

    async def _consume_loop(self) -> None:
        """Run a consumer per other region, adding one as a region becomes known.

        A region learned late (from a member list) is read from the start of
        what the stream holds for it; the origins' cursors pass over what was
        applied already (relayed copies move no origin cursor).
        """
        assert self._nc is not None
        js = self._nc.jetstream(timeout=5)
        consumers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                now_ms = self.store.clock.wall_ms()
                regions = set(self.membership.regions().values()) - {self.config.region}
                for region in regions - consumers.keys():
                    self._caught_up.setdefault(region, None)
                    consumers[region] = asyncio.create_task(self._consume_region(js, region))
                self._caught_up_at(now_ms, consumers)
                if not consumers:
                    await asyncio.sleep(STATE_INTERVAL)
                    continue
                done, _ = await asyncio.wait(
                    consumers.values(), timeout=STATE_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # a consumer ends only by failing: raise it
        finally:
            for task in consumers.values():
                task.cancel()
            await asyncio.gather(*consumers.values(), return_exceptions=True)

    def _caught_up_at(self, now_ms: int, regions: Collection[str]) -> None:
        """Set ``caught_up_ms``, ``pending``: a region's consumer not caught up yet holds them."""
        times = [self._caught_up.get(region) for region in regions]
        if None not in times:  # with no other region, nothing is there to consume
            self.caught_up_ms = min((t for t in times if t is not None), default=now_ms)
        self.pending = sum(self._pending.get(region, 0) for region in regions)
        self.metrics.pending.set(self.pending)

    async def _consume_region(self, js: JetStreamContext, region: str) -> None:
        subscription = await js.pull_subscribe(
            changes_subject(self.stream, region),
            durable=consumer_name(self.node, region),
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=10,
                max_ack_pending=10_000,
                inactive_threshold=max(MIN_CONSUMER_IDLE, self.config.tombstone_horizon),
            ),
        )
        while True:
            fetched_ms = self.store.clock.wall_ms()
            messages = await _fetch(subscription)
            if messages:
                await self._take(messages)
                self._pending[region] = messages[-1].metadata.num_pending
            else:
                self._pending[region] = 0
            if self._pending[region] == 0:  # nothing pending when the fetch began: all applied
                self._caught_up[region] = fetched_ms

    async def _take(self, messages: list[Msg]) -> None:
        """Apply ``messages`` (group-committed), then acknowledge them, in order.

        Per origin, batches apply in order: once one is held back (refused by
        intake, or from a node not known to be a member yet, whose region
        therefore is not known), every later one of that origin is handed back
        too (``nak``) until it goes through.
        """
        regions = self.membership.regions()
        taken: list[_Taken] = []
        planned: dict[int, PeerCursor] = {}
        for message in messages:
            try:
                origin, incarnation = origin_of(message.subject, message.headers)
                decoded = decode(message.data)
                if not isinstance(decoded, Batch):
                    raise EnvelopeError(f"expected a Batch, got {type(decoded).__name__}")
            except EnvelopeError as exc:
                # Malformed beyond any origin's cursor: no node of ours sent it.
                log.warning("refused a backbone message on %s: %s", message.subject, exc)
                self.last_error = f"refused a message on {message.subject}: {exc}"
                taken.append(_Taken(message))
                continue
            self.membership.heard(origin)
            region = regions.get(origin)
            saved = planned.get(origin) or self.store.peer_cursor(origin)
            cursor = saved.cursor if saved.incarnation == incarnation else 0
            held_before = origin in self.consumption.held
            take = self.consumption.decide(origin, region, decoded.after, decoded.upto, cursor)
            if take is Take.SKIP:
                taken.append(_Taken(message))
                continue
            if take is Take.HOLD:
                if not held_before and decoded.after > cursor:
                    self.last_error = (
                        f"changes of {origin:016x} after seq {cursor} not consumed yet "
                        f"(the next batch continues from {decoded.after}): waiting for them"
                    )
                    log.info("backbone: %s", self.last_error)
                taken.append(_Taken(message, hold=HOLD_SECONDS))
                continue
            try:
                check_changes(decoded.changes, self.limits)
            except Refused as refusal:
                why = (
                    f"refused a backbone batch of {origin:016x} (seq {decoded.after + 1}.."
                    f"{decoded.upto}): {refusal.code}: {refusal}"
                )
                log.warning("%s", why)
                self.last_error = why
                self.consumption.refused(origin, decoded.upto)
                taken.append(_Taken(message, hold=REFUSED_RETRY_SECONDS))
                continue
            assert region is not None
            after = PeerCursor(incarnation, cursor)
            target = planned[origin] = PeerCursor(incarnation, decoded.upto)
            if decoded.mark is not None:
                self.origins.add(origin)
            done: asyncio.Future[Any]
            if decoded.changes:
                done = self.store.apply_changes(
                    decoded.changes, origin, target, self._max_offset_ms, after=after
                )
            else:
                done = self.store.save_peer_cursor(origin, target, after=after)
            taken.append(_Taken(message, origin=origin, region=region, batch=decoded, done=done))
        for item in taken:
            if item.hold:
                await item.message.nak(delay=item.hold)
                continue
            if item.done is None:
                self.metrics.skipped.inc()
                await item.message.ack()
                continue
            try:
                await item.done
            except CursorMoved as exc:
                # The origin's cursor moved meanwhile (a stream from it, as a seed of
                # another region, ran a moment): take the batch again from the new one.
                log.info("backbone batch of %016x taken again: %s", item.origin, exc)
                await item.message.nak(delay=0.2)
                continue
            except Exception as exc:
                # Not acknowledged: JetStream delivers it again after ack_wait, and
                # the batches after it found the cursor short and applied nothing.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("backbone batch of %016x failed to apply: %s", item.origin, exc)
                raise
            assert item.batch is not None
            self.metrics.consumed.labels(item.region).inc(len(item.batch.changes))
            if item.batch.changes:
                newest_ms = item.batch.changes[-1].hlc >> COUNTER_BITS
                self.lag_ms = max(0, self.store.clock.wall_ms() - newest_ms)
            self._on_applied(item.origin, item.batch.mark)
            await item.message.ack()
        self.last_contact_ms = self.store.clock.wall_ms()

    # -- state reports -------------------------------------------------------------

    async def _state_loop(self) -> None:
        assert self._nc is not None
        nc = self._nc
        await nc.subscribe(f"{self.stream}.state.*", cb=self._on_state)
        sent_members: object = None
        count = 0
        interval = min(
            REPORT_INTERVAL_MAX, max(STATE_INTERVAL, self.config.member_down_timeout / 6)
        )
        members_every = max(1, round(MEMBERS_EVERY * STATE_INTERVAL / interval))
        saved: tuple[int, float] | None = None
        while True:
            members = self.membership.members()
            with_members = members != sent_members or count % members_every == 0
            state = State(
                self.node,
                self.config.region,
                self.published_ms(),
                self.caught_up_ms,
                tuple(members) if with_members else (),
            )
            await nc.publish(f"{self.stream}.state.{self.node:016x}", encode_state(state))
            if with_members:
                sent_members = members
            count += 1
            # When the backbone was last reached, kept over a restart (see _down_since):
            # a commit, so only when the position moved or the time is worth saving.
            now = time.monotonic()
            if saved is None or saved[0] != self._last_upto or now - saved[1] >= PUBLISHED_REFRESH:
                await self.store.record_ack(PUBLISHED, self._last_upto)
                saved = (self._last_upto, now)
            self._observe_floor()
            await asyncio.sleep(interval)

    async def _on_state(self, message: Msg) -> None:
        try:
            state = decode_state(message.data)
        except EnvelopeError as exc:
            log.warning("refused a backbone state report on %s: %s", message.subject, exc)
            return
        if not message.subject.endswith(f".{state.node:016x}") or state.node == self.node:
            return
        self.membership.heard(state.node)
        self.reports[state.node] = (
            state.published_ms,
            state.caught_up_ms,
            self.store.clock.wall_ms(),
        )
        if state.members:
            changed, refused = await self.membership.learn(list(state.members))
            for node, why in refused:
                log.warning("refused member %016x reported over the backbone: %s", node, why)
            if changed:
                self._on_members()

    def _observe_floor(self) -> None:
        """Feed the tombstone floor every counted member's latest report."""
        now_ms = self.store.clock.wall_ms()
        horizon_ms = int(self.config.tombstone_horizon * 1000)
        reports: list[tuple[int | None, int | None]] = [(self.published_ms(), self.caught_up_ms)]
        for node, _, _, removed, learned_ms, _ in self.membership.members():
            if removed or node == self.node:
                continue
            published_ms, caught_up_ms, heard_ms = self.reports.get(node, (None, None, 0))
            if max(heard_ms, learned_ms) < now_ms - horizon_ms:
                continue  # out of contact past the horizon: it must re-sync
            reports.append((published_ms, caught_up_ms))
        self.floor.observe(now_ms, reports)


def now_ms() -> int:
    """The wall clock in ms (for tests)."""
    return time.time_ns() // 1_000_000


async def _fetch(subscription: JetStreamContext.PullSubscription) -> list[Msg]:
    """The messages there now, or the first one to come within :data:`FETCH_WAIT`.

    nats-py's ``fetch(n)``, once it has waited for a first message, goes on
    waiting for ``n`` of them until its timeout: under a trickle of writes a
    caught-up consumer held every batch for the whole timeout (up to a second
    on the way between regions). So one message is waited for; then only as
    many as the consumer says are pending, which are there: the request for
    them returns at once.
    """
    try:
        first = await subscription.fetch(1, timeout=FETCH_WAIT)
    except (nats.errors.TimeoutError, TimeoutError):
        return []
    pending = first[-1].metadata.num_pending
    if not pending:
        return first
    try:
        more = await subscription.fetch(min(pending, FETCH_MESSAGES - 1), timeout=FETCH_WAIT)
    except (nats.errors.TimeoutError, TimeoutError):
        more = []
    return first + more
