"""The async client against a real node; retries of both clients across a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv_client import AsyncClient, Client, InvalidRequest, NotFound, TooLarge, _core
from testkit.processes import NodeProcess
from testkit.security import Security


async def test_every_method(shared_node: NodeProcess, ns: str) -> None:
    async with AsyncClient(shared_node.url) as kv:
        answer = await kv.put(ns, "a/b", "one", metadata={"m": 1}, ttl=3600)
        assert answer["bookmark"].startswith("b1.")
        entry = await kv.get_with_metadata(ns, "a/b")
        assert entry is not None
        assert (entry.value, entry.metadata, entry.version) == (b"one", {"m": 1}, answer["version"])
        assert await kv.get(ns, "missing") is None
        await kv.bulk(ns, [{"op": "put", "key": f"k{i}", "value": b"v"} for i in range(30)])
        assert [k["name"] async for k in kv.list(ns, prefix="k", page_size=7)] == sorted(
            f"k{i}" for i in range(30)
        )
        many = await kv.get_many(ns, ["k1", "nope"])
        assert many["nope"] is None
        assert many["k1"] is not None
        await kv.delete(ns, "a/b")
        assert await kv.get(ns, "a/b") is None


async def test_errors_map_to_the_exception_tree(shared_node: NodeProcess, ns: str) -> None:
    async with AsyncClient(shared_node.url) as kv:
        with pytest.raises(InvalidRequest) as invalid:
            await kv.put("bad ns", "k", "v")
        assert invalid.value.code == "invalid_namespace"
        with pytest.raises(TooLarge):
            await kv.put(ns, "k", "v", metadata={"x": "y" * 2000})
        with pytest.raises(NotFound):
            await kv._send(_core.build_request("GET", "/nowhere", None))


async def test_async_session_reads_its_writes(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")  # tokens and a cluster secret
    start_node = security.starter(start_node)
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    async with AsyncClient(a.url, token=security.token).session() as session:
        await session.put("s", "k", "mine")
        async with session.at(b.url) as there:
            assert await there.get("s", "k") == b"mine"


def test_blocking_client_retries_across_a_restart(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("a")
    with Client(node.url, retries=12) as kv:
        kv.put("r", "k", "kept")
        node.stop()
        restart = threading.Thread(target=node.start)
        restart.start()
        try:
            assert kv.get("r", "k") == b"kept"  # retried until the node was back
        finally:
            restart.join()


def test_blocking_namespace_handle_and_json(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as kv:
        handle = kv.namespace(ns)
        handle.put_json("cfg", {"limit": 10, "name": "é"}, ttl=60)
        assert handle.get_json("cfg") == {"limit": 10, "name": "é"}
        assert handle.get_json("missing") is None
        assert [k["name"] for k in handle.list()] == ["cfg"]
        assert handle.get_many(["cfg"])["cfg"] is not None
        handle.delete("cfg")
        assert handle.get("cfg") is None
        with pytest.raises(AttributeError):
            handle.cluster_status()


async def test_async_namespace_handle_and_json(shared_node: NodeProcess, ns: str) -> None:
    async with AsyncClient(shared_node.url) as kv:
        handle = kv.namespace(ns)
        await handle.put_json("cfg", [1, 2, 3])
        assert await handle.get_json("cfg") == [1, 2, 3]
        assert await kv.get_json(ns, "cfg") == [1, 2, 3]
