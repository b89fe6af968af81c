"""The replication engine of a node: pull loops to every member, held-change release.

One pull loop per member URL: connect to ``/v1/peer/stream``, answer the
Welcome with our cursor for that peer's incarnation, then apply each batch and
advance the cursor in one transaction. Members heard from any peer get loops
of their own, so a node that joins through one seed reaches everyone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgekv.config import Config
from edgekv.peers.applying import StreamApplier
from edgekv.peers.feed import ChangeFeed
from edgekv.peers.membership import Membership
from edgekv.peers.outbox import Outbox
from edgekv.peers.recent import RecentStamps
from edgekv.peers.wire import FEATURES_HEADER, SECRET_HEADER, STREAM_PATH
from edgekv.store.restored import clear_mark, read_mark
from edgekv.store.store import Store
from edgekv.tasks import wait_event
from edgekv_replication.envelope import (
    MAX_MESSAGE_BYTES,
    Ack,
    Batch,
    Defer,
    EnvelopeError,
    Members,
    Welcome,
    decode,
    encode,
)
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.intake import MEMBER_STAMP_MARGIN_MS, Refused, check_changes, limits_of
from edgekv_replication.relays import RelayDeferrals
from edgekv_replication.session import (
    FEATURES,
    RESYNC_REQUIRED,
    WITHDRAWN,
    Identity,
    PeerCursor,
    ProtocolError,
    PullSession,
)
from edgekv_replication.topology import chosen_relays, direct_peers

if TYPE_CHECKING:
    from edgekv.peers.backbone import Backbone

log = logging.getLogger(__name__)

# A link silent for this long (heartbeats come every second) is dead.
RECEIVE_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.05, 2.0
HELD_RELEASE_INTERVAL = 0.1
WATCHES_EVERY = 10
"""The clock and member watches run every this many release ticks (once a second)."""
ACK_INTERVAL = 0.1
ACK_REFRESH_MS = 10_000
"""How often an acknowledgement that did not move is written again (for its time).

