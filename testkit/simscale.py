"""Hundreds of PoPs in virtual time: regions, the bounded regional mesh and a backbone broker.

The replicas, streams and protocol are :mod:`testkit.simnet`'s -- the node's
own :class:`~edgekv_replication.session.PullSession`,
:class:`~edgekv_replication.session.ServeSession`, relay marks and deferrals
over a dictionary :class:`~edgekv_replication.log.Log` -- and the peer choice
is the node's (:func:`edgekv_replication.topology.direct_peers`). What this
module adds is time: a discrete-event loop in which every message arrives
after its link's one-way delay and jitter from the WAN model
(:mod:`testkit.wan`), in order per stream direction (TCP), and every commit
reaches a node's served streams ``hop_ms`` later (apply, commit, wake the
stream: the node's batching delay).

**The backbone** is modelled as the reference deployment of a NATS JetStream
backbone: a JetStream cluster per region joined by gateways. A node publishes
each of its own writes once (to its region's broker, half the intra-region
RTT away); every node's consumers read the other regions' subjects from its
own region's broker (the gateway carries each message across once: half the
RTT between the regions), ``backbone_ms`` after it arrives (the consumer's
fetch and apply); as in ``edgekv.peers.backbone``, no consumer reads the
node's own region (its changes come over peer streams). A peer
stream leaves out other regions' origins (the node reaches that by relay
deferral: a puller asks its servers to defer the origins it takes from the
backbone; here it is a filter on the served log): each change reaches a node
once from the backbone or through its regional peers, never both. Cutting a
region from the backbone holds what crosses its gateways until it heals
(JetStream keeps it).

Without a backbone, the bounded mesh runs over every member (``backbone=False``
in the peer choice) and changes cross regions on relayed peer streams.

Figures (:class:`Figures`): convergence after a write (from the origin's
commit until every PoP holds it), after a region heals, change copies received
per write, wire messages per write, and streams and connections per node.
"""

from __future__ import annotations

import heapq
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch, EnvelopeError, Hello, decode, encode
from edgekv_replication.session import ProtocolError, Refusal, plan_apply
from edgekv_replication.topology import DEFAULT_MAX_REGION_PEERS, chosen_relays, direct_peers
from testkit.simnet import (
    DOWN,
    START_MS,
    UP,
    Link,
    Network,
    Replica,
    Stream,
    _TornDown,
    assert_converged,
)
from testkit.wan import WanModel, wan_model

PROBE_NS = "probe"
_CARRYING = ("peer batch", "backbone", "publish")
"""The kinds of message that carry a change to a PoP (the rest: control, empty batches
moving cursors, the gateways between brokers)."""



SETTLE_HEARTBEATS = 6
"""Heartbeat rounds before the first write: the chains of relays in a 50-PoP region are
at most a few hops, each needing a heartbeat to carry the relay's marks (idle nodes)."""

class ScaleReplica(Replica):
    """A simnet replica that tells the network about commits and counts what it receives."""

    network: ScaleNetwork

    def _entries(self, cursor: int) -> Iterator[Change]:
        # Newest first until the cursor, then in order: streams read near the
        # head, and the dictionary log has no index to seek with.
        recent: list[Change] = []
        for seq, slot in reversed(self.log.items()):
            if seq <= cursor:
                break
            change = self.state[slot]
            if self.network.serves(self, change):
                recent.append(change)
        return reversed(recent)

    def _store(self, change: Change) -> Change:
        stored = super()._store(change)
        self.network.committed(self, stored)
        return stored

    def apply_batch(self, batch: Batch, session: Any) -> tuple[int, int]:
        self.network.received(self, batch.changes)
        return super().apply_batch(batch, session)


@dataclass
class Figures:
    """What one simulated run measured (times in ms of virtual time)."""

    pops: int
    regions: int
    backbone: bool
    largest_rtt_ms: float
    write_convergence_ms: list[float] = field(default_factory=list)
    heal_convergence_ms: float | None = None
    copies_per_write: float = 0.0
    """Copies of a write received by the PoPs, summed (the origin's own is not one)."""
    messages_per_write: float = 0.0
    """Messages on the wire per write: batches, control messages, publishes and deliveries."""
    messages_by_kind: dict[str, float] = field(default_factory=dict)
    """The same, per kind of message (per write)."""
    streams_served: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    """Per node: streams it pulls, streams it serves, and its backbone connection."""

    def summary(self) -> dict[str, Any]:
        """The figures as one flat dictionary (for tables and JSON)."""
        writes = sorted(self.write_convergence_ms)
        return {
            "pops": self.pops,
            "regions": self.regions,
            "topology": "regions + backbone" if self.backbone else "bounded mesh, no backbone",
            "largest_rtt_ms": self.largest_rtt_ms,
            "write_convergence_p50_ms": round(statistics.median(writes), 1),
            "write_convergence_max_ms": round(writes[-1], 1),
            "heal_convergence_ms": (
                None if self.heal_convergence_ms is None else round(self.heal_convergence_ms, 1)
            ),
            "copies_per_write_per_pop": round(self.copies_per_write / self.pops, 3),
            "messages_per_write_per_pop": round(self.messages_per_write / self.pops, 3),
            "change_messages_per_write_per_pop": round(
                sum(self.messages_by_kind.get(k, 0.0) for k in _CARRYING) / self.pops, 3
            ),
            "streams_served_max": max(self.streams_served),
            "connections_mean": round(statistics.fmean(self.connections), 1),
            "connections_max": max(self.connections),
        }


