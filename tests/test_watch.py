"""Watch streams on one real node: snapshot, live changes, resume, re-list, cut, limits."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from edgekv_client import Client, LocalReader
from edgekv_replication.watch_tokens import WatchToken
from testkit.processes import NodeProcess
from testkit.sse import SseStream
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


@pytest.fixture
def secured(tmp_path: Path, start_node: StartNode) -> Callable[..., NodeProcess]:
    """Start a node with an admin token (``node.token``) and a read-only one (``reader``)."""

    def start(*args: str) -> NodeProcess:
        admin, reader = new_token(), new_token()
        config = tmp_path / f"tokens{len(args)}-{time.monotonic_ns()}.toml"
        config.write_text(
            token_toml("admin", admin, ["admin"]) + token_toml("reader", reader, ["read:other"])
        )
        node = start_node(f"n{time.monotonic_ns()}", ["--config", str(config), *args])
        node.token = admin
        node.reader_token = reader  # type: ignore[attr-defined]
        return node

    return start


def watch(node: NodeProcess, path: str, **options: object) -> SseStream:
    return SseStream(node.url, path, token=node.token, **options)  # type: ignore[arg-type]


def put(
    node: NodeProcess, ns: str, key: str, value: bytes, headers: dict[str, str] | None = None
) -> str:
    answer = node.request("PUT", f"/v1/kv/{ns}/{key}", body=value, headers=headers)
    assert answer.status == 200, answer.body
    return str(json.loads(answer.body)["version"])


def delete(node: NodeProcess, ns: str, key: str) -> None:
    assert node.request("DELETE", f"/v1/kv/{ns}/{key}").status == 200


def test_snapshot_then_live_changes_under_a_prefix(secured: Callable[..., NodeProcess]) -> None:
    node = secured()
    put(node, "ns", "a1", b"one", {"EdgeKV-Metadata": '{"owner": "web"}'})
    put(node, "ns", "a2", b"two")
    put(node, "ns", "b1", b"other")
    delete(node, "ns", "a2")
    stream = watch(node, "/v1/kv/ns/_watch?prefix=a&snapshot=true")
    assert stream.status == 200
    assert (stream.response.getheader("Content-Type") or "").startswith("text/event-stream")
    snapshot, ready = stream.until("ready")
    # The snapshot holds live keys only, with value and metadata; its events carry no id.
    assert [(b.json()["key"], b.json()["op"]) for b in snapshot] == [("a1", "put")]
    assert base64.b64decode(snapshot[0].json()["value"]) == b"one"
    assert snapshot[0].json()["metadata"] == {"owner": "web"}
    assert snapshot[0].id is None
    assert ready.id is not None
    version = put(node, "ns", "a3", b"three")
    delete(node, "ns", "a1")
    put(node, "ns", "b2", b"not watched")
    live = [next(b for b in stream.blocks() if b.type == "change") for _ in range(2)]
    assert [(b.json()["key"], b.json()["op"]) for b in live] == [("a3", "put"), ("a1", "delete")]
    assert live[0].json()["version"] == version
    assert all(b.id is not None for b in live)
    stream.close()


def test_resume_at_the_same_node_sends_exactly_what_was_missed(
    secured: Callable[..., NodeProcess],
) -> None:
    node = secured("--watch-heartbeat", "0.2")
    put(node, "ns", "k1", b"1")
    stream = watch(node, "/v1/kv/ns/_watch")
    _, ready = stream.until("ready")
    put(node, "ns", "k2", b"2")
    seen, _ = stream.until("change"), None
    first = seen[1]
    assert first.json()["key"] == "k2"
    stream.close()
    # Missed while away: an overwrite, a new key and a delete (folded: k3's newest state only).
    put(node, "ns", "k3", b"old")
    put(node, "ns", "k3", b"new")
    delete(node, "ns", "k1")
    resumed = watch(node, "/v1/kv/ns/_watch", headers={"Last-Event-ID": first.id or ""})
    caught_up, _ = resumed.until("ready")
    assert [(b.json()["key"], b.json()["op"]) for b in caught_up] == [
        ("k3", "put"),
        ("k1", "delete"),
    ]
    assert base64.b64decode(caught_up[0].json()["value"]) == b"new"
    resumed.close()
    # The same through ?after=, from the token of the ready event: nothing is sent again.
    again = watch(node, f"/v1/kv/ns/_watch?after={ready.id}")
    caught_up, _ = again.until("ready")
    assert [b.json()["key"] for b in caught_up] == ["k2", "k3", "k1"]
    again.close()


def test_resume_with_another_nodes_token_sends_what_its_vector_does_not_cover(
    secured: Callable[..., NodeProcess],
) -> None:
    node = secured()
    put(node, "ns", "old", b"1")
    stream = watch(node, "/v1/kv/ns/_watch")
    _, ready = stream.until("ready")
    stream.close()
    put(node, "ns", "new", b"2")
    token = WatchToken.decode(ready.id or "")
    # A token some other PoP issued, covering what this one's ready event covered.
    foreign = WatchToken(token.node ^ 1, 7, 123_456, token.covered).encode()
    resumed = watch(node, f"/v1/kv/ns/_watch?after={foreign}")
    caught_up, ready2 = resumed.until("ready")
    assert [b.json()["key"] for b in caught_up] == ["new"]
    assert WatchToken.decode(ready2.id or "").node == token.node
    resumed.close()
    # A vector that covers nothing: every key's newest state.
    bare = WatchToken(token.node ^ 1, 7, 1, {}).encode()
    with watch(node, f"/v1/kv/ns/_watch?after={bare}") as everything:
        assert sorted(b.json()["key"] for b in everything.until("ready")[0]) == ["new", "old"]


def test_keys_filter_and_values_left_out(secured: Callable[..., NodeProcess]) -> None:
    node = secured("--watch-value-bytes", "4")
    stream = watch(node, "/v1/kv/ns/_watch?keys=x&keys=y%2Fz")
    stream.until("ready")
    put(node, "ns", "w", b"skip")
    put(node, "ns", "y/z", b"small")  # 5 bytes: over the inline limit of 4
    put(node, "ns", "x", b"tiny")
    changes = [next(b for b in stream.blocks() if b.type == "change").json() for _ in range(2)]
    assert [c["key"] for c in changes] == ["y/z", "x"]
    assert "value" not in changes[0]
    assert changes[0]["value_bytes"] == 5
    assert base64.b64decode(changes[1]["value"]) == b"tiny"
    stream.close()
    without = watch(node, "/v1/kv/ns/_watch?include_values=false&snapshot=true")
    snapshot, _ = without.until("ready")
    assert {c.json()["key"]: c.json().get("value_bytes") for c in snapshot} == {
        "w": 4,
        "x": 4,
        "y/z": 5,
    }
    without.close()


def test_refusals_have_the_error_shape(secured: Callable[..., NodeProcess]) -> None:
    node = secured("--max-watchers-per-token", "1", "--watch-heartbeat", "0.2")
    for path, status, code in (
        ("/v1/kv/ns/_watch?after=w1.x", 400, "invalid_watch_token"),
        ("/v1/kv/ns/_watch?snapshot=maybe", 400, "invalid_parameter"),
        ("/v1/kv/ns/_watch?prefix=a&keys=b", 400, "invalid_parameter"),
        ("/v1/kv/b%20d/_watch", 400, "invalid_namespace"),
    ):
        refused = watch(node, path)
        assert (refused.status, refused.body()["error"]["code"]) == (status, code), path
    forbidden = SseStream(node.url, "/v1/kv/ns/_watch", token=node.reader_token)  # type: ignore[attr-defined]
    assert (forbidden.status, forbidden.body()["error"]["code"]) == (403, "forbidden")
    allowed = SseStream(node.url, "/v1/kv/other/_watch", token=node.reader_token)  # type: ignore[attr-defined]
    assert allowed.status == 200
    second = SseStream(node.url, "/v1/kv/other/_watch", token=node.reader_token)  # type: ignore[attr-defined]
    assert (second.status, second.body()["error"]["code"]) == (429, "too_many_watchers")
    assert second.response.getheader("Retry-After")
    allowed.close()
    # Once the first stream is gone, the token may open another.
    wait_for(lambda: _status(node)["watchers_open"] == 0, what="the closed watcher counted out")
    third = SseStream(node.url, "/v1/kv/other/_watch", token=node.reader_token)  # type: ignore[attr-defined]
    assert third.status == 200
    third.close()


def _status(node: NodeProcess) -> dict[str, int]:
    answer = node.request("GET", "/v1/cluster/status")
    watch_fields: dict[str, int] = json.loads(answer.body)["node"]["watch"]
    return watch_fields


def test_a_watcher_that_does_not_read_is_cut_and_resumes_without_a_gap(
    secured: Callable[..., NodeProcess],
) -> None:
    node = secured("--watch-buffer-bytes", "65536", "--watch-value-bytes", "0")
    stream = watch(node, "/v1/kv/ns/_watch", receive_buffer=4096)
    _, ready = stream.until("ready")
    written = 0
    while _status(node)["watchers_cut"] == 0:  # it reads nothing more: the node cuts it
        operations = [
            {
                "op": "put",
                "key": f"k{written + i:06d}",
                "value": base64.b64encode(b"v" * 200).decode(),
            }
            for i in range(2000)
        ]
        answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": operations})
        assert answer.status == 200, answer.body
        written += len(operations)
        assert written < 200_000, "never cut"
    stream.close()
    assert _status(node)["watchers_open"] <= 1
    resumed = watch(node, f"/v1/kv/ns/_watch?after={ready.id}")
    caught_up, _ = resumed.until("ready")
    assert sorted(b.json()["key"] for b in caught_up) == [f"k{i:06d}" for i in range(written)]
    resumed.close()


def test_watchers_of_one_filter_are_cut_one_by_one(secured: Callable[..., NodeProcess]) -> None:
    # Watchers with the same filter share their events (one group); the bound is each's.
    node = secured("--watch-buffer-bytes", "65536", "--watch-value-bytes", "0")
    stalled = watch(node, "/v1/kv/ns/_watch?prefix=k", receive_buffer=4096)
    stalled.until("ready")
    reading = watch(node, "/v1/kv/ns/_watch?prefix=k")
    reading.until("ready")
    keys: list[str] = []
    received: list[str] = []

    def read_all() -> None:
        for block in reading.blocks():
            if block.type == "change":
                received.append(block.json()["key"])

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    while _status(node)["watchers_cut"] == 0:
        # A round's events under the bound (200 of about 260 bytes): only the stalled one fills.
        batch = [f"k{len(keys) + i:06d}" for i in range(200)]
        operations = [
            {"op": "put", "key": key, "value": base64.b64encode(b"v" * 200).decode()}
            for key in batch
        ]
        answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": operations})
        assert answer.status == 200, answer.body
        keys += batch
        assert len(keys) < 200_000, "never cut"
    wait_for(lambda: len(received) >= len(keys), what="every event at the reading watcher")
    assert received == keys
    assert _status(node)["watchers_cut"] == 1
    assert node.stop() == 0  # the reading stream ends (a cut: the node stops), and its thread
    reader.join(10)
    stalled.close()
    reading.close()


def test_a_token_behind_collected_tombstones_gets_a_relist_event(
    secured: Callable[..., NodeProcess],
) -> None:
    node = secured("--tombstone-horizon", "0", "--tombstone-gc-interval", "0.05")
    put(node, "ns", "gone", b"1")
    stream = watch(node, "/v1/kv/ns/_watch")
    _, ready = stream.until("ready")
    stream.close()
    delete(node, "ns", "gone")
    wait_for(lambda: _purged(node, ready.id or ""), what="the tombstone collected")
    with watch(node, f"/v1/kv/ns/_watch?after={ready.id}") as relisted:
        blocks = list(relisted.blocks())
    assert [b.type for b in blocks] == ["relist"]
    assert "list again" in blocks[0].json()["reason"]
    # The same at a PoP that never issued the token: its vector does not cover the delete.
    token = WatchToken.decode(ready.id or "")
    foreign = WatchToken(token.node ^ 1, 1, token.seq, token.covered).encode()
    with watch(node, f"/v1/kv/ns/_watch?after={foreign}") as elsewhere:
        assert [b.type for b in elsewhere.blocks()] == ["relist"]


def _purged(node: NodeProcess, token: str) -> bool:
    with watch(node, f"/v1/kv/ns/_watch?after={token}") as stream:
        return next(stream.blocks()).type == "relist"


def test_documents_are_watched_whole(secured: Callable[..., NodeProcess]) -> None:
    node = secured()
    assert node.request("PUT", "/v1/docs/users/ann", json_body={"name": "Ann"}).status == 200
    stream = watch(node, "/v1/docs/users/_watch?snapshot=true")
    snapshot, _ = stream.until("ready")
    assert [(b.json()["key"], b.json()["value"]) for b in snapshot] == [("ann", {"name": "Ann"})]
    assert node.request("PATCH", "/v1/docs/users/ann", json_body={"age": 31}).status == 200
    assert node.request("DELETE", "/v1/docs/users/ann").status == 200
    events = [next(b for b in stream.blocks() if b.type == "change").json() for _ in range(2)]
    assert events[0]["value"] == {"name": "Ann", "age": 31}
    assert events[1]["op"] == "delete"
    stream.close()


def test_documents_resume_at_another_node(secured: Callable[..., NodeProcess]) -> None:
    node = secured()
    for doc in ("a", "b"):
        assert node.request("PUT", f"/v1/docs/users/{doc}", json_body={"n": doc}).status == 200
    with watch(node, "/v1/docs/users/_watch") as stream:
        _, ready = stream.until("ready")
    assert node.request("PATCH", "/v1/docs/users/b", json_body={"m": 1}).status == 200
    token = WatchToken.decode(ready.id or "")
    foreign = WatchToken(token.node ^ 1, 1, 1, token.covered).encode()
    with watch(node, f"/v1/docs/users/_watch?after={foreign}") as resumed:
        caught_up, _ = resumed.until("ready")
    # b changed past the vector: it comes whole; a did not: it is left out.
    assert [(b.json()["key"], b.json()["value"]) for b in caught_up] == [("b", {"n": "b", "m": 1})]
    bare = WatchToken(token.node ^ 1, 1, 1, {}).encode()
    with watch(node, f"/v1/docs/users/_watch?after={bare}") as everything:
        assert sorted(b.json()["key"] for b in everything.until("ready")[0]) == ["a", "b"]


def test_heartbeats_carry_a_newer_token_when_the_log_moves_on(
    secured: Callable[..., NodeProcess],
) -> None:
    node = secured("--watch-heartbeat", "0.1")
    stream = watch(node, "/v1/kv/ns/_watch?prefix=quiet")
    _, ready = stream.until("ready")
    put(node, "ns", "busy", b"1")
    moved = next(b for b in stream.blocks() if b.type == "id")
    assert WatchToken.decode(moved.id or "").seq > WatchToken.decode(ready.id or "").seq
    stream.close()


def test_client_watch_iterates_and_resumes(secured: Callable[..., NodeProcess]) -> None:
    node = secured("--watch-heartbeat", "0.2")
    put(node, "ns", "user:1", b"a")
    events = []
    with Client(node.url, token=node.token) as kv:
        for event in kv.watch("ns", prefix="user:", snapshot=True):
            events.append(event)
            if event.type == "ready":
                put(node, "ns", "user:2", b"b")
            if event.key == "user:2":
                break
        token = events[-1].token
        put(node, "ns", "user:3", b"c")
        resumed = next(e for e in kv.watch("ns", prefix="user:", after=token) if e.type == "change")
    assert [(e.type, e.key, e.value) for e in events] == [
        ("change", "user:1", b"a"),
        ("ready", "", None),
        ("change", "user:2", b"b"),
    ]
    assert (resumed.key, resumed.value) == ("user:3", b"c")


def test_async_client_watch(secured: Callable[..., NodeProcess]) -> None:
    import asyncio

    from edgekv_client import AsyncClient

    node = secured()

    async def main() -> list[tuple[str, str]]:
        got = []
        async with AsyncClient(node.url, token=node.token) as kv:
            async for event in kv.watch("ns"):
                if event.type == "ready":
                    await kv.put("ns", "k", "v")
                elif event.type == "change":
                    got.append((event.key, event.op))
                    break
        return got

    assert asyncio.run(main()) == [("k", "put")]


def test_local_reader_tells_whether_anything_changed(secured: Callable[..., NodeProcess]) -> None:
    node = secured()
    put(node, "ns", "k", b"1")
    with LocalReader(node.data_dir) as local:
        marker = local.change_marker()
        assert not local.changed_since(marker)
        put(node, "ns", "k", b"2")
        assert local.changed_since(marker)


def test_the_node_stops_with_watchers_attached(secured: Callable[..., NodeProcess]) -> None:
    node = secured()
    stream = watch(node, "/v1/kv/ns/_watch")
    stream.until("ready")
    ended = threading.Event()

    def read_to_end() -> None:
        for block in stream.blocks():
            if block.type == "cut":
                ended.set()

    reader = threading.Thread(target=read_to_end, daemon=True)
    reader.start()
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 5, "a watch stream held the shutdown"
    reader.join(5)
    stream.close()
    assert ended.is_set()


@pytest.mark.parametrize("kind", ["kv", "docs", "counters", "sets"])
def test_head_on_a_watch_answers_the_headers_and_opens_no_stream(
    secured: Callable[..., NodeProcess], kind: str
) -> None:
    node = secured()
    host, port = node.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    auth = {"Authorization": f"Bearer {node.token}"}
    conn.request("HEAD", f"/v1/{kind}/space/_watch", headers=auth)
    answer = conn.getresponse()
    assert answer.status == 200
    assert answer.getheader("Content-Type", "").startswith("text/event-stream")
    assert answer.read() == b""
    # The connection is free for the next request at once, and no watcher was opened.
    conn.request("GET", "/v1/cluster/status", headers=auth)
    status = conn.getresponse()
    assert status.status == 200
    assert json.loads(status.read())["node"]["watch"]["watchers_open"] == 0
    conn.close()


def _rss_kib(node: NodeProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_client_that_stops_reading_during_its_snapshot_holds_a_page_and_is_cut(
    secured: Callable[..., NodeProcess],
) -> None:
    # Large values (inline up to watch_value_bytes): a snapshot of them is megabytes.
    node = secured("--watch-heartbeat", "3", "--shutdown-timeout", "5")
    value = base64.b64encode(b"v" * 60_000).decode()
    for first in range(0, 300, 50):
        operations = [
            {"op": "put", "key": f"k{i:03d}", "value": value} for i in range(first, first + 50)
        ]
        answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": operations})
        assert answer.status == 200, answer.body
    before = _rss_kib(node)
    stuck = [watch(node, "/v1/kv/ns/_watch?snapshot=true", receive_buffer=1024) for _ in range(10)]
    wait_for(lambda: _status(node)["watchers_open"] == 10, what="ten stuck snapshots")
    # Each holds what one page of the catch-up is (not the whole 18 MB snapshot, nor copies).
    grown_mib = (_rss_kib(node) - before) / 1024
    assert grown_mib < 60, f"{grown_mib:.0f} MiB for ten stalled snapshots"
    # Taking nothing for a heartbeat interval, they are cut, and their connections closed.
    wait_for(lambda: _status(node)["watchers_cut"] == 10, what="the stalled snapshots cut")
    assert _status(node)["watchers_open"] == 0
    for stream in stuck:
        stream.close()
    # One more, stuck when the node is asked to stop: it does not hold the stop up.
    last = watch(node, "/v1/kv/ns/_watch?snapshot=true", receive_buffer=1024)
    assert last.status == 200
    wait_for(lambda: _status(node)["watchers_open"] == 1, what="a stuck snapshot")
    assert node.stop(timeout=5 + 3) == 0
    last.close()
