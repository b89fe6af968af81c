"""Versioned schema of the upstream in PostgreSQL, created and migrated by the connector.

Tables, all in one schema (``upstream_schema``, default ``edgekv``):

``meta``        one row: the schema version and ``upstream_id``, a random id
                made when the schema is created; PoPs key their cursors by it,
                so an upstream that is wiped and recreated is synced from zero.
``kv``          one row per ``(ns, key)`` as in a node: value or tombstone,
                metadata, expiration, the last-writer-wins stamp ``(hlc, node)``
                and ``seq``, its place in the upstream change log (NULL until
                the sequencer numbers it; see :mod:`edgekv.store.pg.statements`).
``sequencer``   one row whose lock makes sequencer transactions take turns.
``namespaces``  namespaces declared strong, shared by every PoP.

Version 2 adds ``docs``: per document (``ns`` is ``@doc:`` + collection) the
merged Y state of every update pushed so far, its version and ``seq``. Y
states are merged by the pushing connector (a join, under the row's lock), so
PostgreSQL holds one compact state per document rather than a growing log.

Several connectors may start at once: each migration runs in one transaction
that first locks the ``meta`` row, and one that loses a race to create the
schema simply retries.
"""

from __future__ import annotations

import secrets

import asyncpg

from edgekv.store.pg.connection import PgConnection
from edgekv.store.pg.statements import check_schema_name

SCHEMA_VERSION = 2


def _v1(schema: str) -> list[str]:
    return [
        f"CREATE TABLE {schema}.kv ("
        " ns text NOT NULL, key bytea NOT NULL, value bytea, metadata text, expiration bigint,"
        " hlc bigint NOT NULL, node bigint NOT NULL, seq bigint, PRIMARY KEY (ns, key))",
        f"CREATE INDEX kv_by_seq ON {schema}.kv (seq)",
        f"CREATE INDEX kv_unsequenced ON {schema}.kv (ns, key) WHERE seq IS NULL",
        f"CREATE SEQUENCE {schema}.change_seq",
        f"CREATE TABLE {schema}.sequencer (id int PRIMARY KEY)",
        f"INSERT INTO {schema}.sequencer (id) VALUES (1)",
        f"CREATE TABLE {schema}.namespaces ("
        " ns text PRIMARY KEY, consistency text NOT NULL CHECK (consistency IN ('strong')),"
        " declared_by bigint NOT NULL, declared_at timestamptz NOT NULL DEFAULT now())",
    ]


def _v2(schema: str) -> list[str]:
    return [
        f"CREATE TABLE {schema}.docs ("
        " ns text NOT NULL, key bytea NOT NULL, state bytea NOT NULL, version text,"
        " hlc bigint NOT NULL, node bigint NOT NULL, seq bigint NOT NULL,"
        " PRIMARY KEY (ns, key))",
        f"CREATE INDEX docs_by_seq ON {schema}.docs (seq)",
    ]


MIGRATIONS = {1: _v1, 2: _v2}


class UpstreamSchemaError(RuntimeError):
    """The upstream schema was made by a newer EdgeKV."""


async def migrate(conn: PgConnection, schema: str) -> int:
    """Create or migrate the schema; return the upstream's id."""
    check_schema_name(schema)
    for attempt in range(3):
        try:
            return await _migrate_once(conn, schema)
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateObjectError):
            # Another connector created the same object first: look again.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _current_id(conn: PgConnection, schema: str) -> int | None:
    """The upstream's id if its schema is at this version already (one read, no lock).

    Every connector runs :func:`migrate` whenever it (re)connects. The full
    path locks the ``meta`` row for several round trips, so PoPs reconnecting
    together (an upstream back after an outage, or timeouts under load) took
    turns at it, each as long as its round trips to the server.
    """
    try:
        row = await conn.fetchrow(f"SELECT version, upstream_id FROM {schema}.meta WHERE id = 1")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    if row is None or row["version"] != SCHEMA_VERSION:
        return None  # new, older (migrate it) or newer (the full path says so)
    return int(row["upstream_id"])


async def _migrate_once(conn: PgConnection, schema: str) -> int:
    current = await _current_id(conn, schema)
    if current is not None:
        return current
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.meta ("
            " id int PRIMARY KEY CHECK (id = 1), version int NOT NULL,"
            " upstream_id bigint NOT NULL)"
        )
        await conn.execute(
            f"INSERT INTO {schema}.meta (id, version, upstream_id) VALUES (1, 0, $1)"
            " ON CONFLICT (id) DO NOTHING",
            secrets.randbits(63) or 1,
        )
        row = await conn.fetchrow(
            f"SELECT version, upstream_id FROM {schema}.meta WHERE id = 1 FOR UPDATE"
        )
        assert row is not None  # inserted just above
        version, upstream_id = row["version"], row["upstream_id"]
        if version > SCHEMA_VERSION:
            raise UpstreamSchemaError(
                f"upstream schema {schema} has version {version}; this EdgeKV knows "
                f"up to {SCHEMA_VERSION}: upgrade this node"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number](schema):
                await conn.execute(statement)
        await conn.execute(f"UPDATE {schema}.meta SET version = $1 WHERE id = 1", SCHEMA_VERSION)
    return int(upstream_id)
