"""The PostgreSQL the upstream tests use: a real server, an isolated schema per test.

``EDGEKV_TEST_PG_DSN`` names it (default: the server on 127.0.0.1:5432, user
postgres, database ``test``). Tests never stop that server: outages are made
by cutting a :class:`~testkit.proxy.TcpProxy` in front of it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from testkit.proxy import TcpProxy

DSN = os.environ.get("EDGEKV_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


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
"""Every schema this test run makes starts with it (dropped at the run's end)."""
