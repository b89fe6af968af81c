"""``client.docs(...)`` of both clients against real nodes: every method, errors, sessions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekv_client import (
    AsyncClient,
    Client,
    Collection,
    Document,
    InvalidRequest,
    NotFound,
    TooLarge,
    Unavailable,
    _docs,
)
from testkit.cluster import Cluster
from testkit.processes import NodeProcess
from testkit.waiting import wait_for

_collections = itertools.count()


@pytest.fixture
def coll() -> str:
    """A collection no other test uses."""
    return f"cl{next(_collections)}"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 2, "mesh", ("--bookmark-timeout", "2"))
    yield cluster
    cluster.close()


def test_filters_are_sent_as_the_api_reads_them() -> None:
    assert _docs.filters("age>=30") == ["age>=30"]
    assert _docs.filters(("age", ">=", 30)) == ["age>=30"]
    assert _docs.filters([("zip", "==", "0150"), ("age", "<", 40)]) == ['zip=="0150"', "age<40"]
    assert _docs.filters({"team": "red", "admin": True}) == ['team=="red"', "admin==true"]
    with pytest.raises(ValueError, match="operator"):
        _docs.filters([("age", "~", 1)])
    request = _docs.query_request("users", ["a==1", "b>2"], "-age", 5, "cur", None)
    assert (
        request.path == "/v1/docs/users?where=a%3D%3D1&where=b%3E2&order_by=-age&limit=5&cursor=cur"
    )
    assert _docs.next_page_limit(None, None, 0) is None
    assert _docs.next_page_limit(2500, None, 0) == 1000
    assert _docs.next_page_limit(25, 10, 20) == 5


def test_every_method_of_the_blocking_client(shared_node: NodeProcess, coll: str) -> None:
    with Client(shared_node.url) as client:
        users = client.docs(coll)
        written = users.put("ann", {"name": "Ann", "age": 31, "address": {"city": "Oslo"}})
        assert written["bookmark"].startswith("b1.")
        patched = users.patch("ann", {"address": {"zip": "0150"}, "name": None})
        got = users.get("ann")
        assert got == Document(
            "ann", {"age": 31, "address": {"city": "Oslo", "zip": "0150"}}, patched["version"]
        )
        assert patched["version"] != written["version"]
        assert users.get("nobody") is None
        with pytest.raises(NotFound):
            users.patch("nobody", {"a": 1})
        assert users.get("nobody") is None  # the refused patch created nothing
        users.delete("ann")
        assert users.get("ann") is None
        users.delete("ann")  # deleting an absent document succeeds


def test_queries_iterate_every_page(shared_node: NodeProcess, coll: str) -> None:
    with Client(shared_node.url) as client:
        people = client.docs(coll)
        for i in range(25):
            people.put(f"p{i:02d}", {"age": i, "team": "red" if i % 2 else "blue"})
        assert people.create_index("age")["field"] == "age"
        assert [index["field"] for index in people.indexes()] == ["age"]
        ages = [d.doc["age"] for d in people.query([("age", ">=", 5)], "-age", page_size=4)]
        assert ages == list(range(24, 4, -1))
        reds = [d.id for d in people.query({"team": "red"}, page_size=3)]
        assert reds == [f"p{i:02d}" for i in range(1, 25, 2)]
        assert [d.doc["age"] for d in people.query("age<10", "age", limit=7, page_size=3)] == list(
            range(7)
        )
        first = people.query_page(order_by="age", limit=10)
        assert not first.list_complete
        assert [d.doc["age"] for d in first.documents] == list(range(10))
        rest = [d.doc["age"] for d in people.query(order_by="age", cursor=first.cursor)]
        assert rest == list(range(10, 25))
        last = people.query_page(["age>=20"], "age", limit=10)
        assert (last.list_complete, last.cursor, len(last.documents)) == (True, None, 5)


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.put("_hidden", {}), InvalidRequest, "invalid_document_id"),
        (lambda c: c.put("a/b", {}), InvalidRequest, "invalid_document_id"),
        (lambda c: c.put("d", [1, 2]), InvalidRequest, "invalid_json"),
        (lambda c: c.patch("d", ["x"]), InvalidRequest, "invalid_patch"),
        (lambda c: c.put("d", {"n": 2**63}), InvalidRequest, "number_out_of_range"),
        (lambda c: c.put("d", {"n": float("inf")}), InvalidRequest, "invalid_json"),
        (lambda c: c.put("d", {"s": "x" * (1 << 20)}), TooLarge, "document_too_large"),
        (lambda c: c.patch("d", _deep(40)), InvalidRequest, "document_too_deep"),
        (lambda c: c.query_page("age~3"), InvalidRequest, "invalid_parameter"),
        (lambda c: c.query_page(cursor="!!"), InvalidRequest, "invalid_cursor"),
        (lambda c: c.query_page(limit=1001), InvalidRequest, "invalid_parameter"),
    ],
)
def test_errors_map_to_the_exception_tree_and_apply_nothing(
    shared_node: NodeProcess,
    coll: str,
    call: Callable[[Collection], object],
    error: type[Exception],
    code: str,
) -> None:
    with Client(shared_node.url) as client:
        docs = client.docs(coll)
        docs.put("d", {"keep": 1})
        with pytest.raises(error) as raised:
            call(docs)
        assert getattr(raised.value, "code", None) == code
        kept = docs.get("d")
        assert kept is not None
        assert kept.doc == {"keep": 1}


def _deep(levels: int) -> dict[str, object]:
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(levels):
        nested = {"n": nested}
    return nested


async def test_every_method_of_the_async_client(shared_node: NodeProcess, coll: str) -> None:
    async with AsyncClient(shared_node.url) as client:
        users = client.docs(coll)
        await users.put("bo", {"name": "Bo", "tags": ["a"], "age": 40})
        patched = await users.patch("bo", {"tags": ["a", "b"], "extra": {"x": 1}})
        got = await users.get("bo")
        assert got == Document(
            "bo",
            {"name": "Bo", "tags": ["a", "b"], "age": 40, "extra": {"x": 1}},
            patched["version"],
        )
        for i in range(12):
            await users.put(f"q{i:02d}", {"age": i})
        await users.create_index("age")
        assert [index["field"] for index in await users.indexes()] == ["age"]
        found = [d.id async for d in users.query([("age", "<", 10)], "age", page_size=4)]
        assert found == [f"q{i:02d}" for i in range(10)]
        assert len([d async for d in users.query(limit=5, page_size=2)]) == 5
        page = await users.query_page(order_by="-age", limit=1)
        assert page.documents[0].id == "bo"
        with pytest.raises(NotFound):
            await users.patch("nobody", {"a": 1})
        with pytest.raises(InvalidRequest) as invalid:
            await users.put("_x", {})
        assert invalid.value.code == "invalid_document_id"
        # Each body is under 1 MiB; the patched document would not be.
        await users.put("big", {"a": "y" * 600_000})
        with pytest.raises(TooLarge) as too_large:
            await users.patch("big", {"b": "z" * 600_000})
        assert too_large.value.code == "document_too_large"
        assert set(doc_of(await users.get("big"))) == {"a"}
        await users.delete("bo")
        assert await users.get("bo") is None


def doc_of(found: Document | None) -> Any:
    """The body of a document that must exist."""
    assert found is not None
    return found.doc


def test_session_reads_its_document_writes_at_another_pop(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token).session() as session, session.at(b.url) as there:
        here_docs, there_docs = session.docs("carts"), there.docs("carts")
        for i in range(10):
            here_docs.put(f"u{i}", {"items": i})
            found = there_docs.get(f"u{i}")
            assert found is not None
            assert found.doc == {"items": i}
            here_docs.patch(f"u{i}", {"items": i + 100, "paid": True})
            assert doc_of(there_docs.get(f"u{i}")) == {"items": i + 100, "paid": True}
            # A query at the other PoP sees the write too.
            assert [d.doc["items"] for d in there_docs.query({"paid": True})][-1] == i + 100
        here_docs.delete("u0")
        assert there_docs.get("u0") is None


@pytest.mark.slow
def test_document_reads_wait_for_the_session_then_fail_never_stale(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token).session() as session, session.at(b.url) as there:
        session.docs("s").put("cart", {"v": 1})
        assert doc_of(there.docs("s").get("cart")) == {"v": 1}
        pair.links[1, 0].cut()  # b no longer pulls from a
        session.docs("s").patch("cart", {"v": 2})
        for read in (
            lambda: there.docs("s").get("cart"),
            lambda: there.docs("s").query_page(),
            lambda: list(there.docs("s").query({"v": 2})),
        ):
            with pytest.raises(Unavailable) as failed:
                read()
            assert failed.value.code == "bookmark_not_reached"
        with Client(b.url, token=pair.token) as plain:  # without the session: what b has
            assert doc_of(plain.docs("s").get("cart")) == {"v": 1}
        pair.links[1, 0].heal()

        def read_after_heal() -> Document | None:
            try:
                return there.docs("s").get("cart")
            except Unavailable:
                return None

        wait_for(lambda: read_after_heal() is not None, what="stream back")
        assert doc_of(there.docs("s").get("cart")) == {"v": 2}


def test_document_reads_are_monotonic_across_pops(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token) as client:
        client.docs("m").put("flag", {"state": "new"})
    with Client(b.url, token=pair.token) as there:
        wait_for(lambda: there.docs("m").get("flag") is not None, what="replication")
    pair.links[0, 1].cut()  # a no longer pulls from b
    with Client(b.url, token=pair.token) as client:
        client.docs("m").patch("flag", {"state": "newer"})  # only b has it
    with Client(b.url, token=pair.token).session() as session:
        assert doc_of(session.docs("m").get("flag")) == {"state": "newer"}
        with session.at(a.url) as behind, pytest.raises(Unavailable):
            behind.docs("m").get("flag")  # a is behind what the session saw


async def test_async_session_reads_its_document_writes(pair: Cluster) -> None:
    a, b = pair.nodes
    async with AsyncClient(a.url, token=pair.token).session() as session:
        answer = await session.docs("carts").put("u1", {"items": 3})
        await session.docs("carts").patch("u1", {"note": "gift"})
        assert len(session.bookmarks) == 1
        assert answer["bookmark"].startswith("b1.")
        async with session.at(b.url) as there:
            found = await there.docs("carts").get("u1")
            assert found is not None
            assert found.doc == {"items": 3, "note": "gift"}
            assert [d.id async for d in there.docs("carts").query({"note": "gift"})] == ["u1"]
