"""Tombstone collection: only once acknowledged, and never a resurrection."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.store.kv import Write
from edgekv.store.store import Store
from testkit.cluster import Cluster, stored_state, wait_converged
from testkit.waiting import wait_for

FAST_GC = ("--tombstone-horizon", "1", "--tombstone-gc-interval", "0.1")


@pytest.fixture
def fast_gc_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 3, "mesh", FAST_GC)
    yield cluster
    cluster.close()


def tombstones(cluster: Cluster, i: int) -> list[bytes]:
    return [row[1] for row in stored_state(cluster.nodes[i]) if row[2] is None]


@pytest.mark.slow
def test_acknowledged_tombstones_are_collected_everywhere(fast_gc_cluster: Cluster) -> None:
    cluster = fast_gc_cluster
    for k in range(20):
        cluster.put(k % 3, "gc", f"k{k}", b"v")
    for k in range(0, 20, 2):
        cluster.delete((k + 1) % 3, "gc", f"k{k}")
    wait_converged(cluster.nodes)
    wait_for(lambda: all(not tombstones(cluster, i) for i in range(3)), what="tombstones collected")
    rows = wait_converged(cluster.nodes)
    assert sorted(row[1] for row in rows) == sorted(f"k{k}".encode() for k in range(1, 20, 2))


@pytest.mark.slow
def test_member_cut_off_past_the_horizon_cannot_resurrect_deletes(
    fast_gc_cluster: Cluster,
) -> None:
    cluster = fast_gc_cluster
    cluster.put(0, "gc", "doomed", b"alive")
    wait_converged(cluster.nodes)
    cluster.isolate(2)
    cluster.delete(0, "gc", "doomed")
    # Node 2 is out of contact longer than the horizon, so it no longer holds
    # collection back at nodes 0 and 1.
    wait_for(
        lambda: all(
            b"doomed" not in [r[1] for r in stored_state(cluster.nodes[i])] for i in (0, 1)
        ),
        what="tombstone collected at 0 and 1",
    )
    assert [r[2] for r in stored_state(cluster.nodes[2])] == [b"alive"]
    cluster.heal()

    def refused_both_ways() -> bool:
        rows = cluster.nodes[2].request("GET", "/v1/cluster/status").json()["members"]
        return all("re-sync" in (m["last_error"] or "") for m in rows)

    wait_for(refused_both_ways, what="node 2 told to re-sync")
    for i in (0, 1):
        assert cluster.nodes[i].request("GET", "/v1/kv/gc/doomed").status == 404
        assert b"doomed" not in [r[1] for r in stored_state(cluster.nodes[i])]
    # The operator wipes the stale member; it comes back as a new node and converges.
    cluster.nodes[2].stop()
    shutil.rmtree(cluster.nodes[2].data_dir)
    cluster.nodes[2].start()
    cluster.put(2, "gc", "fresh", b"1")
    rows = wait_converged(cluster.nodes)
    assert [r[1] for r in rows if r[2] is not None] == [b"fresh"]


async def test_a_member_left_out_of_a_collection_must_resync_even_from_cursor_zero(
    store: Store,
) -> None:
    left_out, newcomer = 0x1111, 0x2222
    await store.write("gc", [Write(b"doomed", b"alive")])
    await store.write("gc", [Write(b"doomed", None)])
    await store.write("gc", [Write(b"kept", b"1")])
    assert not store.must_resync(left_out, 0)  # nothing collected yet
    before_every_stamp = (store.clock.wall_ms() + 60_000) << 16
    assert await store.collect_tombstones(store.seq, before_every_stamp, [left_out]) == 1
    purged = store.purged_seq()
    assert purged == 2
    # Cursor 0 from a member left out of the collection: it may hold the deleted
    # key from another peer, and a full sync from here would never delete it.
    assert store.must_resync(left_out, 0)
    assert store.must_resync(left_out, purged - 1)
    assert not store.must_resync(left_out, purged)  # it saw the tombstone after all
    # A new replica (cursor 0, never left out) may sync in full; one behind may not.
    assert not store.must_resync(newcomer, 0)
    assert store.must_resync(newcomer, 1)
    assert not store.must_resync(newcomer, store.seq)