A puller acknowledges with every heartbeat, once a second per stream: written
each time, that was a transaction per second per puller, the largest idle
cost of a node in a full mesh. A moved cursor is written at once; an
unchanged one only refreshes when it was heard, which tombstone collection
reads (members out of contact for the horizon, days, are left out): that time
is kept in memory and written at most this often."""


class _LinkCollector(Collector):
    """Per-peer link gauges, read from the membership at scrape time."""

    def __init__(self, replicator: Replicator) -> None:
        self._replicator = replicator

    def collect(self) -> Iterator[Metric]:
        links = self._replicator.membership.links
        families = {
            "lag_changes": GaugeMetricFamily(
                "edgekv_repl_lag_changes",
                "Changes a peer had that are not applied here.",
                labels=["peer"],
            ),
            "lag_ms": GaugeMetricFamily(
                "edgekv_repl_lag_ms",
                "Age of the newest change from a peer when applied.",
                labels=["peer"],
            ),
            "clock_offset_ms": GaugeMetricFamily(
                "edgekv_repl_clock_offset_ms", "A peer's wall clock minus ours.", labels=["peer"]
            ),
        }
        up = GaugeMetricFamily(
            "edgekv_repl_peer_up", "1 while the stream from a peer is up.", labels=["peer"]
        )
        for node, link in links.items():
            label = [f"{node:016x}"]
            for attribute, family in families.items():
                value = getattr(link, attribute)
                if value is not None:
                    family.add_metric(label, value)
            up.add_metric(label, 1 if link.state == "up" else 0)
        yield from families.values()
        yield up
        replicator = self._replicator
        me = replicator.identity
        info = GaugeMetricFamily(
            "edgekv_node_info",
            "This node (1), labelled with its region.",
            labels=["node", "region"],
        )
        info.add_metric([f"{me.node:016x}", me.region], 1)
        yield info
        members = GaugeMetricFamily(
            "edgekv_members",
            "Members known to this node, by region and state (up, down, joining, removed).",
            labels=["region", "state"],
        )
        timeout_ms = int(replicator.config.member_down_timeout * 1000)
        counts: dict[tuple[str, str], int] = {}
        for node, _, _, removed, _, region in replicator.membership.members():
            if node == me.node:
                continue
            state = "removed" if removed else replicator.membership.state(node, timeout_ms)
            counts[region or "unknown", state] = counts.get((region or "unknown", state), 0) + 1
        for (region, state), count in sorted(counts.items()):
            members.add_metric([region, state], count)
        yield members
        yield GaugeMetricFamily(
            "edgekv_repl_held_changes",
            "Remote changes held back because they are stamped too far ahead.",
            self._replicator.store.held_count(),
        )


@dataclass(slots=True)
class _OpenStream:
    """A pull stream that is up: its outbox, and the origins (with marks) it was asked to defer."""

    outbox: Outbox
    deferred: dict[int, int] = field(default_factory=dict)


class ReplicationMetrics:
    """Per-peer replication counters, registered in the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the metrics in ``registry``."""
        self.sent = Counter(
            "edgekv_repl_changes_sent", "Changes sent to a peer.", ["peer"], registry=registry
        )
        self.batches = Counter(
            "edgekv_repl_batches_sent",
            "Stream messages with changes sent to a peer.",
            ["peer"],
            registry=registry,
        )
        self.received = Counter(
            "edgekv_repl_changes_received",
            "Changes received from a peer.",
            ["peer"],
            registry=registry,
        )
        self.applied = Counter(
            "edgekv_repl_changes_applied",
            "Received changes that won and were applied.",
            ["peer"],
            registry=registry,
        )
        self.reconnects = Counter(
            "edgekv_repl_stream_reconnects", "Pull streams (re)opened.", ["peer"], registry=registry
        )
        self.stalled = Counter(
            "edgekv_repl_streams_stalled",
            "Streams served to a peer closed because it read nothing for peer_stall_timeout.",
            ["peer"],
            registry=registry,
        )
        self.registry = registry
        self.apply_seconds = Histogram(
            "edgekv_repl_apply_seconds", "Time to apply and commit one batch.", registry=registry
        )


def _log_failure(done: asyncio.Future[None]) -> None:
    """Log a background write that failed (nothing waits for it)."""
    if not done.cancelled() and done.exception() is not None:
        log.warning("resetting a peer cursor failed: %s", done.exception())


def stream_end_reason(close_code: int | None, error: BaseException | None) -> str:
    """Why a pull stream ended, for the link's ``last_error`` and the log."""
    if error is not None:
        return f"{type(error).__name__}: {error}"
    if close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        return (
            f"a message over the {MAX_MESSAGE_BYTES}-byte peer message limit "
            "(close code 1009): the peer sends pages too large for this node"
        )
    if close_code == aiohttp.WSCloseCode.GOING_AWAY:
        return "the peer closed the stream (going away: it is stopping)"
    if close_code == WITHDRAWN:
        return "the peer restarts the stream: it no longer relays an origin it relayed"
    if close_code in (None, aiohttp.WSCloseCode.ABNORMAL_CLOSURE):
        return "the connection was lost"
    return f"the peer closed the stream (close code {close_code})"


def peer_client_tls(config: Config) -> ssl.SSLContext:
    """How pull streams verify peers (``tls_ca``) and present this node (``tls_cert``)."""
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert and config.tls_key:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


