"""A node: one PoP's store, replication, upstream, authentication and metrics together.

The node decides where a write or read goes: a strong namespace's go through
PostgreSQL (the upstream connector), every other one's to the local store.
It knows nothing of HTTP; :mod:`edgekv.http` parses requests into its calls
and turns its answers and errors into responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from edgekv.auth import Authenticator, LoopbackGuard
from edgekv.config import Config
from edgekv.metrics import Metrics
from edgekv.peers.replicator import Replicator
from edgekv.ratelimit import RateLimiter
from edgekv.runtime_tokens import RuntimeTokens
from edgekv.skewed_clock import skewed_clock_for
from edgekv.store.backup import check_restored
from edgekv.store.broken_merge import KEEP_LOCAL
from edgekv.store.crdts import CounterWrite
from edgekv.store.kv import Entry, Write, WriteResult
from edgekv.store.merge import LAST_WRITER_WINS
from edgekv.store.store import Store
from edgekv.upstream.connector import Upstream
from edgekv.upstream.strong import Condition
from edgekv.watch import metrics as watch_metrics
from edgekv.watch.crdt_kinds import CounterKind, SetKind
from edgekv.watch.fanout_link import FanOutLink
from edgekv.watch.hub import WatchHub, WatchLimits
from edgekv.watch.kinds import DocumentKind, KeyValueKind

log = logging.getLogger(__name__)


class StrongNamespaceRequired(Exception):
    """An operation only a strong namespace keeps (a condition, a transaction, a strong read)."""

    def __init__(self, ns: str, what: str) -> None:
        """``what`` names the operation, as the caller sent it."""
        super().__init__(
            f"{what} needs a strong namespace; {ns!r} is eventually consistent "
            "(declare it in strong_namespaces, with an upstream)"
        )


class Node:
    """Everything one running PoP owns. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        replicator: Replicator,
        upstream: Upstream | None,
    ) -> None:
        """Assemble a node from its parts; prefer :meth:`open`."""
        self.config = config
        self.store = store
        self.documents = store.documents
        self.runtime_tokens = RuntimeTokens(store)
        """Tokens created at run time, kept (and replicated) in the node's database."""
        self.auth = Authenticator(config.tokens, runtime=self.runtime_tokens.lookup)
        self.rate_limiter = RateLimiter(config.rate_limit, config.rate_limit_burst)
        self.loopback_guard = LoopbackGuard()
        """Protected mode's Host/Origin check, with the verdicts it remembers."""
        self.metrics = metrics
        self.replicator = replicator
        self.upstream = upstream
        """The PostgreSQL connector, when ``upstream`` is configured."""
        reads = store.watch_reads
        self.watch = WatchHub(
            store,
            {
                "kv": KeyValueKind(reads, config.watch_value_bytes),
                "docs": DocumentKind(reads, config.watch_value_bytes),
                "counters": CounterKind(reads, store.crdts.counter),
                "sets": SetKind(reads, store.crdts.member),
            },
            WatchLimits(
                config.max_watchers,
                config.max_watchers_per_token,
                config.watch_buffer_bytes,
                config.watch_heartbeat,
            ),
            self.covered_now,
        )
        """Watch streams: the live tail of the log fanned out to every watcher."""
        self.watch_fanout: FanOutLink | None = None
        """The watch fan-out process (setting ``watch_fanout``), once started."""
        watch_metrics.register(self.watch, metrics.registry)
        self.read = store.get
        """``read(ns, key)``: the local (eventual) value of a key, or None. The store's
        own method, not a wrapper: it is the whole of the hot GET path."""

    @classmethod
    async def open(cls, config: Config, url: str) -> Node:
        """Open the node's database (creating it on first start) and build the whole node.

        ``url`` is where the node answers, advertised to peers unless
        ``advertise_url`` is set. Nothing runs in the background until
        :meth:`start`. Raises :class:`~edgekv.store.datadir.DataDirError`
        when another node holds the directory, the database is empty
        (without ``allow_new_node``) or too damaged to open.
        """
        check_restored(Path(config.data_dir), config.tombstone_horizon)
        store = Store(
            config.data_dir,
            synchronous=config.synchronous,
            max_clock_offset_ms=int(config.max_clock_offset * 1000),
            read_cache_entries=config.read_cache_entries,
            wall_clock_ms=skewed_clock_for(
                config.test_clock_offset_ms, config.test_clock_offset_file
            ),
            merge_statement=KEEP_LOCAL if config.test_broken_merge else LAST_WRITER_WINS,
            allow_new_node=config.allow_new_node,
        )
        try:
            metrics = Metrics(store)
            replicator = Replicator(config, store, url, metrics.registry)
            upstream = None
            if config.upstream:
                upstream = Upstream(config, store, metrics.registry)
                # Tombstones stay until the upstream has them too: else it could
                # hand the deleted value back.
                replicator.ack_floors.append(upstream.acknowledged_seq)
        except BaseException:
            store.close()
            raise
        _warn_of_dot_names(store)
        # The whole file is checked while the node serves: at open it would cost
        # seconds per GB from a cold disk (edgekv.store.faults).
        store.health.start_check()
        return cls(config, store, metrics, replicator, upstream)

    def covered_now(self) -> dict[int, int]:
        """Origin -> the stamp up to which all its writes are in this store (or superseded).

        This node's own writes up to its origin mark; each peer's up to the
        mark of the newest batch committed from its own stream; none past a
        change held back for clock skew (committed, not yet in ``kv``). What
        watch tokens claim (:mod:`edgekv_replication.watch_tokens`).
        """
        store = self.store
        vector = dict(self.replicator.relays.marks)
        own = store.origin_marks.at(store.seq)
        if own is not None:
            vector[store.node_id] = own
        held = store.watch_reads.held_floor()
        if held is not None:
            vector = {origin: min(hlc, held - 1) for origin, hlc in vector.items()}
        return vector

    async def start(self) -> None:
        """Start the background work: the upstream connector, then replication."""
        loop = asyncio.get_running_loop()
        self.watch.start(loop)
        if self.config.watch_fanout:
            self.watch_fanout = FanOutLink(
                self.watch, self.store.path, self.store.node_id, self.config.watch_value_bytes
            )
            self.watch_fanout.start(loop)
        if self.upstream is not None:
            await self.upstream.start()
        await self.replicator.start()

    async def stop_replication(self) -> None:
        """Close the peer streams and stop pulling (before the HTTP server stops:
        an open stream would hold its shutdown)."""
        self.watch.stop()
        if self.watch_fanout is not None:
            await self.watch_fanout.close()  # its streams handed back and ended first
        await self.replicator.stop()

    async def close(self) -> None:
        """Stop the upstream connector, commit queued writes and close the database."""
        try:
            if self.upstream is not None:
                await self.upstream.stop()
        finally:
            self.store.close()

    def require_strong(self, ns: str, what: str) -> Upstream:
        """The connector of strong namespace ``ns``, or raise :class:`StrongNamespaceRequired`."""
        upstream = self.upstream
        if upstream is None or not upstream.is_strong(ns):
            raise StrongNamespaceRequired(ns, what)
        return upstream

    async def write(
        self, ns: str, writes: Sequence[Write], conditions: Sequence[Condition] = ()
    ) -> WriteResult:
        """Apply ``writes`` atomically: in PostgreSQL first in a strong namespace, else locally.

        Conditions are kept only in a strong namespace (:class:`StrongNamespaceRequired`
        elsewhere); a strong write raises the upstream's errors
        (:class:`~edgekv.upstream.strong.PreconditionFailed`,
        :class:`~edgekv.upstream.connector.UpstreamUnavailable`,
        :class:`~edgekv.upstream.strong.InvalidUpstreamRow`).
        """
        upstream = self.upstream
        if upstream is not None and upstream.is_strong(ns):
            return await upstream.strong_write(ns, writes, conditions)
        if conditions:
            raise StrongNamespaceRequired(ns, "a conditional write")
        return await self.store.write(ns, writes)

    async def read_strong(self, ns: str, key: bytes) -> Entry | None:
        """A linearizable read of ``(ns, key)`` from PostgreSQL (strong namespaces only)."""
        return await self.require_strong(ns, "consistency=strong").strong_read(ns, key)

    # -- counters (edgekv_replication.counters) --------------------------------------

    def counter_value(self, ns: str, key: bytes) -> tuple[int, tuple[int, int] | None]:
        """The counter's value and version (None: never written) as this PoP holds it."""
        state = self.store.crdts.counter(ns, key)
        return state.value, state.version

    async def counter_value_strong(self, ns: str, key: bytes) -> tuple[int, tuple[int, int] | None]:
        """The counter's value and version read from PostgreSQL (strong namespaces only)."""
        upstream = self.require_strong(ns, "consistency=strong")
        return await upstream.strong_counter_read(ns, key)

    async def counter_add(
        self,
        ns: str,
        key: bytes,
        amount: int,
        expiration: int | None = None,
        low: int | None = None,
        high: int | None = None,
    ) -> CounterWrite:
        """Add ``amount``: at this PoP, or in a strong namespace atomically in PostgreSQL,
        where ``low``/``high`` bound the value (:class:`CounterOutOfBounds`); bounds
        elsewhere raise :class:`StrongNamespaceRequired`."""
        upstream = self.upstream
        if upstream is not None and upstream.is_strong(ns):
            return await upstream.strong_counter_add(ns, key, amount, expiration, low, high)
        if low is not None or high is not None:
            raise StrongNamespaceRequired(ns, "a bounded counter add (min/max)")
        return await self.store.crdts.counter_add(ns, key, amount, expiration)

    async def counter_reset(self, ns: str, key: bytes) -> WriteResult:
        """Reset the counter: remove every contribution this PoP (or, strong, PostgreSQL) holds."""
        upstream = self.upstream
        if upstream is not None and upstream.is_strong(ns):
            return await upstream.strong_counter_reset(ns, key)
        return await self.store.crdts.counter_reset(ns, key)


def _warn_of_dot_names(store: Store) -> None:
    """Say so when the database holds names '.' or '..', which a release before this
    one took: no route reaches them now, and a peer refuses a batch holding one."""
    names = store.browse.dot_names()
    if names:
        log.warning(
            "this database holds data under the name(s) %s, which are no longer accepted "
            "(400 invalid_namespace): no route reads or deletes it, and a peer of this "
            "version refuses a batch of this node's log holding it; see 'Names . and ..' "
            "in docs/operations.md",
            ", ".join(repr(name) for name in names),
        )
