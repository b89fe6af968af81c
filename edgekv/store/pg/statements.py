"""Every SQL statement of the upstream connector, for one PostgreSQL schema.

The SQL stays within what PostgreSQL-compatible distributed engines
(CockroachDB, YugabyteDB) also run: no extensions, no LISTEN/NOTIFY, no
advisory locks, no system columns.

How the change log over PostgreSQL never skips a row (docs/design.md, Upstream):
every transaction that hands out ``seq`` numbers (from one sequence) holds the
lock of the single ``sequencer`` row from before its first number until it
commits. Such transactions run one at a time, so all numbers of one are
smaller than those of the next, and a puller reading ``seq > cursor`` never
sees a number before a smaller one becomes visible. Pushes are such
transactions. Strong writes, which must not wait for each other unless they
touch the same row, write ``seq = NULL`` instead; a short *sequencer*
transaction (also under the lock) later numbers every committed unnumbered
row, whatever order those writes committed in.

The lock is the one place every PoP's pushes take turns, so it is held for
as little as the server needs: a push of entries and the sequencer are each
one statement that takes the lock itself (:func:`_locked`) and commits on its
own, never across a round trip to a PoP that may be 150 ms away. Holding it
from a separate ``SELECT ... FOR UPDATE`` to ``COMMIT`` took three round
trips, and 24 PoPs pushing five times a second queued behind it without end.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

KV_COLUMNS = "ns, key, value, metadata, expiration, hlc, node"
PUSH_COLUMNS = (
    ("ns", "text"),
    ("key", "bytea"),
    ("value", "bytea"),
    ("metadata", "text"),
    ("expiration", "bigint"),
    ("hlc", "bigint"),
    ("node", "bigint"),
)
"""The columns of :meth:`Statements.push`, with their PostgreSQL types."""


def check_schema_name(name: str) -> str:
    """Return ``name`` if it is a plain lower-case PostgreSQL identifier, else raise ValueError."""
    if not _SCHEMA_NAME.fullmatch(name):
        raise ValueError(
            f"upstream schema {name!r} must match [a-z_][a-z0-9_]* (at most 63 characters)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Statements:
    """The connector's statements, with the schema name filled in."""

    schema: str

    @property
    def kv(self) -> str:
        """The qualified entries table."""
        return f"{self.schema}.kv"

    def push(self, constant: Sequence[bool]) -> str:
        """Merge a batch of entries by last-writer-wins, numbering the winners.

        The statement takes the sequencer lock itself (run alone, it commits
        and lets go without another round trip; run in a transaction that
        holds the lock already, taking it again is free). ``constant[i]`` tells whether column
        ``i`` of :data:`PUSH_COLUMNS` holds one value for every entry: such a
        column is one parameter, the others are parallel arrays (one element
        per entry, sorted by ``(ns, key)`` so that row locks are taken in the
        same order as strong transactions take them: no deadlock). A PoP's
        batches mostly share the namespace, the writing node and an absent
        metadata and expiration; each array element costs the driver about a
        third of a microsecond to encode, PostgreSQL some more to unnest.
        Parameters come in column order.
        """
        return _push_statement(self.schema, tuple(constant))

    @property
    def lock_sequencer(self) -> str:
        """Take the sequencer lock for the rest of the transaction."""
        return f"SELECT id FROM {self.schema}.sequencer WHERE id = 1 FOR UPDATE"

    @property
    def poll(self) -> str:
        """The head (see :attr:`head`) and whether committed rows wait for a seq, in one query."""
        return (
            f"SELECT ({self.head}) AS head,"
            f" EXISTS (SELECT 1 FROM {self.kv} WHERE seq IS NULL) AS unsequenced"
        )

    @property
    def sequence(self) -> str:
        """Number every committed unnumbered row: one statement that takes the sequencer lock."""
        return (
            f"{_locked(self.schema)} UPDATE {self.kv} AS kv"
            f" SET seq = nextval('{self.schema}.change_seq')"
            " FROM sequencer WHERE kv.seq IS NULL"
        )

    @property
    def pull(self) -> str:
        """A page of the upstream change log (entries and documents) in ``($1, $2]``.

        Entries written by node ``$3`` are left out: that node has them (or
        newer). Documents always come, as their state may hold others' updates.
        At most ``$4`` rows, and no row once those before it hold ``$5`` bytes
        of values or more: the first row always comes (a value up to the limit
        always replicates), and a page of large values holds about ``$5`` plus
        one value, not ``$4`` of them. Also returns ``size``, each row's value bytes.
        """
        return (
            "SELECT * FROM (SELECT *, sum(size) OVER (ORDER BY seq) AS through FROM ("
            f"SELECT {KV_COLUMNS}, seq, coalesce(octet_length(value), 0) AS size FROM {self.kv}"
            " WHERE seq > $1 AND seq <= $2 AND node <> $3"
            " UNION ALL SELECT ns, key, state, version, NULL, hlc, node, seq, octet_length(state)"
            f" FROM {self.schema}.docs WHERE seq > $1 AND seq <= $2"
            " ORDER BY seq LIMIT $4) AS first_rows) AS page"
            " WHERE through - size < $5 ORDER BY seq"
        )

    @property
    def documents_for_update(self) -> str:
        """The stored states of some documents (parallel arrays ns, key), locked."""
        return (
            f"SELECT d.ns, d.key, d.state, d.version, d.hlc, d.node FROM {self.schema}.docs d"
            " JOIN unnest($1::text[], $2::bytea[]) AS t(ns, key) USING (ns, key)"
            " ORDER BY d.ns, d.key FOR UPDATE OF d"
        )

    @property
    def store_documents(self) -> str:
        """Store merged document states, numbered (run under the sequencer lock)."""
        return (
            f"INSERT INTO {self.schema}.docs (ns, key, state, version, hlc, node, seq)"
            f" SELECT ns, key, state, version, hlc, node, nextval('{self.schema}.change_seq')"
            " FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[], $5::bigint[],"
            " $6::bigint[]) AS t(ns, key, state, version, hlc, node)"
            " ON CONFLICT (ns, key) DO UPDATE SET state = excluded.state,"
            " version = excluded.version, hlc = excluded.hlc, node = excluded.node,"
            " seq = excluded.seq"
        )

    @property
    def head(self) -> str:
        """The newest seq of the upstream log (0 when empty).

        Every seq up to it is committed and visible from then on (numbers
        become visible in order), so a page read up to the head, with rows
        left out, may move the cursor to the head itself.
        """
        return (
            f"SELECT greatest((SELECT coalesce(max(seq), 0) FROM {self.kv}),"
            f" (SELECT coalesce(max(seq), 0) FROM {self.schema}.docs))"
        )

    @property
    def placeholders(self) -> str:
        """Make sure a row exists for each key (sorted), so that it can be locked.

        A placeholder is a tombstone stamped ``(0, 0)``: absent, and older than
        every write. An absent key then locks like a present one, and two
        create-only writes of it take turns instead of both succeeding.
        """
        return (
            f"INSERT INTO {self.kv} ({KV_COLUMNS}, seq)"
            " SELECT $1, k, NULL, NULL, NULL, 0, 0, NULL FROM unnest($2::bytea[]) AS t(k)"
            " ON CONFLICT (ns, key) DO NOTHING"
        )

    @property
    def read_for_update(self) -> str:
        """The current rows of some keys of a namespace, locked in key order."""
        return (
            f"SELECT key, value, metadata, expiration, hlc, node FROM {self.kv}"
            " WHERE ns = $1 AND key = ANY($2::bytea[]) ORDER BY key FOR UPDATE"
        )

    @property
    def drop_placeholders(self) -> str:
        """Remove the placeholders a transaction made but did not write over."""
        return (
            f"DELETE FROM {self.kv}"
            " WHERE ns = $1 AND key = ANY($2::bytea[]) AND hlc = 0 AND node = 0"
        )

    @property
    def read(self) -> str:
        """The current row of one key (a strong read)."""
        return (
            f"SELECT value, metadata, expiration, hlc, node FROM {self.kv}"
            " WHERE ns = $1 AND key = $2"
        )

    @property
    def write(self) -> str:
        """Write one entry of a strong transaction (its stamp is newer than the row's)."""
        return (
            f"INSERT INTO {self.kv} AS kv ({KV_COLUMNS}, seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
            " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
            " metadata = excluded.metadata, expiration = excluded.expiration,"
            " hlc = excluded.hlc, node = excluded.node, seq = NULL"
            " WHERE (excluded.hlc, excluded.node) > (kv.hlc, kv.node)"
        )

    def _overwrite(self, new: str) -> str:
        # Every strong write is stamped later than what it replaces.
        return (
            f"value = {new}.value, metadata = {new}.metadata, expiration = {new}.expiration,"
            f" hlc = GREATEST({new}.hlc, kv.hlc + 1), node = {new}.node, seq = NULL"
        )

    @property
    def strong_upsert(self) -> str:
        """Unconditional strong writes of several keys; returns each key's stamp.

        Arguments: namespaces, keys, values, metadata, expirations and stamps
        as parallel arrays (no key twice), then the writing node.
        """
        return (
            f"INSERT INTO {self.kv} AS kv ({KV_COLUMNS}, seq)"
            " SELECT n, k, v, m, e, h, $7, NULL FROM unnest($1::text[], $2::bytea[],"
            " $3::bytea[], $4::text[], $5::bigint[], $6::bigint[]) AS t(n, k, v, m, e, h)"
            f" ON CONFLICT (ns, key) DO UPDATE SET {self._overwrite('excluded')}"
            " RETURNING ns, key, hlc"
        )

    @property
    def compare_and_set(self) -> str:
        """Write one live key if its version is ``($8, $9)`` (both NULL: any version).

        Returns the new stamp, or no row when the condition does not hold.
        """
        return (
            f"UPDATE {self.kv} AS kv SET {self._overwrite('new')}"
            " FROM (SELECT $3::bytea AS value, $4::text AS metadata, $5::bigint AS expiration,"
            " $6::bigint AS hlc, $7::bigint AS node) AS new"
            " WHERE kv.ns = $1 AND kv.key = $2 AND kv.value IS NOT NULL"
            " AND (kv.expiration IS NULL OR kv.expiration > $10)"
            " AND ($8::bigint IS NULL OR (kv.hlc = $8 AND kv.node = $9))"
            " RETURNING kv.hlc"
        )

    @property
    def create_only(self) -> str:
        """Write one key only if it is absent (deleted, expired or never written).

        Returns the new stamp, or no row when the key is live.
        """
        return (
            f"INSERT INTO {self.kv} AS kv ({KV_COLUMNS}, seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
            f" ON CONFLICT (ns, key) DO UPDATE SET {self._overwrite('excluded')}"
            " WHERE kv.value IS NULL OR kv.expiration <= $8"
            " RETURNING hlc"
        )

    @property
    def counter_rows(self) -> str:
        """Every row of one counter: keys in ``[$2, $3)`` (edgekv_replication.counters)."""
        return (
            f"SELECT key, value, metadata, expiration, hlc, node FROM {self.kv}"
            " WHERE ns = $1 AND key >= $2 AND key < $3 AND value IS NOT NULL"
        )

    @property
    def declare_namespace(self) -> str:
        """Declare a namespace strong (idempotent)."""
        return (
            f"INSERT INTO {self.schema}.namespaces (ns, consistency, declared_by)"
            " VALUES ($1, 'strong', $2) ON CONFLICT (ns) DO NOTHING"
        )

    @property
    def strong_namespaces(self) -> str:
        """Every namespace declared strong by any PoP."""
        return f"SELECT ns FROM {self.schema}.namespaces WHERE consistency = 'strong'"


