"""Make sure the PostgreSQL of the upstream tests answers; start it if it does not.

Exits non-zero when it cannot be reached, so CI fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import asyncpg

DSN = os.environ.get("EDGEKV_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def _ping(dsn: str) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return "missing database"
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def ping() -> str | None:
    return asyncio.run(_ping(DSN))


def start_server() -> None:
    """Start the local cluster the way this machine knows how."""
    commands = []
    if shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster"):
        for line in subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True
        ).stdout.splitlines():
            version, name = line.split()[:2]
            commands.append(["pg_ctlcluster", version, name, "start"])
    commands.append(["service", "postgresql", "start"])
    for command in commands:
        print("starting PostgreSQL:", " ".join(command), flush=True)
        subprocess.run(command, check=False)
        if wait(15):
            return


def wait(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        problem = ping()
        if problem is None or problem == "missing database":
            return True
        time.sleep(0.5)
    return False


def main() -> int:
    problem = ping()
    if problem is not None and problem != "missing database":
        print(f"PostgreSQL at {DSN} does not answer ({problem})", flush=True)
        start_server()
        problem = ping()
    if problem == "missing database":
        database = DSN.rsplit("/", 1)[-1]
        admin = DSN.rsplit("/", 1)[0] + "/postgres"

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
            finally:
                await conn.close()

        asyncio.run(create())
        problem = ping()
    if problem is not None:
        print(f"PostgreSQL at {DSN} is unavailable: {problem}", file=sys.stderr)
        return 1
    print(f"PostgreSQL at {DSN} answers", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
