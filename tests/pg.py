"""The PostgreSQL the upstream tests use: a real server, an isolated schema per test.

``EDGEKV_TEST_PG_DSN`` names it (default: the server on 127.0.0.1:5432, user
postgres, database ``test``). Tests never stop that server: outages are made
by cutting a :class:`~jepsen_like.proxy.TcpProxy` in front of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from jepsen_like.proxy import TcpProxy

DSN = os.environ.get("EDGEKV_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_schemas = itertools.count()


def query(sql: str, *args: Any, dsn: str = DSN) -> list[asyncpg.Record]:
    """Run one statement on a fresh connection and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def via(proxy: TcpProxy, dsn: str = DSN) -> str:
    """``dsn`` rewritten to reach the server through ``proxy``."""
    parts = urlsplit(dsn)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))


def server_port(dsn: str = DSN) -> int:
    """The server's TCP port."""
    return urlsplit(dsn).port or 5432


PREFIX = f"edgekv_test_{os.getpid()}_"


@pytest.fixture
def pg_schema(pg_schemas_dropped: None) -> str:
    """A schema name no other test (or test run) uses."""
    return f"{PREFIX}{next(_schemas)}"


@pytest.fixture(scope="session")
def pg_schemas_dropped() -> Iterator[None]:
    """Drop this run's schemas at its end, when no node uses them any more."""
    yield
    for row in query("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", PREFIX):
        query(f"DROP SCHEMA IF EXISTS {row['nspname']} CASCADE")


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    """A proxy in front of the test server, for cutting the upstream off."""
    proxy = TcpProxy(server_port())
    yield proxy
    proxy.close()
