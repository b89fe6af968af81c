"""The upstream connector: one more peer, whose other end is PostgreSQL.

Two loops share a small connection pool:

- **push**: local changes with seq > the push cursor go up in batches, one
  last-writer-wins statement per batch; then the connector numbers what it
  pushed (the sequencer, :mod:`edgekv.store.pg.statements`) so other PoPs see it.
  The cursor advances only after PostgreSQL committed, so a crash or an outage
  re-sends rather than skips (a re-sent change is a no-op there).
- **pull**: every ``upstream_poll_interval`` the connector numbers rows that
  others committed and applies the upstream log after its cursor, exactly as
  a batch from a peer: one local transaction with the cursor. Every row is
  first held to the limits HTTP input is (:mod:`edgekv_replication.intake`).
  The rows before an invalid one are applied, the invalid one is not, and the
  pull stops there -- logged once, shown as ``last_error`` in status -- and
  retries every poll until the row is repaired or deleted in PostgreSQL.
  Stop rather than skip: a row someone committed is never dropped silently,
  and every PoP stops at the same row, so none diverges meanwhile. Pushes and
  strong operations go on.

Cursors are keyed by the upstream's id (made with its schema), so a wiped and
recreated upstream is synced from zero. Strong operations
(:mod:`edgekv.upstream.strong`) run on the same pool, within
``upstream_timeout``, and fail with :class:`UpstreamUnavailable` otherwise.
The rows they return are held to the same limits as pulled rows; an invalid
one fails the operation with :class:`strong.InvalidUpstreamRow` (logged).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from edgekv.config import Config
from edgekv.store.crdts import CounterWrite
from edgekv.store.kv import Entry, Write, WriteResult
from edgekv.store.pg.connection import CONNECTION_ERRORS, PgConnection
from edgekv.store.pg.schema import migrate
from edgekv.store.pg.statements import PUSH_COLUMNS, Statements
from edgekv.store.store import Store
from edgekv.tasks import cancel_and_wait
from edgekv.upstream import strong, strong_counters
from edgekv.upstream.batching import UpsertBatcher
from edgekv_replication import counters
from edgekv_replication.changes import Change
from edgekv_replication.documents import is_document, merge_document_changes
from edgekv_replication.intake import Refused, check_change, limits_of
from edgekv_replication.session import PeerCursor

log = logging.getLogger(__name__)

T = TypeVar("T")

PUSH_BATCH = 2000
PULL_PAGE = 2000
RETRY_MIN, RETRY_MAX = 0.05, 2.0
ACK_PERSIST_INTERVAL = 1.0
NAMESPACE_REFRESH_INTERVAL = 1.0
SERIALIZATION_RETRIES = 50


class UpstreamUnavailable(RuntimeError):
    """PostgreSQL could not be reached (or did not answer) within ``upstream_timeout``."""


def redacted(dsn: str) -> str:
    """The DSN without its password, fit for logs and status."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class UpstreamMetrics:
    """Counters of the connector, in the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the metrics in ``registry``."""
        self.pushed = Counter(
            "edgekv_upstream_changes_pushed", "Changes pushed to the upstream.", registry=registry
        )
        self.pulled = Counter(
            "edgekv_upstream_changes_pulled",
            "Changes pulled from the upstream and applied.",
            registry=registry,
        )
        self.received = Counter(
            "edgekv_upstream_changes_received",
            "Rows read from the upstream log (entries and documents), applied or not: "
            "what edgekv_repl_changes_received counts for a peer stream.",
            registry=registry,
        )
        self.pull_pages = Counter(
            "edgekv_upstream_pull_pages",
            "Pages of rows read from the upstream log (each at most upstream_pull_bytes "
            "of values, plus one value).",
            registry=registry,
        )
        self.strong = Counter(
            "edgekv_upstream_strong_operations",
            "Strong operations by outcome (ok, precondition_failed, unavailable, "
            "upstream_invalid).",
            ["outcome"],
            registry=registry,
        )
        self.up = Gauge(
            "edgekv_upstream_up", "1 while the upstream is reachable.", registry=registry
        )
        self.push_lag = Gauge(
            "edgekv_upstream_push_lag_changes",
            "Local changes not yet pushed to the upstream.",
            registry=registry,
        )


