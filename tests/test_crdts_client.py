"""Counters and sets through the blocking and async clients, sessions and LocalReader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv_client import AsyncClient, Client, InvalidRequest, LocalReader, PreconditionFailed
from testkit.cluster import Cluster
from testkit.processes import NodeProcess


def test_the_blocking_client_adds_reads_and_resets(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as client:
        hits = client.counter(ns, "hits")
        assert hits.value() == 0
        assert hits.add() == 1
        assert hits.add(41, ttl=60) == 42
        assert hits.value() == 42
        assert "bookmark" in hits.reset()
        assert hits.value() == 0
        with pytest.raises(InvalidRequest) as refused:
            hits.add(2**63)
        assert refused.value.code == "counter_overflow"
        with pytest.raises(InvalidRequest):
            hits.add(1, minimum=0)  # bounds need a strong namespace
        tags = client.set(ns, "p1/tags")
        tags.add("red", "blue", "green")
        tags.remove("blue")
        assert tags.members() == ["green", "red"]
        assert tags.members(prefix="g") == ["green"]
        assert list(tags.iterate(page_size=1)) == ["green", "red"]
        page = tags.page(limit=1)
        assert (page.members, page.list_complete) == (["green"], False)
        tags.update(add=["x"], remove=["red"])
        assert tags.members() == ["green", "x"]
        tags.clear()
        assert tags.members() == []


def test_the_async_client_adds_reads_and_resets(shared_node: NodeProcess, ns: str) -> None:
    async def run() -> None:
        async with AsyncClient(shared_node.url) as client:
            hits = client.counter(ns, "hits")
            assert await hits.add(5) == 5
            assert await hits.add(-2) == 3
            assert await hits.value() == 3
            await hits.reset()
            assert await hits.value() == 0
            tags = client.set(ns, "tags")
            await tags.add("b", "a")
            await tags.remove("b")
            assert await tags.members() == ["a"]
            assert [m async for m in tags.iterate(page_size=1)] == ["a"]
            await tags.clear()
            assert await tags.members() == []

    asyncio.run(run())


def test_local_reader_reads_counters_and_sets_as_http_does(
    shared_node: NodeProcess, ns: str
) -> None:
    with Client(shared_node.url) as client, LocalReader(shared_node.data_dir) as local:
        assert local.counter(ns, "c") == 0
        client.counter(ns, "c").add(7)
        client.counter(ns, "c").add(-2)
        assert local.counter(ns, "c") == client.counter(ns, "c").value() == 5
        client.set(ns, "s").add("é", "a", "ab")
        client.set(ns, "s").remove("ab")
        assert local.set_members(ns, "s") == client.set(ns, "s").members() == ["a", "é"]
        assert local.set_members(ns, "s", prefix="a") == ["a"]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 2, "mesh", ("--bookmark-timeout", "5"))
    yield cluster
    cluster.close()


def test_a_session_reads_its_counter_and_set_writes_at_another_pop(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token).session() as session, session.at(b.url) as there:
        for i in range(1, 11):
            assert session.counter("s", "c").add(1) == i
            assert there.counter("s", "c").value() == i
            session.set("s", "tags").add(f"m{i:02d}")
            assert there.set("s", "tags").members()[-1] == f"m{i:02d}"


def test_a_full_set_is_refused_as_a_precondition(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n", ["--max-set-members", "2"]).start()
    try:
        with Client(node.url) as client:
            client.set("n", "s").add("a", "b")
            with pytest.raises(PreconditionFailed) as refused:
                client.set("n", "s").add("c")
            assert refused.value.code == "set_full"
    finally:
        node.kill()