class ScaleNetwork(Network):
    """``n_pops`` replicas in the regions of ``wan``, run by a discrete-event loop."""

    def __init__(
        self,
        n_pops: int,
        wan: WanModel,
        *,
        backbone: bool = True,
        max_region_peers: int = DEFAULT_MAX_REGION_PEERS,
        hop_ms: float = 1.0,
        backbone_ms: float = 2.0,
        page_size: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__([], links=[], page_size=page_size, seed=seed)
        self.wan = wan
        self.backbone = backbone
        self.hop_ms = hop_ms
        self.backbone_ms = backbone_ms
        self._jitter = random.Random(seed + 1)
        self.region: dict[str, str] = {}
        self.region_of_node: dict[int, str] = {}
        regions = wan.regions
        for i in range(n_pops):
            name = f"p{i:04d}"
            replica = ScaleReplica(self, name, self._new_id(), self._new_id(), 500)
            self.replicas[name] = replica
            self.region[name] = regions[i * len(regions) // n_pops]
            self.region_of_node[replica.node] = self.region[name]
        members = {r.node: self.region[r.name] for r in self.replicas.values()}
        by_node = {r.node: r.name for r in self.replicas.values()}
        for name, region in self.region.items():
            me = self.replicas[name].node
            chosen = direct_peers(me, members, region, max_region_peers, backbone=backbone)
            self.links |= {(by_node[server], name) for server in chosen}
            # The node's own choice of one relay per origin not pulled directly.
            relay_of = chosen_relays(me, members, region, max_region_peers, backbone=backbone)
            self.replicas[name].relays.designate(relay_of)
        self.served: dict[str, list[Link]] = {name: [] for name in self.replicas}
        for link in sorted(self.links):
            self.served[link[0]].append(link)
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = 0
        self.time_ms = 0.0
        self._due: dict[tuple[Link, str], float] = {}
        self._pump_pending: set[str] = set()
        self.cut_regions: set[str] = set()
        self._held_at_gateway: list[tuple[str, str, bytes]] = []
        """``(origin region, target region, message)`` kept by JetStream while a gateway is cut."""
        self.arrivals: dict[bytes, dict[str, float]] = {}
        """Probe key -> PoP -> when it first held the probe's write."""
        self.copies: Counter[bytes] = Counter()
        self.wire: Counter[str] = Counter()

    # -- virtual time ------------------------------------------------------------

    def at(self, delay_ms: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` ``delay_ms`` from now."""
        self._order += 1
        heapq.heappush(self._events, (self.time_ms + delay_ms, self._order, action, args))

    def run(self, until_ms: float | None = None) -> None:
        """Run events in time order until none is left (or until ``until_ms``)."""
        while self._events and (until_ms is None or self._events[0][0] <= until_ms):
            when, _, action, args = heapq.heappop(self._events)
            self._set_time(when)
            action(*args)
        if until_ms is not None:
            self._set_time(max(self.time_ms, until_ms))
        self.release_held()

    def _set_time(self, when: float) -> None:
        # Clocks are not skewed here, so nothing is held for long: held changes
        # are released when a run ends, not at every event (N replicas each).
        self.time_ms = when
        self.now_ms = START_MS + int(when)

    def one_way_ms(self, a: str, b: str) -> float:
        """The delay of one message from PoP ``a`` to PoP ``b`` (jitter drawn)."""
        return self.wan.shape(self.region[a], self.region[b]).one_way_ms(self._jitter)

    # -- streams -------------------------------------------------------------------

    def start(self) -> None:
        """Open every stream and run until the handshakes are done."""
        self.connect()
        for link in sorted(self.streams):
            self._flush(link)
        self.run()
        # A node's idle streams send heartbeats carrying the server's origin
        # mark: with it each puller asks its other servers to defer what it
        # pulls directly, before the first write (as nodes do within seconds).
        # A puller answers each server's batch, so the servers it heard before
        # the origins learn of the deferral with their next heartbeat. An origin
        # reached by relay is deferred once its mark has come down the chain of
        # chosen relays, a hop per heartbeat (nodes: a second each): a few more.
        for _ in range(SETTLE_HEARTBEATS):
            self.heartbeat()
            for link in sorted(self.streams):
                self._flush(link)
            self.run()

    def _flush(self, link: Link) -> None:
        """Put what the stream's two ends queued on the wire, each message due after its delay."""
        stream = self.streams.get(link)
        if stream is None:
            return
        server, puller = link
        for direction, source, target in ((DOWN, server, puller), (UP, puller, server)):
            queue = stream.queue(direction)
            for data in queue:
                due = max(
                    self.time_ms + self.one_way_ms(source, target),
                    self._due.get((link, direction), 0.0),
                )
                self._due[link, direction] = due
                self.at(due - self.time_ms, self._deliver, link, direction, data, stream)
            queue.clear()

    def _deliver(self, link: Link, direction: str, data: bytes, stream: Stream) -> None:
        if self.streams.get(link) is not stream:
            return  # the stream broke meanwhile: what was in flight on it is lost
        self.wire["peer control" if direction == UP else "peer handshake"] += 1
        try:
            if direction == DOWN:
                self._puller_receives(stream, data)
            else:
                self._server_receives(stream, data)
        except (EnvelopeError, ProtocolError, _TornDown) as exc:
            self.teardown(link, type(exc).__name__)
            return
        self._flush(link)

    def _server_receives(self, stream: Stream, data: bytes) -> None:
        """As simnet's server, without the Members list (membership is not what is measured)."""
        message = decode(data)
        serving = stream.serving
        if stream.admitted:
            serving.on_message(message)  # type: ignore[arg-type]
            self._pump(stream)
            return
        if not isinstance(message, Hello):
            raise EnvelopeError("expected Hello")
        admitted = serving.on_hello(message, stream.server.seq, lambda node, cursor: False, False)
        if isinstance(admitted, Refusal):
            raise _TornDown(admitted.reason.decode())
        stream.admitted = True
        self._pump(stream)

    def serves(self, server: Replica, change: Change) -> bool:
        """Whether ``server``'s peer streams carry ``change``.

        With a backbone, not another region's: that reaches every PoP from the backbone.
        """
        if not self.backbone:
            return True
        return self.region_of_node.get(change.node) == self.region[server.name]

    # -- commits, the backbone and counting -------------------------------------------

    def committed(self, replica: Replica, change: Change) -> None:
        """A change committed at ``replica``: its streams send ``hop_ms`` later.

        Its own writes go to the backbone as well.
        """
        if change.ns == PROBE_NS:
            self.arrivals.setdefault(change.key, {}).setdefault(replica.name, self.time_ms)
        # Only a change the streams carry wakes them: another region's change
        # (from the backbone) would only move their cursors in empty batches,
        # which the next batch or heartbeat does anyway.
        if self.serves(replica, change) and replica.name not in self._pump_pending:
            self._pump_pending.add(replica.name)
            self.at(self.hop_ms, self._pump_served, replica)
        if self.backbone and change.node == replica.node:
            batch = Batch(change.seq - 1, change.seq, (change,), replica.wall_ms())
            self.at(self.hop_ms, self._publish, replica.name, encode(batch))

    def received(self, replica: Replica, changes: tuple[Change, ...], batch: bool = True) -> None:
        """Count a peer batch (one with changes, or one that only moves the cursor) or a
        backbone message, and the probe copies in it."""
        if batch:
            # Delivered down a stream: a batch, not a handshake message.
            self.wire["peer handshake"] -= 1
            self.wire["peer batch" if changes else "peer empty batch"] += 1
        for change in changes:
            if change.ns == PROBE_NS:
                self.copies[change.key] += 1

    def _pump_served(self, replica: Replica) -> None:
        self._pump_pending.discard(replica.name)
        for link in self.served[replica.name]:
            stream = self.streams.get(link)
            if stream is not None:
                self._pump(stream)
                self._flush(link)

    def _publish(self, origin: str, data: bytes) -> None:
        """The origin's broker has the message; it crosses each gateway once, then fans out."""
        self.wire["publish"] += 1
        region = self.region[origin]
        for other in self.wan.regions:  # not its own region: no consumer there reads it
            if other != region:
                self._cross(region, other, data)

    def _cross(self, region: str, other: str, data: bytes) -> None:
        """One message over the gateway from ``region``'s broker to ``other``'s."""
        if region in self.cut_regions or other in self.cut_regions:
            self._held_at_gateway.append((region, other, data))
            return
        self.wire["gateway"] += 1
        to_broker = self.wan.rtt_ms(region, region) / 2
        self.at(to_broker + self.wan.rtt_ms(region, other) / 2, self._fan_out, other, data)

    def _fan_out(self, region: str, data: bytes) -> None:
        """The region's broker delivers one message to each of its consumers."""
        to_node = self.wan.rtt_ms(region, region) / 2
        for name, where in self.region.items():
            if where == region:
                self.at(to_node + self.backbone_ms, self._consume, name, data)

    def _consume(self, name: str, data: bytes) -> None:
        replica = self.replicas[name]
        batch = decode(data)
        assert isinstance(batch, Batch)
        self.wire["backbone"] += 1
        self.received(replica, batch.changes, batch=False)
        plan = plan_apply(batch, replica.current, replica.wall_ms(), replica.max_offset_ms)
        for change in plan.apply:
            replica.merge_remote(change)
        replica.held.extend(change._replace(seq=0) for change in plan.hold)

    def cut_from_backbone(self, region: str) -> None:
        """Cut ``region``'s gateways: nothing crosses them until :meth:`heal_backbone`."""
        self.cut_regions.add(region)

    def heal_backbone(self, region: str) -> None:
        """Heal ``region``'s gateways: what JetStream kept crosses now."""
        self.cut_regions.discard(region)
        held, self._held_at_gateway = self._held_at_gateway, []
        for source, target, data in held:
            self._cross(source, target, data)

    # -- writes ----------------------------------------------------------------------

    def write(self, name: str, key: bytes, value: bytes) -> Change:
        """A client write at PoP ``name`` (probes are measured: use :data:`PROBE_NS`)."""
        return self.replicas[name].put(PROBE_NS, key, value)

    def fan_out(self) -> tuple[list[int], list[int]]:
        """Per node: the streams it serves, and its connections (pulled + served + backbone)."""
        pulled = Counter(puller for _, puller in self.links)
        served = Counter(server for server, _ in self.links)
        extra = 1 if self.backbone else 0
        names = sorted(self.replicas)
        return [served[n] for n in names], [pulled[n] + served[n] + extra for n in names]


def _convergence(network: ScaleNetwork, key: bytes, since_ms: float) -> float:
    arrivals = network.arrivals.get(key, {})
    missing = len(network.replicas) - len(arrivals)
    if missing:
        raise AssertionError(f"{missing} PoPs never got probe {key!r}")
    return max(arrivals.values()) - since_ms


def simulate(
    n_pops: int,
    n_regions: int = 20,
    *,
    backbone: bool = True,
    probes: int = 20,
    cut_ms: float = 30_000.0,
    max_region_peers: int = DEFAULT_MAX_REGION_PEERS,
    seed: int = 0,
) -> Figures:
    """Build, handshake, then measure probe writes one at a time and a region's heal."""
    wan = wan_model(n_regions)
    network = ScaleNetwork(
        n_pops, wan, backbone=backbone, max_region_peers=max_region_peers, seed=seed
    )
    network.start()
    figures = Figures(n_pops, n_regions, backbone, wan.largest_rtt_ms)
    rng = random.Random(seed)
    names = sorted(network.replicas)
    wire_before = Counter(network.wire)
    for i in range(probes):
        key = b"w%04d" % i
        network.write(rng.choice(names), key, b"v")
        written = network.time_ms
        network.run()
        figures.write_convergence_ms.append(_convergence(network, key, written))
    figures.copies_per_write = sum(network.copies.values()) / probes
    sent = Counter(network.wire)
    sent.subtract(wire_before)
    figures.messages_by_kind = {
        kind: count / probes for kind, count in sorted(sent.items()) if count
    }
    figures.messages_per_write = sum(figures.messages_by_kind.values())
    figures.streams_served, figures.connections = network.fan_out()
    figures.heal_convergence_ms = _heal(network, rng, cut_ms) if backbone else None
    assert_converged(network)  # every PoP holds the same states: nothing lost on the way
    return figures


def _heal(network: ScaleNetwork, rng: random.Random, cut_ms: float) -> float:
    """Cut the first region from the backbone, write inside and outside it, heal.

    Returns the time from the heal until every PoP holds every write.
    """
    region = network.wan.regions[0]
    inside = [name for name, where in sorted(network.region.items()) if where == region]
    outside = [name for name, where in sorted(network.region.items()) if where != region]
    network.cut_from_backbone(region)
    keys = []
    for i in range(10):
        for side, pops in (("in", inside), ("out", outside)):
            key = b"heal-%s-%02d" % (side.encode(), i)
            network.write(rng.choice(pops), key, b"v")
            keys.append(key)
        network.run(network.time_ms + cut_ms / 10)
    healed = network.time_ms
    network.heal_backbone(region)
    network.run()
    return max(_convergence(network, key, healed) for key in keys)