class Replicator:
    """Keeps this node's pull streams running."""

    def __init__(self, config: Config, store: Store, url: str, registry: CollectorRegistry) -> None:
        """Prepare replication for ``store``, advertised to peers at ``url``."""
        self.config = config
        self.store = store
        self.identity = Identity(
            store.identity.node_id,
            store.identity.incarnation,
            config.display_name,
            config.advertise_url or url,
            config.region,
        )
        self.membership = Membership(
            store, store.node_id, int(config.max_clock_offset * 1000) + MEMBER_STAMP_MARGIN_MS
        )
        self.limits = limits_of(config)
        """What a received change may hold: the limits HTTP input is held to."""
        self.metrics = ReplicationMetrics(registry)
        self.recent = RecentStamps()
        self.relays = RelayDeferrals()
        self._collector = _LinkCollector(self)
        registry.register(self._collector)
        self.feed = ChangeFeed(asyncio.get_running_loop(), store.seq)
        store.on_commit(self.feed.notify_threadsafe)
        self._max_offset_ms = int(config.max_clock_offset * 1000)
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self._pulled_nodes: dict[int, str] = {}
        self._reconnected = asyncio.Event()
        """Set (and replaced) whenever a stream opens: wakes the loops in backoff."""
        self._session: aiohttp.ClientSession | None = None
        self._background: list[asyncio.Task[None]] = []
        self._open_streams: dict[int, _OpenStream] = {}
        """The pull streams up now, by the peer they pull from."""
        self.streams: set[web.WebSocketResponse] = set()
        """Streams this node serves to pullers; closed on stop."""
        self.stopping = False
        self._clock_ahead = False
        """Whether the clock was last seen ahead of the peers' (logged when it changes)."""
        self._stamps_ahead = False
        """Whether the stamps were last seen ahead of the peers' clocks (likewise)."""
        self.ack_floors: list[Callable[[], int]] = []
        """More acknowledgements tombstone collection waits for (the upstream's)."""
        self.stamp_floors: list[Callable[[], int | None]] = []
        """Stamps below which tombstones may go as far as the backbone is concerned."""
        self.has_backbone = bool(config.backbone or config.upstream)
        """Whether something other than peer streams joins the regions."""
        self._seed_nodes: dict[str, int] = {}
        self._acks_written: dict[int, tuple[int, int]] = {}
        """Per puller: the acknowledged cursor last written, and when (wall ms)."""
        self._acks_heard: dict[int, int] = {}
        """Per puller: when its acknowledgement was last heard (wall ms), written or not."""
        """Seeds' node ids, by URL, once they answered."""
        self.backbone: Backbone | None = None
        """The NATS JetStream backbone, when ``backbone`` is configured."""
        if config.backbone:
            # nats-py is the optional extra ``edgekv[nats]``: imported only when used.
            from edgekv.peers.backbone import Backbone

            self.backbone = Backbone(
                config,
                store,
                self.membership,
                registry,
                on_applied=self.applied_from_backbone,
                on_down=self.backbone_down,
                on_members=self.ensure_pullers,
            )
            # Tombstones stay until this node's own are on the backbone, and until
            # every member's older writes are there and consumed everywhere.
            self.ack_floors.append(lambda: self.backbone.published_seq if self.backbone else 0)
            self.stamp_floors.append(self.backbone.stamp_floor)

    def wall_ms(self) -> int:
        """This node's wall clock, as its HLC reads it."""
        return self.store.clock.wall_ms()

    async def start(self) -> None:
        """Start pulling from the seeds and every known member."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5),
            connector=aiohttp.TCPConnector(ssl=peer_client_tls(self.config)),
        )
        self._background.append(asyncio.create_task(self._release_held_loop()))
        self._background.append(asyncio.create_task(self._collect_tombstones_loop()))
        # This node's own entry (with its region) travels in every member list.
        await self.membership.introduce(
            self.identity.node, self.identity.url, self.identity.name, self.identity.region
        )
        self.ensure_pullers()
        if self.backbone is not None:
            await self.backbone.start()

    async def stop(self) -> None:
        """Stop every loop and close connections (new peer streams are refused from now)."""
        self.stopping = True
        # All at once: each close waits (up to the stream's close timeout) for the peer.
        await asyncio.gather(
            *(ws.close(code=1001, message=b"node stopping") for ws in list(self.streams)),
            return_exceptions=True,
        )
        if self.backbone is not None:
            await self.backbone.stop()
        tasks = [*self._pullers.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self.metrics.registry.unregister(self._collector)

    def direct_peers(self) -> set[int]:
        """The members this node pulls from: a bounded choice within its region.

        (:func:`edgekv_replication.topology.direct_peers`; a member whose region
        is not known yet counts as in this one.)
        """
        return set(
            direct_peers(
                self.identity.node,
                self._member_regions(),
                self.identity.region,
                self.config.max_region_peers,
                backbone=self.has_backbone,
            )
        )

    def _member_regions(self) -> dict[int, str]:
        """Active member -> region (one not known yet counts as in this node's)."""
        regions = self.membership.regions()
        return {
            node: regions.get(node) or self.identity.region
            for node in self.membership.active_urls()
        }

    def _designate_relays(self) -> None:
        """Take each member not pulled directly through one direct peer (topology.chosen_relays)."""
        members = self._member_regions()
        if self.config.peer_discovery and self.config.relay_choice:
            chosen = chosen_relays(
                self.identity.node,
                members,
                self.identity.region,
                self.config.max_region_peers,
                backbone=self.has_backbone,
            )
        else:
            # Every configured peer is pulled (nothing to choose), or the choice is off:
            # each peer relays what it has and deferral keeps direct origins from coming twice.
            chosen = {}
        if self.has_backbone:
            # Other regions' marks come with the backbone: only the region's are passed on.
            region = self.identity.region
            self.relays.relayable = lambda origin: members.get(origin, region) == region
        self.relays.designate(chosen)
        for other, open_stream in self._open_streams.items():
            self._ask_to_defer(other, open_stream, due=False)

    def pullers(self) -> set[int]:
        """The members expected to pull from this node (by the same rule, computed for them)."""
        regions = self.membership.regions()
        members = {n: regions.get(n) or self.identity.region for n in self.membership.active_urls()}
        members[self.identity.node] = self.identity.region
        limit = self.config.max_region_peers
        return {
            node
            for node, region in members.items()
            if node != self.identity.node
            and self.identity.node
            in direct_peers(node, members, region, limit, backbone=self.has_backbone)
        }

    def ensure_pullers(self) -> None:
        """Start a pull loop for every seed and chosen member that has none; stop the others."""
        if self._session is None:
            return
        self._designate_relays()
        active_nodes = self.membership.active_urls()
        chosen = self.direct_peers() if self.config.peer_discovery else set(active_nodes)
        urls = {
            url
            for url in self.config.peer
            # A seed is pulled until it answers, then as any member is.
            if url not in self._seed_nodes
            or self._seed_nodes[url] in chosen
            or not self.config.peer_discovery
        }
        if self.config.peer_discovery:
            urls |= {active_nodes[node] for node in chosen}
        for node, url in list(self._pulled_nodes.items()):
            removed = node not in active_nodes and self.membership.is_removed(node)
            if removed or (self.config.peer_discovery and node not in chosen):
                task = self._pullers.pop(url, None)
                if task:
                    task.cancel()
                del self._pulled_nodes[node]
                self.store.peer_clocks.forget(node)
                # Its writes other peers hold must come relayed now.
                self.relays.stream_ended(node)
                self.membership.links.pop(node, None)
                regions = self.membership.regions()
                same_region = regions.get(node, "") in (self.identity.region, "")
                if not removed and (same_region or not self.has_backbone):
                    # Pulled again one day, it is read from zero: tombstones collected
                    # meanwhile would refuse the old cursor (the others relayed them).
                    # (Another region's cursor is the backbone's now: left as it is.)
                    reset = self.store.save_peer_cursor(node, PeerCursor())
                    reset.add_done_callback(_log_failure)
        for url in urls:
            if url == self.identity.url or url in self._pullers:
                continue
            if url in self._pulled_nodes.values():
                continue
            self._pullers[url] = asyncio.create_task(self._pull_loop(url))

    async def _pull_loop(self, url: str) -> None:
        delay = RETRY_MIN
        while True:
            started = time.monotonic()
            node = await self._pull_once(url)
            if time.monotonic() - started > RETRY_MAX:
                delay = RETRY_MIN  # it had been up: reconnect at once, as after a restart
            if node == self.identity.node or (node and self._pulled_nodes.get(node, url) != url):
                # It is us, or another loop already pulls this member under another URL.
                self._pullers.pop(url, None)
                return
            if node and self.membership.is_removed(node):
                self._pullers.pop(url, None)
                return
            # Jittered backoff, so a cluster recovering from a partition does not
            # stampede -- cut short when another peer answers again: the partition
            # may have healed, and a node whose streams come back together gets
            # each change from its origin rather than relayed first.
            reconnected = self._reconnected
            await wait_event(reconnected, delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_MAX, delay * 2)

    async def _pull_once(self, url: str) -> int | None:
        """Run one stream from ``url`` until it breaks; return the peer's node id if learned."""
        assert self._session is not None
        # After an unclean stop our own last writes may be gone here: ask for echoes.
        session = PullSession(self.identity, echo=self.store.recovered)
        headers = {
            SECRET_HEADER: self.config.cluster_secret or "",
            FEATURES_HEADER: ", ".join(FEATURES),
        }
        # Known from an earlier stream on this URL, if any: failures then count for it.
        peer = next((n for n, u in self._pulled_nodes.items() if u == url), None)
        restarting = False
        try:
            async with self._session.ws_connect(
                url.rstrip("/") + STREAM_PATH,
                headers=headers,
                max_msg_size=MAX_MESSAGE_BYTES,
                # A link silent this long is dead; closing waits little for a silent peer.
                timeout=aiohttp.ClientWSTimeout(ws_receive=RECEIVE_TIMEOUT, ws_close=1.0),
                heartbeat=None,
            ) as ws:
                welcome = decode(await ws.receive_bytes())
                if not isinstance(welcome, Welcome):
                    raise ProtocolError("expected Welcome")
                peer = welcome.node
                self.membership.seed_links.pop(url, None)
                if url in self.config.peer:
                    self._seed_nodes[url] = peer
                if peer == self.identity.node or self._pulled_nodes.setdefault(peer, url) != url:
                    return peer
                self._forget_others_at(url, peer)
                label = f"{peer:016x}"
                hello = session.on_welcome(
                    welcome,
                    self.store.peer_cursor(peer),
                    acked=self.store.peer_acks().get(peer, (0, 0))[0],
                    purged=self.store.purged_seq(),
                )
                self._reconnected.set()
                self._reconnected = asyncio.Event()
                await self.membership.introduce(peer, url, welcome.name, welcome.region)
                # A server of the previous version (no region in its Welcome) reads its own form.
                await ws.send_bytes(encode(hello, regions=session.regions))
                self.metrics.reconnects.labels(label).inc()
                link = self.membership.link(peer)
                link.state, link.last_error = "up", None
                link.last_contact_ms = self.wall_ms()
                self.relays.stream_started(peer)
                outbox = Outbox(ws)
                self._open_streams[peer] = open_stream = _OpenStream(outbox)
                outbox.applied(session.cursor)  # reports progress: the server limits what it sends
                applier = StreamApplier(
                    self.store,
                    session,
                    peer,
                    link,
                    self.recent,
                    self._max_offset_ms,
                    self.metrics,
                    self.relays,
                    outbox.applied,
                )
                try:
                    restarting = await self._receive(ws, session, applier, open_stream, peer)
                finally:
                    if self._open_streams.get(peer) is open_stream:
                        del self._open_streams[peer]
                    # What is in flight commits (or fails) before the next stream reads
                    # the cursor. When stopping, the writer settles it as it closes.
                    if not self.stopping:
                        await applier.drain()
                    await outbox.close()
                if applier.failure is not None:
                    raise applier.failure
                if ws.close_code == RESYNC_REQUIRED:
                    raise ProtocolError(
                        "the peer collected tombstones this node never saw: "
                        "re-sync in full (wipe this node's data directory)"
                    )
                if not restarting and not self.stopping:
                    # The stream ended without an exception (aiohttp ends the
                    # message loop quietly on a close or an error message): say why.
                    ended = stream_end_reason(ws.close_code, ws.exception())
                    log.warning("stream from %s ended: %s", url, ended)
                    self._link_failed(peer, url, ended)
        except asyncio.CancelledError:
            if peer is not None and self._pulled_nodes.get(peer) != url:
                # Let go (no longer a chosen peer): what it ran after that leaves no link.
                self.membership.links.pop(peer, None)
            raise
        except (EnvelopeError, ProtocolError) as exc:
            log.warning("stream from %s refused: %s", url, exc)
            self._link_failed(peer, url, str(exc))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._link_failed(peer, url, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # e.g. the disk: keep the loop alive, retry from the cursor
            log.exception("stream from %s failed", url)
            self._link_failed(peer, url, f"{type(exc).__name__}: {exc}")
        if peer is not None and self._pulled_nodes.get(peer) == url:
            self._link_failed(peer, url, None)
            self.relays.stream_ended(peer, failed=not restarting)
        return peer

    def _forget_others_at(self, url: str, peer: int) -> None:
        """``url`` now answers as ``peer``: whoever answered there before (a wiped or
        restored node's old identity) is pulled there no more, so removing that old
        member does not stop the pull loop that now serves ``peer``."""
        for node, known_url in list(self._pulled_nodes.items()):
            if known_url == url and node != peer:
                del self._pulled_nodes[node]

    def _link_failed(self, peer: int | None, url: str, error: str | None) -> None:
        # A seed that never answered has no node id yet: its status is kept by URL.
        link = self.membership.link(peer) if peer is not None else self.membership.seed(url)
        link.state = "down"
        if error:
            link.last_error = error

    async def _receive(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: PullSession,
        applier: StreamApplier,
        stream: _OpenStream,
        peer: int,
    ) -> bool:
        """Decode and submit batches until the stream ends or a batch fails.

        Ends it too when it defers an origin whose own stream has ended: the
        next stream resumes from the saved cursor, so the deferred changes
        the marks did not cover come again. Returns True then (a restart).

        A batch holding any change the HTTP API would have refused (bad key,
        metadata, namespace, sizes, expiration: :mod:`edgekv_replication.intake`)
        is refused whole before any of it is submitted: ProtocolError naming the
        peer and the change, which the pull loop logs and shows as the link's
        ``last_error``; the next stream resumes from the saved cursor.
        """
        last_ack = 0.0
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                # A close or an error (such as a message over max_msg_size): the
                # pull loop records why from the close code (stream_end_reason).
                break
            try:
                decoded = decode(message.data)
            except EnvelopeError as exc:
                raise EnvelopeError(
                    f"refused a message from {self._peer_label(peer)}: {exc}"
                ) from None
            if isinstance(decoded, Members):
                # Even when nothing is new (the backbone may have told it first):
                # a seed outside the chosen peers is let go once its list is in.
                await self._learn_members(decoded, peer)
                self.ensure_pullers()
                continue
            if not isinstance(decoded, Batch):
                raise ProtocolError(f"unexpected {type(decoded).__name__}")
            try:
                check_changes(decoded.changes, self.limits)
            except Refused as refusal:
                raise ProtocolError(
                    f"refused a batch from {self._peer_label(peer)} "
                    f"(seq {decoded.after + 1}..{decoded.upto}): {refusal.code}: {refusal}"
                ) from None
            link = self.membership.link(peer)
            link.last_contact_ms = now_ms = self.wall_ms()
            link.clock_offset_ms = decoded.wall_ms - now_ms
            self.store.peer_clocks.observe(peer, decoded.wall_ms)
            applier.submit(decoded)
            pulled = decoded.mark is not None and self.relays.pulling(peer)
            relaying = decoded.relayed is not None and self.relays.relaying(
                peer, (origin for origin, _ in decoded.relayed)
            )
            if pulled or relaying:
                # Tell the other streams now, not with their next batch: until
                # then each would send a window of this origin's changes again.
                for other, open_stream in self._open_streams.items():
                    if other != peer:
                        self._ask_to_defer(other, open_stream, due=False)
            await applier.wait_for_room()
            if applier.failure is not None:
                return False
            if self.relays.must_restart(peer):
                return True
            due = time.monotonic() - last_ack > ACK_INTERVAL
            self._ask_to_defer(peer, stream, due)
            if due and session.saved:
                stream.outbox.send(Ack(session.saved))
                last_ack = time.monotonic()
        return False

    async def _learn_members(self, members: Members, peer: int) -> bool:
        """Merge a peer's member list; entries stamped too far ahead are refused and logged."""
        changed, refused = await self.membership.learn(list(members.members))
        for node, why in refused:
            log.warning(
                "refused member %016x advertised by %s: %s", node, self._peer_label(peer), why
            )
        return changed

    def _peer_label(self, peer: int) -> str:
        """The peer's name and node id, as logs and ``last_error`` show it."""
        name = next((m[2] for m in self.membership.members() if m[0] == peer), "")
        return f"peer {name!r} ({peer:016x})" if name else f"peer {peer:016x}"

    def applied_from_backbone(self, origin: int, mark: int | None) -> None:
        """A backbone batch of ``origin`` committed: its regional relays may be deferred.

        The backbone then counts as ``origin``'s own stream (see
        :mod:`edgekv_replication.relays`): the peer streams are asked to leave
        its changes out, up to its mark, so each reaches this node once.
        """
        if mark is None:
            return  # an origin that claims no marks is never deferred
        self.relays.pulling(origin)
        self.relays.committed(origin, mark)
        for other, open_stream in self._open_streams.items():
            self._ask_to_defer(other, open_stream, due=False)

    def backbone_down(self, origins: set[int]) -> None:
        """The backbone went down: the streams deferring its origins restart without them."""
        for origin in origins:
            self.relays.stream_ended(origin)

    def _ask_to_defer(self, peer: int, stream: _OpenStream, due: bool) -> None:
        """Send the stream from ``peer`` what it should defer, when that grew (or is ``due``)."""
        wanted = self.relays.wanted(peer)
        if wanted.keys() - stream.deferred.keys() or (due and wanted != stream.deferred):
            stream.outbox.send(Defer(tuple(wanted.items())))
            self.relays.asked(peer, set(wanted))
            stream.deferred = wanted

    async def _release_held_loop(self) -> None:
        merger = self.store.merger
        for tick in itertools.count(1):
            await asyncio.sleep(HELD_RELEASE_INTERVAL)
            if tick % WATCHES_EVERY == 0:
                # Both only log changes of state, over every member or peer: on an
                # idle node of a large region they cost more than all else here.
                self._watch_clock()
                self._watch_members()
            if not merger.may_hold:
                continue  # nothing held since the last count found none
            held = self.store.held_count()
            if held:
                released = await self.store.release_held(self._max_offset_ms)
                if released:
                    log.info("applied %d held-back changes", released)
                held = self.store.held_count()
            if not held:
                merger.may_hold = False
            # Relayed marks are recorded again once nothing is held (see RelayDeferrals).
            self.relays.holding = bool(held)

    def _watch_members(self) -> None:
        """Log each member turning unreachable (or reachable again), once per change."""
        timeout_ms = int(self.config.member_down_timeout * 1000)
        for node, reachable in self.membership.watch(timeout_ms):
            if reachable:
                log.info("%s is reachable again", self._peer_label(node))
            else:
                log.warning(
                    "%s unreachable for more than %.0f s (member_down_timeout)",
                    self._peer_label(node),
                    self.config.member_down_timeout,
                )

    def _watch_clock(self) -> None:
        """Log when this node's clock or stamps start (or stop) running ahead of its peers'."""
        clocks = self.store.peer_clocks
        clocks.expire()
        ahead = clocks.clock_ahead_ms() or 0
        stamps_ahead = clocks.stamps_ahead_ms() or 0
        clock_ahead = ahead > self._max_offset_ms
        if clock_ahead != self._clock_ahead:
            self._clock_ahead = clock_ahead
            if clock_ahead:
                log.warning(
                    "this node's clock is %d ms ahead of its peers' (median of %d): "
                    "new writes are stamped at most max_clock_offset (%d ms) beyond theirs",
                    ahead,
                    clocks.peers,
                    self._max_offset_ms,
                )
            else:
                log.info("this node's clock is back within max_clock_offset of its peers'")
        stamps_held = stamps_ahead > self._max_offset_ms
        if stamps_held != self._stamps_ahead:
            self._stamps_ahead = stamps_held
            if stamps_held:
                log.warning(
                    "this node's stamps are %d ms ahead of its peers' clocks (issued before "
                    "they were heard, or after a restart): peers hold its writes until then",
                    stamps_ahead,
                )
            else:
                log.info("this node's stamps are back within max_clock_offset of its peers'")

    async def _collect_tombstones_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tombstone_gc_interval)
            try:
                collected = await self.collect_tombstones()
            except Exception:  # never let one failed pass stop collection for good
                log.exception("tombstone collection failed")
                continue
            if collected:
                log.info("collected %d tombstones", collected)

    def _settle_restore(self, acks: dict[int, tuple[int, int]]) -> None:
        """Clear a restored directory's mark once it has rejoined every member: each has
        pulled this node's restored log, and this node has pulled from each."""
        data_dir = self.store.path.parent
        mark = read_mark(data_dir)
        if mark is None:
            return
        cursors = self.store.peer_cursors()
        old_node = int(mark.old_node_id, 16)
        for node, url, _, removed, _, _ in self.membership.members():
            # The backed-up node itself (at this URL, or elsewhere and gone) is no peer.
            if removed or node in (self.identity.node, old_node) or url == self.identity.url:
                continue
            pulled = node in cursors and cursors[node].cursor > 0
            if not pulled or acks.get(node, (0, 0))[0] < mark.backup_seq:
                return
        clear_mark(data_dir)
        log.info("restored from a backup of %s: rejoined every member", mark.old_node_id)

    async def record_ack(self, peer: int, cursor: int) -> None:
        """``peer`` has applied this node's log up to ``cursor``: written if it moved
        (or was last written :data:`ACK_REFRESH_MS` ago), else only its time noted."""
        now_ms = self.wall_ms()
        self._acks_heard[peer] = now_ms
        written = self._acks_written.get(peer)
        if written is not None and written[0] == cursor and now_ms - written[1] < ACK_REFRESH_MS:
            return
        await self.store.record_ack(peer, cursor)
        self._acks_written[peer] = (cursor, now_ms)

    def peer_acks(self) -> dict[int, tuple[int, int]]:
        """The stored acknowledgements, each with the time it was last heard."""
        acks = self.store.peer_acks()
        for peer, heard_ms in self._acks_heard.items():
            if peer in acks:
                cursor, updated_ms = acks[peer]
                acks[peer] = (cursor, max(updated_ms, heard_ms))
        return acks

    async def collect_tombstones(self) -> int:
        """Delete tombstones that every current member has acknowledged, past the horizon.

        Members out of contact for longer than the horizon do not hold
        collection back; they must re-sync in full when they return.
        """
        now_ms = self.wall_ms()
        horizon_ms = int(self.config.tombstone_horizon * 1000)
        acks = self.peer_acks()
        self._settle_restore(acks)
        acked, left_out = [], []
        # Only the members that pull from this node acknowledge its log; the
        # others get its changes relayed by them, or over the backbone.
        pullers = self.pullers() if self.config.peer_discovery else None
        for node, _, _, removed, learned_ms, _ in self.membership.members():
            if removed or node == self.identity.node:
                continue
            cursor, heard_ms = acks.get(node, (0, learned_ms))
            if pullers is not None and node not in pullers:
                # Pulling from here while its view of the members differs: wait for it,
                # but never leave it out (it does not depend on this node's log).
                if node in acks and heard_ms >= now_ms - horizon_ms:
                    acked.append(cursor)
                continue
            if heard_ms >= now_ms - horizon_ms:
                acked.append(cursor)
            else:
                left_out.append(node)
        acked.extend(floor() for floor in self.ack_floors)
        acked_seq = min(acked, default=self.store.seq)
        before_ms = now_ms - horizon_ms
        for floor in self.stamp_floors:
            floor_ms = floor()
            before_ms = min(before_ms, -1 if floor_ms is None else floor_ms)
        if before_ms < 0:
            return 0
        before_hlc = before_ms << COUNTER_BITS
        # Removed set members' metadata and spent counter resets this node wrote,
        # retired under the same rule.
        await self.store.crdts.retire_set_rows(acked_seq, before_hlc)
        await self.store.crdts.retire_counter_rows(acked_seq, before_hlc)
        return await self.store.collect_tombstones(acked_seq, before_hlc, left_out)
