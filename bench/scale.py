"""Benchmark at scale: N real PoPs over a modelled WAN, three topologies, and the simulator.

One run starts, per topology, ``--pops`` real ``edgekv serve`` processes (48 =
4 regions x 12 by default) with tokens and a cluster secret, every link
through a latency proxy shaped by the WAN matrix (:mod:`testkit.wan`: 2 ms RTT
within a region; 40, 80 or 150 ms between regions), and measures:

- **propagation**: a fixed set of probe writes (``--probes``, 5 a second at
  random PoPs) under the background load; from the write's acknowledgement
  until it has committed -- is readable -- at every PoP: a log observer on
  each node (a peer stream without a URL, straight to the node) notes when
  each probe commits there; p50 and p99;
- **connections per node**: established TCP sockets of each node's process
  while idle (peer streams both ways, the backbone or upstream connections);
- **changes received per write per node**: from ``/metrics`` over the loaded
  window, every change a node received (peer streams, backbone messages
  including the ones it skips, upstream rows) divided by the writes made
  anywhere times (N - 1): 1.0 means each PoP got each change exactly once;
- **CPU per node**, idle and under a modest load (``--rate`` writes/s spread
  over all PoPs), from ``/proc/<pid>/stat``; **RSS per node**;
- **faults** (``--fault-seconds``, 30 by default), each under writes of new
  keys at ``--rate``: a region cut from the backbone (its link to the server),
  the NATS server stopped and started again, a node SIGKILLed and restarted;
  then the time from the heal until every PoP holds every acknowledged write
  (read from their SQLite files), and how many any PoP still lacks after 300 s
  (``lost``: must be 0).

Topologies (``--topologies``):

- ``mesh``: every PoP pulls from every other (``--peer-discovery false``, a
  proxy per directed link, shaped by the two regions);
- ``nats``: ``--region`` + ``--max-region-peers`` + ``--backbone nats://``
  (a NATS server with JetStream started for the run);
- ``pg``: ``--region`` + ``--max-region-peers`` + ``--upstream`` (the test
  PostgreSQL, a schema of the run's own, dropped after).

In the two regional topologies each node advertises its own inbound proxy
(intra-region shape: every peer stream stays in the region), and each region
reaches the one backbone server (NATS or PostgreSQL) through a proxy of its
own. One server cannot sit at every pair's distance, so each region's delay
to it is the least-squares fit of "delay(a) + delay(b) = one-way delay
between a and b" over the region pairs (printed with its worst error); a
JetStream cluster per region joined by gateways through the proxies would be
exact (the next step). A topology whose settings the node lacks is skipped
with a message; one that does not form within ``--form-timeout`` (every
node seeing every member it must up at once) is measured as it is, with
``formed_s`` null and what was missing. A 3-PoP mesh's idle CPU is measured
too: the issue's goal compares idle CPU per PoP at 48 PoPs with it.

Then the simulator (:mod:`testkit.simscale`) at ``--sim-pops`` (300 and
1,000 PoPs in 20 regions): convergence after a write and after a region
heals, messages per write, fan-out.

Develop with few PoPs and short windows (the machine is shared)::

    python -m bench.scale --pops 8 --idle-seconds 3 --load-seconds 5 --probes 5 --sim-pops 60

The figures in docs/performance.md ("Scale") come from the defaults on a quiet
machine::

    python -m bench.scale
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from edgekv.peers.wire import SECRET_HEADER, STREAM_PATH
from edgekv_replication.envelope import Batch, Hello, Welcome, decode, encode
from testkit.nats_server import NatsServer
from testkit.pg import DSN, query, server_port
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.simscale import simulate
from testkit.waiting import wait_for
from testkit.wan import WanModel, hub_delays, wan_model

PROBE_RATE = 5.0
"""Probe writes per second (on top of the background load), each at a random PoP."""
OBSERVER_BASE = 0x0B5E_5CA1_0000
"""Node ids of the log observers (one per node; no member has such an id)."""
PROBE_TIMEOUT = 30.0
RESULTS = Path(__file__).parent / "results"
RECEIVED = (
    "edgekv_repl_changes_received",
    "edgekv_backbone_changes_consumed",
    "edgekv_backbone_messages_skipped",
    "edgekv_upstream_changes_received",
)
"""Counters of changes arriving at a node, by path (absent ones count 0)."""
NEEDS = {
    "mesh": (),
    "nats": ("--region", "--max-region-peers", "--backbone"),
    "pg": ("--region", "--max-region-peers", "--upstream"),
}
"""The ``edgekv serve`` flags each topology needs."""


# -- the WAN: proxies -----------------------------------------------------------------


class ProxyHub:
    """Shaped proxies in ``processes`` processes of their own (``bench.proxy_hub``).

    Links are dealt round-robin over the processes, so a machine with cores
    to spare relays in parallel; :attr:`ports` is in the order of the shapes.
    """

    def __init__(self, shapes: list[tuple[float, float]], processes: int = 1) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.proxy_hub"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(max(1, min(processes, len(shapes))))
        ]
        count = len(self.procs)
        dealt = [
            self._ask(proc, {"links": shapes[k::count]})["ports"]
            for k, proc in enumerate(self.procs)
        ]
        self.ports: list[int] = [dealt[i % count][i // count] for i in range(len(shapes))]

    @staticmethod
    def _ask(proc: subprocess.Popen[str], message: dict[str, Any]) -> dict[str, Any]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        answer: dict[str, Any] = json.loads(proc.stdout.readline())
        return answer

    def forward(self, targets: list[int]) -> None:
        count = len(self.procs)
        for k, proc in enumerate(self.procs):
            self._ask(proc, {"targets": targets[k::count]})

    def cut(self, links: list[int]) -> None:
        """Cut the links at these indices of :attr:`ports` (heal with :meth:`heal`)."""
        self._order("cut", links)

    def heal(self, links: list[int]) -> None:
        self._order("heal", links)

    def _order(self, what: str, links: list[int]) -> None:
        count = len(self.procs)
        for k, proc in enumerate(self.procs):
            mine = [i // count for i in links if i % count == k]
            if mine:
                self._ask(proc, {what: mine})

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# -- the cluster ------------------------------------------------------------------------


@dataclass
class ScaleCluster:
    """``pops`` nodes of one topology, every link through the proxy hub."""

    work: Path
    pops: int
    wan: WanModel
    topology: str
    security: Security
    backbone_url: Callable[[int], str] | None = None
    """For the regional topologies: the backbone flag's URL given a proxy port."""
    backbone_target: int = 0
    nodes: list[NodeProcess] = field(default_factory=list)
    hub: ProxyHub | None = None
    extra_args: list[str] = field(default_factory=list)
    proxy_processes: int = 1
    waiting_for: str = ""
    backbone_links: dict[str, int] = field(default_factory=dict)
    """Each region's link to the backbone server (an index into the hub's links)."""
    nats: NatsServer | None = None
    stream: str = field(default_factory=lambda: f"BENCH{secrets.token_hex(4)}")
    """The backbone's JetStream stream: one per cluster."""
    """What :meth:`formed` saw missing last."""

    def region(self, i: int) -> str:
        regions = self.wan.regions
        return regions[i * len(regions) // self.pops]

    def start(self) -> None:
        shapes: list[tuple[float, float]] = []
        targets: list[int | str] = []  # a node index, or "backbone"
        args: list[list[str]] = [[] for _ in range(self.pops)]
        if self.topology == "mesh":
            links = [(i, j) for i in range(self.pops) for j in range(self.pops) if i != j]
            for i, j in links:
                shape = self.wan.shape(self.region(i), self.region(j))
                shapes.append((shape.delay_ms, shape.jitter_ms))
                targets.append(j)
            hub = ProxyHub(shapes, self.proxy_processes)
            for (i, _), port in zip(links, hub.ports, strict=True):
                args[i].append(f"--peer=http://127.0.0.1:{port}")
            for i in range(self.pops):
                args[i][:0] = ["--peer-discovery", "false"]
        else:
            delays, _ = hub_delays(self.wan)
            for i in range(self.pops):
                shape = self.wan.shape(self.region(i), self.region(i))
                shapes.append((shape.delay_ms, shape.jitter_ms))
                targets.append(i)
            for region in self.wan.regions:
                delay = delays[region]
                shapes.append((delay, delay * self.wan.jitter_fraction))
                targets.append("backbone")
            hub = ProxyHub(shapes, self.proxy_processes)
            self.backbone_links = {r: self.pops + k for k, r in enumerate(self.wan.regions)}
            inbound = hub.ports[: self.pops]
            to_backbone = dict(zip(self.wan.regions, hub.ports[self.pops :], strict=True))
            seeds: dict[str, int] = {}
            for i in range(self.pops):
                seeds.setdefault(self.region(i), i)
            first = seeds[self.region(0)]
            for i in range(self.pops):
                region = self.region(i)
                seed = seeds[region] if seeds[region] != i else first
                assert self.backbone_url is not None
                args[i] = [
                    *("--region", region, "--max-region-peers", "16"),
                    *("--advertise-url", f"http://127.0.0.1:{inbound[i]}"),
                    *self.backbone_args(self.backbone_url(to_backbone[region])),
                ]
                if seed != i:
                    args[i].append(f"--peer=http://127.0.0.1:{inbound[seed]}")
        self.hub = hub
        secure = self.security.node_args()
        self.nodes = [
            self.security.apply(
                NodeProcess(
                    self.work / f"n{i:02d}",
                    ["--node-name", f"pop-{i:02d}", *secure, *args[i], *self.extra_args],
                )
            )
            for i in range(self.pops)
        ]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda node: node.start(60), self.nodes))
        hub.forward(
            [
                self.backbone_target if target == "backbone" else self.nodes[int(target)].port
                for target in targets
            ]
        )

    def backbone_args(self, url: str) -> list[str]:
        if self.topology == "nats":
            return ["--backbone", url, "--backbone-stream", self.stream]
        return ["--upstream", url, "--upstream-schema", PG_SCHEMA]

    def formed(self) -> bool:
        """Every node sees the members it must, up, and its backbone (if any) up.

        With PostgreSQL between the regions, nothing carries membership or
        contact across them: only the node's own region counts there.
        """
        for i, node in enumerate(self.nodes):
            status = node.request("GET", "/v1/cluster/status").json()
            expected, states = self._members(i, status)
            self.waiting_for = f"{node.url}: {expected} members expected, seen {states}"
            if states.count("up") < expected:
                return False
            for service in ("backbone", "upstream"):
                if service in status and status[service]["state"] != "up":
                    self.waiting_for = f"{node.url}: {service} {status[service]}"
                    return False
        return True

    def _members(self, i: int, status: dict[str, Any]) -> tuple[int, list[str]]:
        """How many members node ``i`` must see up, and the states of those it sees."""
        members = [m for m in status["members"] if m["node_id"]]
        if self.topology == "pg":
            members = [m for m in members if m.get("region") == self.region(i)]
            expected = sum(self.region(j) == self.region(i) for j in range(self.pops)) - 1
        else:
            expected = self.pops - 1
        return expected, sorted(m["state"] for m in members)

    def shortfall(self) -> dict[str, Any]:
        """What keeps the cluster from having formed, over every node, now."""
        short, unanswered = [], 0
        for i, node in enumerate(self.nodes):
            try:
                status = node.request("GET", "/v1/cluster/status").json()
            except (OSError, ValueError):  # a node too busy to answer in 30 s counts as seeing none
                unanswered += 1
                status = {"members": []}
            expected, states = self._members(i, status)
            short.append(expected - states.count("up"))
        return {
            "nodes_not_answering": unanswered,
            "nodes_missing_members": sum(1 for n in short if n),
            "members_not_up_per_node_max": max(short),
            "members_not_up_total": sum(short),
            "last_seen_waiting_for": self.waiting_for[:300],
        }

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        if self.hub is not None:
            self.hub.close()