class Upstream:
    """The connector of one node to its PostgreSQL upstream."""

    def __init__(self, config: Config, store: Store, registry: CollectorRegistry) -> None:
        """Prepare the connector; :meth:`start` runs it."""
        assert config.upstream is not None
        self.config = config
        self.store = store
        self.sql = Statements(config.upstream_schema)
        self.dsn = config.upstream
        self.timeout = config.upstream_timeout
        self.metrics = UpstreamMetrics(registry)
        self.strong_namespaces: set[str] = set(config.strong_namespaces) | store.strong_namespaces()
        self.upstream_id: int | None = None
        self.state = "connecting"
        self.last_error: str | None = None
        self.last_contact_ms: int | None = None
        self.pushed_seq = 0
        self.pulled_seq = 0
        self.limits = limits_of(config)
        self.max_ahead_ms = int(config.max_clock_offset * 1000)
        """How far ahead a stored stamp may be for strong writes to follow it."""
        """What a pulled row may hold: the limits HTTP input is held to."""
        self.pull_refusal: str | None = None
        """Why the pull stopped at an invalid upstream row (None: it did not)."""
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self._batcher = UpsertBatcher(self._upsert_batch, config.upstream_pool_size)
        # Local seqs of changes that came from the upstream (pulled, or strong
        # writes' results): pushing them back would be a no-op that takes locks.
        # As seq ranges (low, high], oldest first; dropped once the push cursor passes them.
        self._from_upstream: collections.deque[tuple[int, int]] = collections.deque()

    def is_strong(self, ns: str) -> bool:
        """Whether ``ns`` is a strong namespace (declared here or by any PoP)."""
        return ns in self.strong_namespaces

    async def start(self) -> None:
        """Start connecting, migrating, pushing and pulling in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the loops, remember the push cursor, and close the connections."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._batcher.close()
        await self._close_pool()

    def acknowledged_seq(self) -> int:
        """How far this node's log is committed in the upstream."""
        return self.pushed_seq

    def status(self) -> dict[str, Any]:
        """The upstream's row of ``cluster status``."""
        return {
            "url": redacted(self.dsn),
            "schema": self.config.upstream_schema,
            "state": self.state,
            "upstream_id": None if self.upstream_id is None else f"{self.upstream_id:016x}",
            "lag_changes": max(0, self.store.seq - self.pushed_seq),
            "pulled_seq": self.pulled_seq,
            "last_contact_ms": self.last_contact_ms,
            "last_error": self.last_error,
            "strong_namespaces": sorted(self.strong_namespaces),
        }

    # -- strong operations -----------------------------------------------------

    async def strong_write(
        self, ns: str, writes: Sequence[Write], conditions: Sequence[strong.Condition] = ()
    ) -> WriteResult:
        """Run a conditional write in PostgreSQL, then apply its result here.

        Raises :class:`strong.PreconditionFailed` (nothing written) or
        :class:`UpstreamUnavailable`.
        """
        store = self.store

        async def operation(conn: PgConnection) -> list[Change]:
            return await strong.run_write(
                conn,
                self.sql,
                store.clock,
                store.node_id,
                ns,
                writes,
                conditions,
                self.max_ahead_ms,
            )

        # Stamped now, logged here only after PostgreSQL commits: the marks of
        # this node's own writes must not pass these stamps until then.
        with store.origin_marks.stamping_outside():
            try:
                if conditions:
                    changes = await self._on_upstream(operation)
                else:
                    changes = await self._batched(ns, list({w.key: w for w in writes}.values()))
            except strong.PreconditionFailed:
                self.metrics.strong.labels("precondition_failed").inc()
                raise
            self.metrics.strong.labels("ok").inc()
            result, seqs = await store.merge_changes(changes)
        for seq in seqs:
            self._mark_from_upstream(seq - 1, seq)
        return result

    async def _batched(self, ns: str, writes: list[Write]) -> list[Change]:
        """An unconditional write, in a statement shared with concurrent ones."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._batcher.write(ns, writes)
        except TimeoutError:
            self.metrics.strong.labels("unavailable").inc()
            raise UpstreamUnavailable(
                f"the upstream did not answer within {self.timeout} s"
            ) from None

    async def _upsert_batch(self, writes: list[tuple[str, Write]]) -> list[Change]:
        store = self.store

        async def operation(conn: PgConnection) -> list[Change]:
            return await strong.upsert(
                conn, self.sql, store.clock, store.node_id, writes, self.max_ahead_ms
            )

        return await self._on_upstream(operation)

    async def strong_read(self, ns: str, key: bytes) -> Entry | None:
        """Read ``(ns, key)`` from PostgreSQL: the latest committed state."""

        async def operation(conn: PgConnection) -> Entry | None:
            return await strong.read(conn, self.sql, ns, key, self.limits)

        entry = await self._on_upstream(operation)
        self.metrics.strong.labels("ok").inc()
        return entry

    async def strong_counter_read(self, ns: str, key: bytes) -> tuple[int, tuple[int, int] | None]:
        """A counter's value and version as PostgreSQL holds it (every committed add)."""

        async def operation(conn: PgConnection) -> tuple[int, tuple[int, int] | None]:
            return await strong_counters.read(conn, self.sql, ns, key, self.limits)

        state = await self._on_upstream(operation)
        self.metrics.strong.labels("ok").inc()
        return state

    async def strong_counter_add(
        self,
        ns: str,
        key: bytes,
        amount: int,
        expiration: int | None,
        low: int | None,
        high: int | None,
    ) -> CounterWrite:
        """Add to a strong namespace's counter in PostgreSQL, within ``[low, high]``.

        Raises :class:`~edgekv_replication.counters.CounterOutOfBounds` or
        ``CounterOverflow`` (nothing written), :class:`UpstreamUnavailable`.
        """
        node_id = self.store.node_id

        def plan(
            rows: list[counters.Contribution], stamp: int, now: float
        ) -> tuple[counters.Row, int | None, int]:
            planned = counters.plan_add(rows, node_id, amount, stamp, now, expiration)
            counters.check_bounds(planned[2], counters.value_of(rows, now), low, high)
            return planned

        result, value = await self._strong_counter(ns, key, plan)
        return CounterWrite(result.hlc, result.node, result.seq, value)

    async def strong_counter_reset(self, ns: str, key: bytes) -> WriteResult:
        """Reset a strong namespace's counter in PostgreSQL: every contribution goes."""
        node_id = self.store.node_id

        def plan(
            rows: list[counters.Contribution], stamp: int, now: float
        ) -> tuple[counters.Row, int | None, int]:
            own = next((c for c in rows if c.node == node_id), None)
            new = counters.plan_reset(rows, node_id, stamp)
            return new, own.expiration if own else None, 0

        return (await self._strong_counter(ns, key, plan))[0]

    async def _strong_counter(
        self, ns: str, key: bytes, plan: strong_counters.Plan
    ) -> tuple[WriteResult, int]:
        store = self.store

        async def operation(conn: PgConnection) -> tuple[Change, int]:
            return await strong_counters.run(
                conn, self.sql, store.clock, store.node_id, ns, key, plan, self.limits,
                self.max_ahead_ms,
            )  # fmt: skip

        with store.origin_marks.stamping_outside():
            try:
                change, value = await self._on_upstream(operation)
            except counters.CounterOutOfBounds:
                self.metrics.strong.labels("precondition_failed").inc()
                raise
            self.metrics.strong.labels("ok").inc()
            result, seqs = await store.merge_changes([change])
        for seq in seqs:
            self._mark_from_upstream(seq - 1, seq)
        return result, value

    async def _on_upstream(self, body: Callable[[PgConnection], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            self.metrics.strong.labels("unavailable").inc()
            raise UpstreamUnavailable(f"the upstream is {self.state}: {self.last_error or ''}")
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in range(SERIALIZATION_RETRIES):
                    async with pool.acquire() as conn:
                        try:
                            result = await body(conn)
                            self.last_contact_ms = _now_ms()
                            return result
                        except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                            # Only engines that run every transaction serializable
                            # (CockroachDB) report these: run it again.
                            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                raise UpstreamUnavailable("too much contention: the transaction kept conflicting")
        except strong.InvalidUpstreamRow as exc:
            self._invalid_row(str(exc))
            raise
        except asyncpg.DataError as exc:
            # Our arguments are validated, so a value out of range comes from a
            # row (a stamp at the bigint limit cannot be stamped past).
            message = f"an upstream row is invalid ({type(exc).__name__}: {exc})"
            self._invalid_row(message)
            raise strong.InvalidUpstreamRow(message) from exc
        except CONNECTION_ERRORS as exc:
            self.metrics.strong.labels("unavailable").inc()
            raise UpstreamUnavailable(
                f"the upstream did not answer within {self.timeout} s ({type(exc).__name__})"
            ) from exc

    def _invalid_row(self, message: str) -> None:
        self.metrics.strong.labels("upstream_invalid").inc()
        log.error("strong operation refused: %s", message)

    # -- background ------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_MIN
        try:
            while True:
                try:
                    await self._connect()
                    delay = RETRY_MIN
                    self._set_state("up", None)
                    await asyncio.gather(self._push_loop(), self._pull_loop())
                except CONNECTION_ERRORS as exc:
                    self._set_state("down", f"{type(exc).__name__}: {exc}")
                except asyncpg.PostgresError as exc:
                    log.warning("upstream: %s", exc)
                    self._set_state("down", f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # keep the connector alive, visibly
                    log.exception("upstream connector failed")
                    self._set_state("down", f"{type(exc).__name__}: {exc}")
                await self._close_pool()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(RETRY_MAX, delay * 2)
        finally:
            await self._persist_push_cursor()

    def _set_state(self, state: str, error: str | None) -> None:
        if state == "down" and self.state != "down":
            log.warning("upstream %s unreachable: %s", redacted(self.dsn), error)
        elif state == "up" and self.state != "up":
            log.info("upstream %s connected", redacted(self.dsn))
        self.state = state
        self.metrics.up.set(1 if state == "up" else 0)
        if error is not None:
            self.last_error = error

    async def _connect(self) -> None:
        async with asyncio.timeout(self.timeout):
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.config.upstream_pool_size,
                timeout=self.timeout,
                reset=_keep_session,
            )
        assert pool is not None
        try:
            async with asyncio.timeout(max(self.timeout, 10.0)), pool.acquire() as conn:
                upstream_id = await migrate(conn, self.sql.schema)
                for ns in self.config.strong_namespaces:
                    await conn.execute(self.sql.declare_namespace, ns, self.store.node_id)
                await self._refresh_namespaces(conn)
        except BaseException:
            pool.terminate()
            raise
        if upstream_id != self.upstream_id:
            # A new upstream (first contact, or wiped and recreated): it has
            # nothing yet, not even what the old one handed us.
            self._from_upstream.clear()
            self.upstream_id = upstream_id
            self.pushed_seq = self.store.peer_acks().get(upstream_id, (0, 0))[0]
            remembered = self.store.peer_cursor(upstream_id)
            self.pulled_seq = remembered.cursor if remembered.incarnation == upstream_id else 0
        self._pool = pool
        self.last_contact_ms = _now_ms()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(1.0):
                    await pool.close()
            except CONNECTION_ERRORS:
                pool.terminate()

    async def _refresh_namespaces(self, conn: PgConnection) -> None:
        rows = await conn.fetch(self.sql.strong_namespaces)
        # Only ever more: a namespace once strong never takes eventual writes again.
        learned = {row["ns"] for row in rows} - self.strong_namespaces
        if learned:
            await self.store.remember_strong_namespaces(sorted(learned))
            self.strong_namespaces |= learned
            log.info("strong namespaces: %s", ", ".join(sorted(self.strong_namespaces)))

    async def _push_loop(self) -> None:
        assert self._pool is not None
        persisted_at = time.monotonic()
        while True:
            changes = self.store.changes_after(self.pushed_seq, PUSH_BATCH)
            if not changes:
                self.metrics.push_lag.set(0)
                # Polled, not woken per commit: pushes gather changes anyway.
                await asyncio.sleep(self.config.upstream_batch_interval)
                continue
            outgoing = self._not_from_upstream(changes)
            if outgoing:
                async with asyncio.timeout(self.timeout), self._pool.acquire() as conn:
                    await self._push(conn, outgoing)
                self.metrics.pushed.inc(len(outgoing))
                self.last_contact_ms = _now_ms()
            self.pushed_seq = changes[-1].seq
            self._forget_upstream_seqs(self.pushed_seq)
            self.metrics.push_lag.set(max(0, self.store.seq - self.pushed_seq))
            if time.monotonic() - persisted_at >= ACK_PERSIST_INTERVAL:
                await self._persist_push_cursor()
                persisted_at = time.monotonic()
            if len(changes) < PUSH_BATCH:
                # Let changes gather: one statement carries many, and PostgreSQL
                # commits a few times a second instead of once per local commit.
                await asyncio.sleep(self.config.upstream_batch_interval)

    async def _push(self, conn: PgConnection, changes: list[Change]) -> None:
        """Push one batch in one transaction, numbered under the sequencer lock."""
        entries: list[Change] = []
        documents: dict[tuple[str, bytes], Change] = {}
        for change in changes:
            if is_document(change):
                slot = (change.ns, change.key)
                held = documents.get(slot)
                documents[slot] = change if held is None else merge_document_changes(held, change)
            else:
                entries.append(change)
        # Rows are locked in (ns, key) order, the order strong transactions lock
        # in (no deadlock). A page of the log holds one row per (ns, key), so
        # plain tuple order is decided by those two fields.
        entries.sort()
        if not documents:
            # One statement that locks, numbers and commits: the sequencer
            # lock is never held across a round trip (see statements.py).
            constant, arguments = _push_arguments(entries)
            await conn.execute(self.sql.push(constant), *arguments)
            return
        async with conn.transaction():
            await conn.execute(self.sql.lock_sequencer)
            if entries:
                constant, arguments = _push_arguments(entries)
                await conn.execute(self.sql.push(constant), *arguments)
            await self._push_documents(conn, documents)

    async def _push_documents(
        self, conn: PgConnection, documents: dict[tuple[str, bytes], Change]
    ) -> None:
        # Y states merge rather than replace: read the stored state under its
        # row lock, join it with ours, write the union back.
        slots = sorted(documents)
        stored = await conn.fetch(
            self.sql.documents_for_update, [ns for ns, _ in slots], [key for _, key in slots]
        )
        for row in stored:
            slot = (row["ns"], bytes(row["key"]))
            upstream = Change(
                slot[0], slot[1], bytes(row["state"]), row["version"], None, row["hlc"], row["node"]
            )
            documents[slot] = merge_document_changes(upstream, documents[slot])
        merged = [documents[slot] for slot in slots]
        await conn.execute(
            self.sql.store_documents,
            [c.ns for c in merged],
            [c.key for c in merged],
            [c.value for c in merged],
            [c.metadata for c in merged],
            [c.hlc for c in merged],
            [c.node for c in merged],
        )

    async def _persist_push_cursor(self) -> None:
        if self.upstream_id is None or self.pushed_seq == 0:
            return
        with contextlib.suppress(Exception):  # stopping: the store may be closing
            await self.store.record_ack(self.upstream_id, self.pushed_seq)

    def _mark_from_upstream(self, low: int, high: int) -> None:
        last = self._from_upstream[-1] if self._from_upstream else None
        if last is not None and last[1] == low:  # adjacent: one range
            self._from_upstream[-1] = (last[0], high)
        else:
            self._from_upstream.append((low, high))

    def _not_from_upstream(self, changes: list[Change]) -> list[Change]:
        """``changes`` (in seq order) without those that came from the upstream."""
        if not self._from_upstream:
            return changes
        ranges = sorted(self._from_upstream)  # disjoint, so one walk along both
        outgoing, i = [], 0
        for change in changes:
            while i < len(ranges) and ranges[i][1] < change.seq:
                i += 1
            if not (i < len(ranges) and ranges[i][0] < change.seq):
                outgoing.append(change)
        return outgoing

    def _forget_upstream_seqs(self, up_to: int) -> None:
        while self._from_upstream and self._from_upstream[0][1] <= up_to:
            self._from_upstream.popleft()

    async def _pull_loop(self) -> None:
        assert self._pool is not None
        assert self.upstream_id is not None
        refreshed_at = time.monotonic()
        max_offset_ms = int(self.config.max_clock_offset * 1000)
        while True:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as conn:
                # A poll is one round trip when nothing waits for a number
                # (strong writes leave rows unnumbered), two reads otherwise.
                polled = await conn.fetchrow(self.sql.poll)
                assert polled is not None
                head = int(polled["head"])
                if polled["unsequenced"]:
                    await conn.execute(self.sql.sequence)
                    head = int(await conn.fetchval(self.sql.head))
                rows = []
                if head > self.pulled_seq:
                    rows = await conn.fetch(
                        self.sql.pull,
                        self.pulled_seq,
                        head,
                        self.store.node_id,
                        PULL_PAGE,
                        self.config.upstream_pull_bytes,
                    )
                if time.monotonic() - refreshed_at >= NAMESPACE_REFRESH_INTERVAL:
                    await self._refresh_namespaces(conn)
                    refreshed_at = time.monotonic()
            self.last_contact_ms = _now_ms()
            # A page cut short (by rows or bytes) ends at its last row; a whole
            # one reaches the head, past rows left out (see Statements.head).
            full = len(rows) == PULL_PAGE or (
                bool(rows) and rows[-1]["through"] >= self.config.upstream_pull_bytes
            )
            cursor = int(rows[-1]["seq"]) if full else head
            if rows:
                self.metrics.pull_pages.inc()
                self.metrics.received.inc(len(rows))
            blocked = False
            if cursor > self.pulled_seq:
                blocked = await self._apply(rows, cursor, max_offset_ms)
            if blocked or not full:
                await asyncio.sleep(self.config.upstream_poll_interval)

    async def _apply(
        self, rows: Sequence[asyncpg.Record], cursor_seq: int, max_offset_ms: int
    ) -> bool:
        """Apply a page and move the pull cursor to ``cursor_seq``, in one local commit.

        Stops short of the first invalid row (see the module's docstring);
        returns True then.
        """
        assert self.upstream_id is not None
        changes = [
            Change(
                r["ns"],
                bytes(r["key"]),
                _bytes(r["value"]),
                r["metadata"],
                r["expiration"],
                r["hlc"],
                r["node"],
            )
            for r in rows
        ]
        refusal = None
        for index, change in enumerate(changes):
            try:
                check_change(change, self.limits)
            except Refused as refused:
                refusal = self._refuse_row(rows[index], refused)
                changes, cursor_seq = changes[:index], int(rows[index]["seq"]) - 1
                break
        if refusal is None and self.pull_refusal is not None:
            log.info("upstream pull goes on: the refused row was repaired")
            self.pull_refusal = None
        if cursor_seq > self.pulled_seq:
            await self._apply_valid(changes, cursor_seq, max_offset_ms)
        return refusal is not None

    def _refuse_row(self, row: asyncpg.Record, refused: Refused) -> str:
        """Record why the pull stops at ``row``: logged once, shown as ``last_error``."""
        message = (
            f"refused upstream row seq {row['seq']} ({row['ns']!r}, {bytes(row['key'])[:64]!r}): "
            f"{refused.code}: {refused}; the pull waits until it is repaired in PostgreSQL"
        )
        if message != self.pull_refusal:
            log.error("%s", message)
        self.pull_refusal = self.last_error = message
        return message

    async def _apply_valid(
        self, changes: list[Change], cursor_seq: int, max_offset_ms: int
    ) -> None:
        assert self.upstream_id is not None
        cursor = PeerCursor(self.upstream_id, cursor_seq)
        result = await self.store.apply_changes(changes, self.upstream_id, cursor, max_offset_ms)
        if result.seq > result.first_seq:
            self._mark_from_upstream(result.first_seq, result.seq)
        self.metrics.pulled.inc(result.applied)
        self.pulled_seq = cursor.cursor


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


async def _keep_session(conn: PgConnection) -> None:
    """Skip the pool's reset query on release: one round trip per operation.

    The connector never changes session state (no SET, LISTEN, cursors or
    advisory locks), and asyncpg still rolls back a transaction left open.
    """


def _push_arguments(entries: Sequence[Change]) -> tuple[list[bool], list[Any]]:
    """Which push columns are constant, and the arguments: a value or an array each.

    A column with one value for every entry goes as that value (the key
    column always as an array). ``entries`` must not be empty.
    """
    columns = list(zip(*entries, strict=True))[: len(PUSH_COLUMNS)]
    constant = [
        name != "key" and column.count(column[0]) == len(column)
        for (name, _), column in zip(PUSH_COLUMNS, columns, strict=True)
    ]
    arguments = [
        column[0] if single else column for single, column in zip(constant, columns, strict=True)
    ]
    return constant, arguments


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
