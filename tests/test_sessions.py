"""Sessions: read-your-writes and monotonic reads across PoPs, via bookmarks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv_client import BookmarkSet, Client, InvalidRequest, Unavailable
from edgekv_client._core import Request as client_request
from edgekv_replication.bookmarks import BOOKMARK_HEADER
from testkit.cluster import Cluster, wait_converged
from testkit.waiting import wait_for


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 2, "mesh", ("--bookmark-timeout", "2"))
    yield cluster
    cluster.close()


def test_bookmark_set_keeps_the_newest_per_node() -> None:
    bookmarks = BookmarkSet()
    bookmarks.add("b1.a.5.1")
    bookmarks.add("b1.a.3.1")
    bookmarks.add("b1.b.1.1")
    assert bookmarks.header_value() == "b1.a.5.1,b1.b.1.1"


def test_session_reads_its_write_at_another_pop(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token).session() as session, session.at(b.url) as there:
        for i in range(20):
            session.put("s", f"k{i}", f"v{i}")
            assert there.get("s", f"k{i}") == f"v{i}".encode()


@pytest.mark.slow
def test_cut_link_makes_the_read_wait_then_fail_never_stale(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token).session() as session, session.at(b.url) as there:
        session.put("s", "cart", "v1")
        assert there.get("s", "cart") == b"v1"
        pair.links[1, 0].cut()  # b no longer pulls from a
        session.put("s", "cart", "v2")
        with pytest.raises(Unavailable) as failed:
            there.get("s", "cart")
        assert failed.value.code == "bookmark_not_reached"
        # Without the session the same PoP serves what it has: eventual consistency.
        with Client(b.url, token=pair.token) as plain:
            assert plain.get("s", "cart") == b"v1"
        pair.links[1, 0].heal()

        def read_after_heal() -> bytes | None:
            # The stream reconnects with backoff; until then the read keeps failing.
            try:
                return there.get("s", "cart")
            except Unavailable:
                return None

        wait_for(lambda: read_after_heal() is not None, what="stream back")
        assert there.get("s", "cart") == b"v2"


def test_reads_are_monotonic_across_pops(pair: Cluster) -> None:
    a, b = pair.nodes
    with Client(a.url, token=pair.token) as client:
        client.put("s", "flag", "new")
    wait_converged(pair.nodes)
    pair.links[0, 1].cut()  # a no longer pulls from b
    with Client(b.url, token=pair.token) as client:
        client.put("s", "flag", "newer")  # only b has it
    with Client(b.url, token=pair.token).session() as session:
        assert session.get("s", "flag") == b"newer"
        with session.at(a.url) as behind, pytest.raises(Unavailable):
            behind.get("s", "flag")  # a is behind what the session saw


def test_bad_bookmark_is_invalid_request(pair: Cluster) -> None:
    answer = pair.nodes[0].request("GET", "/v1/kv/s/k", headers={BOOKMARK_HEADER: "b1.zz"})
    assert (answer.status, answer.error_code) == (400, "invalid_bookmark")
    assert pair.nodes[0].request("GET", "/v1/kv/s?bookmark=nope").error_code == "invalid_bookmark"
    headers = {BOOKMARK_HEADER: "not-a-bookmark", "Authorization": f"Bearer {pair.token}"}
    with Client(pair.nodes[0].url, token=pair.token) as client, pytest.raises(InvalidRequest):
        client._send(client_request("GET", "/v1/kv/s/k", headers))
