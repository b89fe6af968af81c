"""Shared fixtures: fresh stores, real node processes, HTTP helpers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv.store.store import Store
from tests.nodeproc import NodeProcess
from tests.pg import pg_proxy, pg_schema, pg_schemas_dropped  # noqa: F401  (fixtures of the upstream tests)

_namespaces = itertools.count()


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
