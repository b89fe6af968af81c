"""Changes from peers are held to the API's limits: a real node pulls from a fake peer.

The fake peer speaks the real wire format (``edgekv_replication.envelope``):
it serves ``/v1/peer/stream``, sends Welcome, reads Hello, then sends what the
test scripted for that stream, and holds the stream until the node closes it.
"""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch, Hello, Members, Welcome, decode, encode
from testkit.cluster import stored_state
from testkit.processes import NodeProcess
from testkit.waiting import wait_for
from tests.intake_cases import LIMIT_ARGS, good_change, invalid_changes

FAKE = 0x1234
FAKE_NAME = "fakepeer"

Script = list["bytes | Callable[[Hello], bytes] | threading.Event"]
"""Per stream: messages to send (or made from the node's Hello), or an event to
wait for before closing the stream."""


@dataclass
class FakePeer:
    """A peer at 127.0.0.1:port serving one scripted stream per connection."""

    scripts: queue.Queue[Script] = field(default_factory=queue.Queue)
    hellos: list[Hello] = field(default_factory=list)
    ended: int = 0
    sent: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        try:
            script = self.scripts.get_nowait()
        except queue.Empty:
            script = []
        await ws.send_bytes(encode(Welcome(FAKE, 7, FAKE_NAME, 10**6)))
        hello = decode(await ws.receive_bytes())
        assert isinstance(hello, Hello)
        self.hellos.append(hello)
        for item in script:
            if isinstance(item, threading.Event):
                await asyncio.get_running_loop().run_in_executor(None, item.wait, 30)
                await ws.close()
            else:
                await ws.send_bytes(item(hello) if callable(item) else item)
        self.sent.set()
        async for _ in ws:  # hold the stream until the node closes it
            pass
        self.ended += 1
        return ws

    def serve(self) -> Iterator[FakePeer]:
        ready = threading.Event()
        stop = threading.Event()

        async def run() -> None:
            app = web.Application()
            app.router.add_get("/v1/peer/stream", self._stream)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
            await runner.cleanup()

        thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
        thread.start()
        assert ready.wait(10)
        try:
            yield self
        finally:
            stop.set()
            thread.join(10)


@pytest.fixture
def fake_peer() -> Iterator[FakePeer]:
    yield from FakePeer().serve()


def batch_of(changes: list[Change]) -> Callable[[Hello], bytes]:
    """A Batch continuing from the node's cursor, holding ``changes`` (seqs renumbered)."""

    def make(hello: Hello) -> bytes:
        start = hello.cursor
        numbered = tuple(c._replace(seq=start + i + 1) for i, c in enumerate(changes))
        return encode(Batch(start, start + len(numbered), numbered, int(time.time() * 1000)))

    return make


def start_puller(start_node: Callable[..., NodeProcess], peer: FakePeer) -> NodeProcess:
    return start_node("a", [*LIMIT_ARGS, "--peer", peer.url(), "--peer-discovery", "false"])


def fake_link(node: NodeProcess) -> dict[str, Any]:
    members = node.request("GET", "/v1/cluster/status").json()["members"]
    return next(m for m in members if m["node_id"] == f"{FAKE:016x}")


def last_error(node: NodeProcess) -> str:
    try:
        return str(fake_link(node)["last_error"] or "")
    except StopIteration:
        return ""


def assert_nothing_stored(node: NodeProcess) -> None:
    assert stored_state(node) == []
    listing = node.request("GET", "/v1/kv/p")
    assert (listing.status, listing.json()["keys"]) == (200, [])


@pytest.mark.slow
def test_batches_holding_an_invalid_change_are_refused_whole(
    start_node: Callable[..., NodeProcess], fake_peer: FakePeer
) -> None:
    node: NodeProcess | None = None

    @settings(
        max_examples=8,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(bad=invalid_changes("p"), position=st.integers(min_value=0, max_value=3))
    def refused(bad: Change, position: int) -> None:
        nonlocal node
        good = [good_change("p", f"g{i}".encode()) for i in range(3)]
        fake_peer.scripts.put([batch_of([*good[:position], bad, *good[position:]])])
        ended = fake_peer.ended
        if node is None:
            node = start_puller(start_node, fake_peer)
        wait_for(lambda: fake_peer.ended > ended, 20, "the node to close the stream")
        label = f"from peer '{FAKE_NAME}' ({FAKE:016x})"
        wait_for(lambda: label in last_error(node), 10, "last_error")
        error = last_error(node)
        # Refused by the envelope (not even a change: an empty namespace) or by the
        # limits, which name the change.
        assert "refused a message" in error or f"change {position} " in error, error
        assert_nothing_stored(node)
        assert all(hello.cursor == 0 for hello in fake_peer.hellos)

    refused()
    assert node is not None
    wait_for(
        lambda: any("from peer 'fakepeer'" in line for line in node.output),
        what="log line",
    )
    # A good batch on a new stream applies.
    fake_peer.scripts.put([batch_of([good_change("p", b"fine")])])
    wait_for(lambda: node.request("GET", "/v1/kv/p/fine").status == 200, 20, "good batch")
    assert [row[1] for row in stored_state(node)] == [b"fine"]


def test_a_million_change_batch_is_refused_without_stalling_the_node(
    start_node: Callable[..., NodeProcess], fake_peer: FakePeer
) -> None:
    changes = [good_change("p", b"k%d" % i, seq=i + 1) for i in range(1_000_000)]
    huge = encode(Batch(0, len(changes), tuple(changes), int(time.time() * 1000)))
    del changes
    fake_peer.scripts.put([huge])
    node = start_puller(start_node, fake_peer)
    assert fake_peer.sent.wait(30)
    # While the node would be decoding and applying it, it answers others.
    assert node.request("GET", "/v1/kv/p/k1", timeout=5).status == 404
    wait_for(lambda: "at most 5000 changes" in last_error(node), 20, "last_error")
    assert_nothing_stored(node)


def test_a_removed_member_stays_removed_when_a_peer_stamps_it_in_2100(
    start_node: Callable[..., NodeProcess], fake_peer: FakePeer
) -> None:
    ghost, ghost_url = 0x6606, "http://127.0.0.1:9"
    now_ms = int(time.time() * 1000)
    year_2100_ms = 4_102_444_800_000
    release = threading.Event()
    fake_peer.scripts.put(
        [encode(Members(((ghost, ghost_url, "ghost", False, now_ms, ""),))), release]
    )
    fake_peer.scripts.put(
        [
            encode(Members(((ghost, ghost_url, "ghost", False, year_2100_ms, ""),))),
            batch_of([good_change("p", b"after")]),
        ]
    )
    node = start_puller(start_node, fake_peer)

    def ghost_state() -> str | None:
        members = node.request("GET", "/v1/cluster/status").json()["members"]
        return next((m["state"] for m in members if m["node_id"] == f"{ghost:016x}"), None)

    wait_for(lambda: ghost_state() is not None, 20, "the ghost member learned")
    removed = subprocess.run(
        [sys.executable, "-m", "edgekv", "cluster", "remove", "--url", node.url, f"{ghost:016x}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert removed.returncode == 0, removed.stderr
    assert ghost_state() == "removed"
    release.set()  # the next stream advertises the ghost stamped in 2100, then a batch
    wait_for(lambda: node.request("GET", "/v1/kv/p/after").status == 200, 20, "second stream")
    assert ghost_state() == "removed"
    wait_for(
        lambda: any(f"refused member {ghost:016x}" in line for line in node.output),
        what="log line",
    )