PG_SCHEMA = f"edgekv_bench_scale_{os.getpid()}"


def _nats_at(port: int) -> str:
    return f"nats://127.0.0.1:{port}"


def _dsn_at(port: int) -> str:
    """The test PostgreSQL's DSN, reached through the proxy on ``port``."""
    parts = urlsplit(DSN)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


# -- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def established_sockets(pid: int) -> int:
    """TCP connections of process ``pid`` in state ESTABLISHED."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "01":
                    established.add(parts[9])
    return len(inodes & established)


@contextlib.contextmanager
def cpu_window(nodes: list[NodeProcess], into: list[float]) -> Iterator[None]:
    """CPU per node (fraction of one core) over the block."""
    pids = [node.proc.pid for node in nodes if node.proc is not None]
    before = [cpu_seconds(pid) for pid in pids]
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    into[:] = [(cpu_seconds(pid) - b) / elapsed for pid, b in zip(pids, before, strict=True)]


def received_and_written(nodes: list[NodeProcess]) -> tuple[float, float]:
    """Changes received (every path) and local writes, summed over the nodes."""
    received = written = 0.0
    for node in nodes:
        text = node.request("GET", "/metrics").body.decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                name = sample.name.removesuffix("_total")
                if name in RECEIVED:
                    received += sample.value
                elif name == "edgekv_kv_writes":
                    written += sample.value
    return received, written


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    session: aiohttp.ClientSession, urls: list[str], rate: float, stop: asyncio.Event
) -> int:
    """Open-loop writes at ``rate`` per second over all PoPs until ``stop``; returns count."""
    rng = random.Random(1)
    sent, started = 0, time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    failed: list[str] = []

    async def put(url: str, value: bytes) -> None:
        async with session.put(url, data=value) as answer:
            if answer.status != 200:
                failed.append(f"{url}: {answer.status} {await answer.text()}")

    while not stop.is_set():
        due = started + sent / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        url = f"{rng.choice(urls)}/v1/kv/load/k{rng.randrange(1000)}"
        task = asyncio.create_task(put(url, rng.randbytes(100)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
    await asyncio.gather(*pending)
    if failed:
        raise AssertionError(f"{len(failed)} load writes failed, first {failed[0]}")
    return sent


class Observers:
    """A log-tailing stream on every node: when each probe key commits there.

    An observer is a peer stream without a URL (a tool, not a member): the node
    sends it every change it commits, own writes and applied ones alike, so a
    key's arrival there is the moment it became readable at that PoP. The
    streams go to the nodes directly, not through the WAN proxies.
    """

    def __init__(self, cluster: ScaleCluster) -> None:
        self.cluster = cluster
        self.arrivals: dict[bytes, dict[int, float]] = {}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, session: aiohttp.ClientSession) -> None:
        ready = [asyncio.Event() for _ in self.cluster.nodes]
        self.tasks = [
            asyncio.create_task(self._tail(session, i, node.url, ready[i]))
            for i, node in enumerate(self.cluster.nodes)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 60)

    async def _tail(
        self, session: aiohttp.ClientSession, i: int, url: str, ready: asyncio.Event
    ) -> None:
        headers = {SECRET_HEADER: self.cluster.security.secret}
        async with session.ws_connect(url + STREAM_PATH, headers=headers) as ws:
            welcome = decode(await ws.receive_bytes())
            assert isinstance(welcome, Welcome)
            me = OBSERVER_BASE + i
            await ws.send_bytes(
                encode(Hello(me, 1, "observer", "", welcome.head, welcome.incarnation))
            )
            ready.set()
            async for message in ws:
                batch = decode(message.data)
                if not isinstance(batch, Batch):
                    continue
                now = time.monotonic()
                for change in batch.changes:
                    if change.ns == "probe":
                        self.arrivals.setdefault(change.key, {}).setdefault(i, now)
                        self.changed.set()

    async def everywhere(self, key: bytes, within: float) -> float | None:
        """When ``key`` had committed at every node (None: not ``within`` seconds)."""
        deadline = time.monotonic() + within
        while len(self.arrivals.get(key, {})) < len(self.cluster.nodes):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return max(self.arrivals[key].values())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def probe(
    session: aiohttp.ClientSession, observers: Observers, key: str, url: str
) -> float | None:
    """Write at ``url``; the time (ms) from its acknowledgement until every PoP committed
    it, None if some PoP did not within ``PROBE_TIMEOUT``."""
    async with session.put(f"{url}/v1/kv/probe/{key}", data=secrets.token_bytes(16)) as answer:
        assert answer.status == 200, await answer.text()
    acked = time.monotonic()
    everywhere = await observers.everywhere(key.encode(), PROBE_TIMEOUT)
    return None if everywhere is None else max(0.0, everywhere - acked) * 1000


async def loaded_phase(
    cluster: ScaleCluster, rate: float, seconds: float, probes: int
) -> dict[str, Any]:
    nodes = cluster.nodes
    urls = [node.url for node in nodes]
    headers = {"Authorization": f"Bearer {cluster.security.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        stop = asyncio.Event()
        received0, written0 = await asyncio.to_thread(received_and_written, nodes)
        cpu: list[float] = []
        assert cluster.hub is not None
        hub_cpu_before, started = cluster.hub.cpu_seconds(), time.monotonic()
        with cpu_window(nodes, cpu):
            writer = asyncio.create_task(load(session, urls, rate, stop))
            await asyncio.sleep(seconds)
            stop.set()
            sent = await writer
        hub_seconds = cluster.hub.cpu_seconds() - hub_cpu_before
        hub_cpu = hub_seconds / (time.monotonic() - started)
        await asyncio.sleep(2)  # the last writes arrive everywhere before the counters are read
        received1, written1 = await asyncio.to_thread(received_and_written, nodes)
        # Probes under the same load, after the CPU window (the observers are load too):
        # PROBE_RATE a second, each from its acknowledgement until it is everywhere.
        observers = Observers(cluster)
        await observers.start(session)
        stop = asyncio.Event()
        writer = asyncio.create_task(load(session, urls, rate, stop))
        rng = random.Random(2)
        started = time.monotonic()
        timings = []
        try:
            for i in range(probes):
                await asyncio.sleep(max(0.0, started + i / PROBE_RATE - time.monotonic()))
                url = rng.choice(urls)
                timings.append(asyncio.create_task(probe(session, observers, f"p{i}", url)))
            took = await asyncio.gather(*timings)
        finally:
            stop.set()
            await writer
            await observers.stop()
        late = sum(1 for t in took if t is None)
        # A probe not everywhere in time counts at the timeout: the percentiles are lower bounds.
        times = [PROBE_TIMEOUT * 1000 if t is None else t for t in took]
    writes = written1 - written0
    return {
        "writes_per_second": round(sent / seconds, 1),
        "changes_received_per_write_per_node": round(
            (received1 - received0) / writes / (len(nodes) - 1), 3
        ),
        "cpu_loaded_per_node_mean": round(statistics.fmean(cpu), 4),
        "cpu_loaded_per_node_max": round(max(cpu), 4),
        # The proxies relay every byte: near one core per proxy process, they and
        # not the nodes set the pace.
        "cpu_loaded_proxy_hub": round(hub_cpu, 3),
        "propagation_p50_ms": round(percentile(times, 0.5), 1),
        "propagation_p99_ms": round(percentile(times, 0.99), 1),
        "propagation_max_ms": round(max(times), 1),
        "probes": len(times),
        "probes_not_everywhere_in_time": late,
    }


FAULTS = {
    "mesh": ("kill",),
    "nats": ("region", "backbone", "kill"),
    "pg": ("region", "kill"),
}
"""The faults run per topology: a region cut from the backbone, the NATS server
stopped (the shared PostgreSQL is not), a node SIGKILLed and restarted."""


def fault_keys(node: NodeProcess, ns: str) -> set[str]:
    """The keys of ``ns`` a node holds, straight from its SQLite file."""
    uri = f"file:{node.data_dir / 'edgekv.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT key FROM kv WHERE ns = ?", (ns,)).fetchall()
    return {key.decode() if isinstance(key, bytes) else key for (key,) in rows}


async def fault_phase(
    cluster: ScaleCluster, fault: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Writes of new keys at ``rate`` over all PoPs while ``fault`` lasts ``seconds``;
    after the heal, the time until every PoP holds every acknowledged write."""
    nodes, hub = cluster.nodes, cluster.hub
    assert hub is not None
    ns = f"fault-{fault}"
    rng = random.Random(fault)
    acked: list[str] = []
    victim = rng.randrange(len(nodes))
    region = cluster.region(victim)
    headers = {"Authorization": f"Bearer {cluster.security.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        stop = asyncio.Event()

        async def put(i: int) -> None:
            key = f"w{i:06d}"
            url = f"{rng.choice(nodes).url}/v1/kv/{ns}/{key}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.put(url, data=b"v", timeout=aiohttp.ClientTimeout(5)) as a:
                    if a.status == 200:
                        acked.append(key)

        async def writes() -> None:
            started, sent, tasks = time.monotonic(), 0, []
            while not stop.is_set():
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
                tasks.append(asyncio.create_task(put(sent)))
                sent += 1
            await asyncio.gather(*tasks)

        writer = asyncio.create_task(writes())
        await asyncio.sleep(1)
        if fault == "region":
            label = f"region {region} cut from the backbone"
            hub.cut([cluster.backbone_links[region]])
        elif fault == "backbone":
            label = "NATS server stopped"
            assert cluster.nats is not None
            cluster.nats.stop()
        else:
            label = f"pop-{victim:02d} SIGKILLed"
            nodes[victim].kill()
        await asyncio.sleep(seconds)
        if fault == "region":
            hub.heal([cluster.backbone_links[region]])
        elif fault == "backbone":
            assert cluster.nats is not None
            await asyncio.to_thread(cluster.nats.start)
        else:
            await asyncio.to_thread(nodes[victim].start, 60)
        healed = time.monotonic()
        await asyncio.sleep(1)
        stop.set()
        await writer
    wanted = set(acked)
    pending = list(range(len(nodes)))
    deadline = healed + 300
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if not wanted <= fault_keys(nodes[i], ns)]
        if pending:
            await asyncio.sleep(0.1)
    missing = max((len(wanted - fault_keys(node, ns)) for node in nodes), default=0)
    return {
        "fault": f"{label} for {seconds:g} s under {rate:g} writes/s",
        "acknowledged": len(wanted),
        "lost": missing,
        "converged_after_heal_s": None if pending else round(time.monotonic() - healed, 1),
    }


