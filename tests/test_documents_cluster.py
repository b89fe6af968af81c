"""Documents across three real nodes: concurrent edits, Y clients, restarts and partitions."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from testkit.cluster import Cluster
from testkit.processes import NodeProcess
from testkit.waiting import wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes with tokens and a cluster secret (the harness's default)."""
    made = Cluster(tmp_path / "c", 3)
    yield made
    made.close()


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The same over TLS, as nodes on different hosts run."""
    made = Cluster(tmp_path / "c", 3, tls=True)
    yield made
    made.close()


def _doc(node: NodeProcess, path: str) -> Any:
    answer = node.request("GET", f"/v1/docs/{path}")
    return answer.json()["doc"] if answer.status == 200 else None


def _write(node: NodeProcess, method: str, path: str, body: Any) -> None:
    answer = node.request(method, f"/v1/docs/{path}", json_body=body)
    assert answer.status == 200, answer.body


def _converged(cluster: Cluster, path: str, expected: Any = ..., timeout: float = 30.0) -> Any:
    seen: list[Any] = []

    def same() -> bool:
        seen[:] = [_doc(node, path) for node in cluster.nodes]
        return seen[0] == seen[1] == seen[2] and (expected is ... or seen[0] == expected)

    try:
        wait_for(same, timeout, f"{path} to converge")
    except AssertionError:
        raise AssertionError(f"not converged: {seen}") from None
    return seen[0]


def _concurrently(*actions: Any) -> None:
    threads = [threading.Thread(target=action) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_patches_of_different_same_and_nested_fields_converge(cluster: Cluster) -> None:
    base = {"name": "ann", "profile": {"address": {"city": "Oslo"}, "tags": ["a"]}, "n": 0}
    _write(cluster.nodes[0], "PUT", "users/u1", base)
    _converged(cluster, "users/u1", base)
    # Cut every link, so the three patches are truly concurrent.
    for proxy in cluster.links.values():
        proxy.cut()
    _write(cluster.nodes[0], "PATCH", "users/u1", {"name": "Ann", "n": 1})
    _write(cluster.nodes[1], "PATCH", "users/u1", {"profile": {"address": {"zip": "0150"}}, "n": 2})
    _write(cluster.nodes[2], "PATCH", "users/u1", {"profile": {"address": {"street": "Main"}}})
    _write(cluster.nodes[2], "PATCH", "users/u1", {"n": 3, "profile": {"tags": None}})
    cluster.heal()
    merged = _converged(cluster, "users/u1")
    assert merged["name"] == "Ann"
    assert merged["profile"] == {"address": {"city": "Oslo", "zip": "0150", "street": "Main"}}
    assert merged["n"] in (1, 2, 3), "the same field: one value wins, the same everywhere"
    versions = {
        node.request("GET", "/v1/docs/users/u1").json()["version"] for node in cluster.nodes
    }
    assert len(versions) == 1, "the version converges too"


def test_many_concurrent_patches_converge(cluster: Cluster) -> None:
    # "nested" exists before: objects created concurrently at two PoPs do not merge (docs).
    _write(cluster.nodes[0], "PUT", "load/d", {"shared": 0, "nested": {}})
    _converged(cluster, "load/d", {"shared": 0, "nested": {}})

    def writer(i: int) -> Any:
        def run() -> None:
            for r in range(30):
                patch = {f"own{i}": r, "shared": i * 100 + r, "nested": {f"k{i}": {"r": r}}}
                _write(cluster.nodes[i], "PATCH", "load/d", patch)

        return run

    _concurrently(*(writer(i) for i in range(3)))
    merged = _converged(cluster, "load/d")
    assert {merged[f"own{i}"] for i in range(3)} == {29}
    assert merged["nested"] == {f"k{i}": {"r": 29} for i in range(3)}


def test_concurrent_patch_and_delete_converge_to_deleted(cluster: Cluster) -> None:
    _write(cluster.nodes[0], "PUT", "users/gone", {"n": 1})
    _converged(cluster, "users/gone", {"n": 1})
    cluster.isolate(1)
    patched = cluster.nodes[1].request("PATCH", "/v1/docs/users/gone", json_body={"late": True})
    assert patched.status == 200
    assert cluster.nodes[0].request("DELETE", "/v1/docs/users/gone").status == 200
    cluster.heal()
    _converged(cluster, "users/gone", None)
    # Once node 2 has the patch too (a session read waits for it), the delete still wins.
    seen = cluster.nodes[2].request(
        "GET", "/v1/docs/users/gone", headers={"EdgeKV-Bookmark": patched.json()["bookmark"]}
    )
    assert seen.status == 404
    # A replace made after the delete was seen brings it back, everywhere.
    _write(cluster.nodes[2], "PUT", "users/gone", {"back": 1})
    _converged(cluster, "users/gone", {"back": 1})


def test_pycrdt_client_syncing_through_ystate_and_yupdate_converges_with_patches(
    cluster: Cluster,
) -> None:
    node0, node1 = cluster.nodes[0], cluster.nodes[1]
    _write(node0, "PUT", "notes/n1", {"title": "t", "body": {"text": "hello"}})
    _converged(cluster, "notes/n1")
    client: Doc[Any] = Doc()
    client.apply_update(node1.request("GET", "/v1/docs/notes/n1/ystate").body)
    content = client.get("content", type=Map)
    assert content["title"] == "t"
    # The client edits while another PoP patches.
    state = client.get_state()
    with client.transaction():
        content["from_client"] = "y"
        content["body"]["text"] = "hello from yjs"
    _write(node0, "PATCH", "notes/n1", {"from_http": 1, "body": {"lang": "en"}})
    answer = node1.request("POST", "/v1/docs/notes/n1/yupdate", body=client.get_update(state))
    assert answer.status == 200, answer.body
    merged = _converged(cluster, "notes/n1")
    # The client catches up from its state vector and sees the same document.
    sv = base64.urlsafe_b64encode(client.get_state()).decode()
    client.apply_update(node1.request("GET", f"/v1/docs/notes/n1/ystate?sv={sv}").body)
    assert merged == {
        "title": "t",
        "from_client": "y",
        "from_http": 1,
        "body": {"text": "hello from yjs", "lang": "en"},
    }
    mine = client.get("content", type=Map).to_py()
    assert mine is not None
    assert {k: v for k, v in mine.items() if k != "from_http"} == {
        k: v for k, v in merged.items() if k != "from_http"
    }
    assert mine["from_http"] == 1


@pytest.mark.slow
def test_restart_and_partition_keep_documents_and_converge(tls_cluster: Cluster) -> None:
    cluster = tls_cluster
    assert all(node.url.startswith("https://") for node in cluster.nodes)
    _write(cluster.nodes[0], "PUT", "r/d", {"a": 1})
    _converged(cluster, "r/d", {"a": 1})
    cluster.isolate(2)
    _write(cluster.nodes[2], "PATCH", "r/d", {"island": 1})
    _write(cluster.nodes[0], "PATCH", "r/d", {"mainland": 1})
    cluster.nodes[1].stop()
    _write(cluster.nodes[0], "PATCH", "r/d", {"while_1_was_down": 1})
    cluster.nodes[1].start()
    cluster.heal()
    merged = _converged(cluster, "r/d")
    assert merged == {"a": 1, "island": 1, "mainland": 1, "while_1_was_down": 1}
    # A SIGKILL loses nothing acknowledged.
    _write(cluster.nodes[2], "PATCH", "r/d", {"before_kill": 1})
    cluster.nodes[2].kill()
    cluster.nodes[2].start()
    assert _converged(cluster, "r/d")["before_kill"] == 1
