"""The system under test: N real ``edgekv serve`` processes with a proxy on every link.

Node ``i`` pulls from node ``j`` through its own :class:`~testkit.proxy.TcpProxy`
``links[i, j]``, so a partition is a set of cut proxies. When a strong
workload runs, every node also reaches PostgreSQL through a proxy of its own
(``pg_links[i]``), and the cluster shares one schema made for the run.
Clock offsets are written to a file per node and announced with SIGUSR1
(the test-only setting ``test_clock_offset_file``).

With ``topology="regions"`` the nodes sit in the regions of the WAN model
(:mod:`testkit.wan`): peer links only within a region, shaped by it (2 ms
RTT), and a NATS JetStream backbone of the run's own
(:class:`~testkit.nats_server.NatsServer`) between the regions, each node
reaching it through a proxy of its own delayed by its region's share of the
inter-region RTTs (:func:`testkit.wan.hub_delays`), so a region can
be cut from the backbone and the server stopped. By default the nodes run
the way a multi-host deployment must: an admin token in a TOML config (every
client of the run carries it) and a cluster secret read from a file.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testkit.nats_server import NatsServer
from testkit.pg import via
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.security import Security
from testkit.wan import LinkShape, WanModel, hub_delays, wan_model


@dataclass
class DbOptions:
    """How the nodes are started."""

    nodes: int = 5
    upstream_dsn: str | None = None
    """PostgreSQL of the upstream; None: no upstream (no strong workload)."""
    upstream_schema: str = ""
    strong_namespaces: tuple[str, ...] = ()
    tombstone_horizon: float = 15.0
    tombstone_gc_interval: float = 0.5
    max_clock_offset: float = 0.5
    broken_merge: bool = False
    extra_args: tuple[str, ...] = ()
    secure: bool = True
    """Tokens and a cluster secret (False: the trusting loopback configuration)."""
    topology: str = "mesh"
    """``mesh``: every node pulls from every other; ``regions``: see the module text."""
    regions: int = 2
    """Regions of the ``regions`` topology (nodes dealt in blocks, as in bench.scale)."""


@dataclass
class Db:
    """The running cluster; every method is safe to call from the nemesis thread."""

    base: Path
    options: DbOptions
    nodes: list[NodeProcess] = field(default_factory=list)
    links: dict[tuple[int, int], TcpProxy] = field(default_factory=dict)
    pg_links: list[TcpProxy] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)
    security: Security | None = None
    backbone_links: list[TcpProxy] = field(default_factory=list)
    """Node ``i``'s link to the NATS server (``regions`` topology)."""
    nats: NatsServer | None = None
    wan: WanModel | None = None

    def region(self, i: int) -> str:
        """Node ``i``'s region (``regions`` topology)."""
        assert self.wan is not None
        regions = self.wan.regions
        return regions[i * len(regions) // self.options.nodes]

    @property
    def token(self) -> str | None:
        """The bearer token every client of the run sends (None without tokens)."""
        return self.security.token if self.security else None

    def start(self) -> None:
        """Start every node (full mesh of proxied links) and wait until they serve."""
        n = self.options.nodes
        if self.options.secure:
            self.security = Security(self.base / "security")
        if self.options.topology == "regions":
            self._start_backbone(n)
        else:
            self.links = {(i, j): TcpProxy() for i in range(n) for j in range(n) if i != j}
        if self.options.upstream_dsn is not None:
            port = urlsplit(self.options.upstream_dsn).port or 5432
            self.pg_links = [TcpProxy(port) for _ in range(n)]
        for i in range(n):
            self.clock_file(i).parent.mkdir(parents=True, exist_ok=True)
            self.clock_file(i).write_text("0")
            node = NodeProcess(self.base / f"n{i}", self._args(i))
            self.nodes.append(self.security.apply(node) if self.security else node)
        for node in self.nodes:
            node.start()
        for (_, j), proxy in self.links.items():
            proxy.target = self.nodes[j].port

    def _start_backbone(self, n: int) -> None:
        """Regions, their shaped in-region links, the NATS server and a link to it per node."""
        self.wan = wan = wan_model(self.options.regions)
        self.links = {
            (i, j): TcpProxy(shape=wan.shape(self.region(i), self.region(j)))
            for i in range(n)
            for j in range(n)
            if i != j and self.region(i) == self.region(j)
        }
        self.nats = NatsServer(self.base / "nats").start()
        delays, _ = hub_delays(wan)
        self.backbone_links = [
            TcpProxy(
                self.nats.port,
                LinkShape(delays[self.region(i)], delays[self.region(i)] * wan.jitter_fraction),
            )
            for i in range(n)
        ]

    def _args(self, i: int) -> list[str]:
        o = self.options
        peers = [f"--peer={p.url}" for (a, _), p in self.links.items() if a == i]
        if o.topology == "regions":
            peers += [
                f"--region={self.region(i)}",
                f"--backbone=nats://127.0.0.1:{self.backbone_links[i].port}",
                f"--backbone-stream=JEPSEN{self.nats.port if self.nats else 0}",
            ]
        args = [
            "--peer-discovery=false",
            f"--node-name=n{i}",
            *peers,
            f"--tombstone-horizon={o.tombstone_horizon}",
            f"--tombstone-gc-interval={o.tombstone_gc_interval}",
            f"--max-clock-offset={o.max_clock_offset}",
            f"--test-clock-offset-file={self.clock_file(i)}",
            "--log-level=warning",
            *(self.security.node_args() if self.security else []),
            *o.extra_args,
        ]
        if o.broken_merge:
            args.append("--test-broken-merge=true")
        if o.upstream_dsn is not None:
            args += [
                f"--upstream={via(self.pg_links[i], o.upstream_dsn)}",
                f"--upstream-schema={o.upstream_schema}",
                *[f"--strong-namespaces={ns}" for ns in o.strong_namespaces],
            ]
        return args

    def clock_file(self, i: int) -> Path:
        """Where node ``i`` reads its clock offset."""
        return self.base / "clocks" / f"n{i}"

    @property
    def urls(self) -> list[str]:
        """Each node's API URL (stable across restarts)."""
        return [node.url for node in self.nodes]

    # -- faults -----------------------------------------------------------------

    def cut(self, links: Iterable[tuple[int, int]]) -> None:
        """Cut the given pull links ``(puller, server)`` (those that exist: with regions,
        only links within a region do)."""
        for link in links:
            if link in self.links:
                self.links[link].cut()

    def cut_region(self, region: str) -> None:
        """Cut ``region``'s nodes off the backbone (their peer links stay)."""
        for i, proxy in enumerate(self.backbone_links):
            if self.region(i) == region:
                proxy.cut()

    def stop_backbone(self) -> None:
        """Stop the NATS server (JetStream keeps its store for the restart)."""
        if self.nats is not None and self.nats.proc is not None:
            self.nats.stop()

    def heal_backbone(self) -> None:
        """The NATS server running and every node's link to it open."""
        if self.nats is not None and self.nats.proc is None:
            self.nats.start()
        for proxy in self.backbone_links:
            proxy.heal()

    def heal_network(self) -> None:
        """Let every peer link through again."""
        for proxy in self.links.values():
            proxy.heal()

    def cut_upstream(self, nodes: Iterable[int]) -> None:
        """Make PostgreSQL unreachable from ``nodes``."""
        for i in nodes:
            self.pg_links[i].cut()

    def heal_upstream(self) -> None:
        """Make PostgreSQL reachable from every node again."""
        for proxy in self.pg_links:
            proxy.heal()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (no clean shutdown)."""
        self.paused.discard(i)
        self.killed.add(i)
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        """Start a killed node again on its port."""
        if i in self.killed:
            self.nodes[i].start(timeout=60)
            self.killed.discard(i)

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i``."""
        if i not in self.killed and self._signal(i, signal.SIGSTOP):
            self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT node ``i``."""
        if i in self.paused:
            self._signal(i, signal.SIGCONT)
            self.paused.discard(i)

    def set_clock_offset(self, i: int, offset_ms: int) -> None:
        """Shift node ``i``'s wall clock by ``offset_ms`` (takes effect at once)."""
        path = self.clock_file(i)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(str(offset_ms))
        temporary.replace(path)
        if i not in self.killed:
            self._signal(i, signal.SIGUSR1)

    def _signal(self, i: int, sig: int) -> bool:
        proc = self.nodes[i].proc
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(sig)
        return True

    def heal_all(self) -> None:
        """Undo every fault: clocks, processes, network, upstream."""
        for i in range(len(self.nodes)):
            self.set_clock_offset(i, 0)
            self.resume(i)
        for i in sorted(self.killed):
            self.restart(i)
        self.heal_network()
        self.heal_upstream()
        self.heal_backbone()

    def close(self) -> None:
        """Stop every node and proxy."""
        for i in list(self.paused):
            self.resume(i)
        for i, node in enumerate(self.nodes):
            node.kill()
            (self.base / f"n{i}.log").write_text("".join(node.output))
        for proxy in [*self.links.values(), *self.pg_links, *self.backbone_links]:
            proxy.close()
        if self.nats is not None:
            self.nats.stop()

    # -- observation --------------------------------------------------------------

    def read_db(self, i: int, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query on node ``i``'s SQLite file, read-only (works while it is stopped)."""
        uri = f"file:{self.nodes[i].data_dir / 'edgekv.db'}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    def request(
        self, i: int, method: str, path: str, body: Any = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        """One JSON request to node ``i``: ``(status, decoded body or None)``."""
        parts = urlsplit(self.nodes[i].url)
        conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=payload, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
            with contextlib.suppress(ValueError):
                return answer.status, json.loads(raw)
            return answer.status, None
        finally:
            conn.close()

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until every node answers its status route."""
        deadline = time.monotonic() + timeout
        for i in range(len(self.nodes)):
            while True:
                try:
                    if self.request(i, "GET", "/v1/cluster/status")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node n{i} does not answer after healing")
                time.sleep(0.1)