@functools.cache
def _push_statement(schema: str, constant: tuple[bool, ...]) -> str:
    if all(constant):
        raise ValueError("a push needs at least one column as an array")
    values, arrays, names = [], [], []
    columns = zip(PUSH_COLUMNS, constant, strict=True)
    for number, ((name, kind), single) in enumerate(columns, start=1):
        if single:
            values.append(f"${number}::{kind}")
        else:
            values.append(f"t.{name}")
            arrays.append(f"${number}::{kind}[]")
            names.append(name)
    # LATERAL: the entries are read for the locked sequencer row, so no
    # number is drawn before the lock is held, whatever plan is chosen.
    return (
        f"{_locked(schema)} INSERT INTO {schema}.kv AS kv ({KV_COLUMNS}, seq)"
        f" SELECT {', '.join(values)}, nextval('{schema}.change_seq')"
        f" FROM sequencer CROSS JOIN LATERAL unnest({', '.join(arrays)}) AS t({', '.join(names)})"
        " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
        " metadata = excluded.metadata, expiration = excluded.expiration,"
        " hlc = excluded.hlc, node = excluded.node, seq = excluded.seq"
        " WHERE (excluded.hlc, excluded.node) > (kv.hlc, kv.node)"
    )


def _locked(schema: str) -> str:
    """A ``WITH`` clause that takes the sequencer lock, as the CTE ``sequencer``.

    Materialized, so the row is locked once, before the statement's rows read it.
    """
    return (
        f"WITH sequencer AS MATERIALIZED (SELECT id FROM {schema}.sequencer"
        " WHERE id = 1 FOR UPDATE)"
    )