def idle_phase(cluster: ScaleCluster, seconds: float) -> dict[str, Any]:
    cpu: list[float] = []
    with cpu_window(cluster.nodes, cpu):
        time.sleep(seconds)
    pids = [node.proc.pid for node in cluster.nodes if node.proc is not None]
    connections = [established_sockets(pid) for pid in pids]
    rss = [node.rss_bytes() / 2**20 for node in cluster.nodes]
    return {
        "cpu_idle_per_node_mean": round(statistics.fmean(cpu), 4),
        "cpu_idle_per_node_max": round(max(cpu), 4),
        "connections_per_node_mean": round(statistics.fmean(connections), 1),
        "connections_per_node_max": max(connections),
        "rss_mib_per_node_mean": round(statistics.fmean(rss), 1),
        "rss_mib_per_node_max": round(max(rss), 1),
    }


# -- the run --------------------------------------------------------------------------------


def serve_flags() -> str:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout


def run_topology(args: argparse.Namespace, topology: str, pops: int, work: Path) -> dict[str, Any]:
    wan = wan_model(args.regions)
    security = Security(work / "security")
    with contextlib.ExitStack() as stack:
        cluster = ScaleCluster(work / topology, pops, wan, topology, security)
        cluster.proxy_processes = args.proxy_processes
        if topology == "nats":
            # A NATS server of the run's own: the machine's shared one stays untouched.
            nats = cluster.nats = NatsServer(work / "nats").start()
            stack.callback(nats.stop)
            cluster.backbone_url = _nats_at
            cluster.backbone_target = nats.port
        elif topology == "pg":
            cluster.backbone_url, cluster.backbone_target = _dsn_at, server_port()
            stack.callback(query, f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        stack.callback(cluster.close)
        started = time.monotonic()
        cluster.start()
        figures: dict[str, Any] = {"topology": topology, "pops": pops}
        try:
            wait_for(cluster.formed, args.form_timeout, f"{topology}: every member up")
            figures["formed_s"] = round(time.monotonic() - started)
        except AssertionError:
            # Not forming is a finding about the topology at this size (on this
            # machine), not a reason to leave it out: it is measured as it is.
            figures["formed_s"] = None
            figures["not_formed"] = cluster.shortfall()
            print(f"{topology}: not formed within {args.form_timeout:g} s: "
                  f"{json.dumps(figures['not_formed'])}", flush=True)  # fmt: skip
        figures |= idle_phase(cluster, args.idle_seconds)
        if args.load_seconds > 0:
            figures |= asyncio.run(loaded_phase(cluster, args.rate, args.load_seconds, args.probes))
        if args.fault_seconds > 0:
            figures["faults"] = [
                asyncio.run(fault_phase(cluster, fault, args.rate, args.fault_seconds))
                for fault in FAULTS[topology]
            ]
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pops", type=int, default=48)
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--topologies", default="mesh,nats,pg")
    parser.add_argument("--rate", type=float, default=100.0, help="background writes per second")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--baseline-pops", type=int, default=3, help="0: no baseline run")
    parser.add_argument("--sim-pops", default="300,1000", help="empty: no simulator runs")
    parser.add_argument("--form-timeout", type=float, default=180.0)
    parser.add_argument(
        "--fault-seconds",
        type=float,
        default=30.0,
        help="length of each fault (region cut, backbone stopped, SIGKILL); 0: no faults",
    )
    parser.add_argument(
        "--proxy-processes", type=int, default=1, help="processes the latency proxies run in"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    flags = serve_flags()
    wan = wan_model(args.regions)
    delays, error = hub_delays(wan)
    rtts = sorted({wan.rtt_ms(a, b) for a in wan.regions for b in wan.regions})
    print(f"WAN: {args.regions} regions, RTTs {rtts} ms")
    rounded = {region: round(delay, 1) for region, delay in delays.items()}
    print(f"backbone server delay per region (ms one way): {rounded}, worst error {error:.1f}")
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "real": [],
        "sim": [],
    }
    with tempfile.TemporaryDirectory(prefix="edgekv-scale-") as tmp:
        work = Path(tmp)
        runs = [(t, args.pops) for t in args.topologies.split(",") if t]
        if args.baseline_pops:
            runs.append(("mesh", args.baseline_pops))
        for topology, pops in runs:
            missing = [flag for flag in NEEDS[topology] if flag not in flags]
            if missing:
                print(f"SKIPPED {topology}: this edgekv serve has no {', '.join(missing)}")
                results["real"].append({"topology": topology, "pops": pops, "skipped": missing})
                continue
            print(f"-- {topology}, {pops} PoPs", flush=True)
            baseline = pops == args.baseline_pops and pops != args.pops
            idle_only = {"load_seconds": 0.0, "fault_seconds": 0.0}
            one = argparse.Namespace(**{**vars(args), **idle_only}) if baseline else args
            figures = run_topology(one, topology, pops, work / f"{topology}-{pops}")
            print(json.dumps(figures), flush=True)
            results["real"].append(figures)
    for pops in [int(p) for p in args.sim_pops.split(",") if p]:
        started = time.monotonic()
        figures = simulate(pops, 20).summary()
        figures["wall_s"] = round(time.monotonic() - started, 1)
        print(json.dumps(figures), flush=True)
        results["sim"].append(figures)
    RESULTS.mkdir(exist_ok=True)
    output = args.output or RESULTS / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps(results, indent=2))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
