"""Shared fixtures: fresh stores, real node processes, the test PostgreSQL; the ``pg`` marker."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv.store.store import Store
from testkit.pg import PREFIX, query, server_port
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy

_namespaces = itertools.count()
_schemas = itertools.count()

PG_FIXTURES = frozenset({"pg_schema", "pg_proxy", "pg_schemas_dropped"})
"""Fixtures that reach the test PostgreSQL: a test using one is marked ``pg``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``pg`` every test that needs PostgreSQL, so no test can be left unmarked.

    A test needs it when it uses a PostgreSQL fixture, or when its module says
    so (``pytestmark = pytest.mark.pg``, for tests that reach the server
    through :mod:`testkit.pg` directly).
    """
    for item in items:
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in a temporary directory."""
    opened = Store(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start real ``edgekv serve`` processes; every one is stopped afterwards."""
    started: list[NodeProcess] = []

    def start(
        name: str = "node",
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        node = NodeProcess(tmp_path / name, args or [], env or {}).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for a whole test module; tests isolate themselves by namespace."""
    node = NodeProcess(tmp_path_factory.mktemp("shared")).start()
    yield node
    node.kill()


@pytest.fixture
def ns() -> str:
    """A namespace no other test uses."""
    return f"t{next(_namespaces)}"


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
