"""Every SQL statement of the upstream connector, for one PostgreSQL schema.

The SQL stays within what PostgreSQL-compatible distributed engines
(CockroachDB, YugabyteDB) also run: no extensions, no LISTEN/NOTIFY, no
advisory locks, no system columns.

How the change log over PostgreSQL never skips a row (DESIGN.md, Upstream):
a pushed or strongly written row gets ``seq = NULL``. A separate, short
*sequencer* transaction later numbers every committed unnumbered row from a
sequence, while holding the lock of the single ``sequencer`` row. Sequencer
transactions therefore run one at a time, each number is handed out only to a
row that is already committed, and numbers of one sequencer transaction are
all smaller than those of the next. A puller reading ``seq > cursor`` thus
never sees a number before a smaller one becomes visible, however the
writers' own transactions interleave or in which order they commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

KV_COLUMNS = "ns, key, value, metadata, expiration, hlc, node"


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

    @property
    def push(self) -> str:
        """Merge a batch of entries by last-writer-wins; winners wait to be sequenced.

        Arguments are seven parallel arrays, one element per entry (one
        statement per batch, whatever its size).
        """
        return (
            f"INSERT INTO {self.kv} AS kv ({KV_COLUMNS}, seq)"
            f" SELECT {KV_COLUMNS}, NULL FROM unnest($1::text[], $2::bytea[], $3::bytea[],"
            " $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])"
            f" AS t({KV_COLUMNS})"
            " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
            " metadata = excluded.metadata, expiration = excluded.expiration,"
            " hlc = excluded.hlc, node = excluded.node, seq = NULL"
            " WHERE (excluded.hlc, excluded.node) > (kv.hlc, kv.node)"
        )

    @property
    def has_unsequenced(self) -> str:
        """Whether any committed row waits for a seq (cheap, no write)."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.kv} WHERE seq IS NULL)"

    @property
    def lock_sequencer(self) -> str:
        """Take the sequencer lock for the rest of the transaction."""
        return f"SELECT id FROM {self.schema}.sequencer WHERE id = 1 FOR UPDATE"

    @property
    def sequence(self) -> str:
        """Number every committed unnumbered row (run under the sequencer lock)."""
        return f"UPDATE {self.kv} SET seq = nextval('{self.schema}.change_seq') WHERE seq IS NULL"

    @property
    def pull(self) -> str:
        """A page of the upstream change log after a cursor."""
        return f"SELECT {KV_COLUMNS}, seq FROM {self.kv} WHERE seq > $1 ORDER BY seq LIMIT $2"

    @property
    def head(self) -> str:
        """The newest seq of the upstream log (0 when empty)."""
        return f"SELECT coalesce(max(seq), 0) FROM {self.kv}"

    @property
    def read_for_update(self) -> str:
        """The current rows of some keys of a namespace, locked for a strong transaction."""
        return (
            f"SELECT key, value, metadata, expiration, hlc, node FROM {self.kv}"
            " WHERE ns = $1 AND key = ANY($2::bytea[]) FOR UPDATE"
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

    @property
    def upstream_id(self) -> str:
        """The random id made when the schema was created (a wiped upstream gets a new one)."""
        return f"SELECT upstream_id FROM {self.schema}.meta WHERE id = 1"
