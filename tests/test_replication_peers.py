"""Peer links: membership, authentication, bad payloads, clock skew, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgpack
import pytest
from aiohttp import web

from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch, Hello, Progress, Welcome, decode, encode
from edgekv_replication.session import FIRST_IN_FLIGHT, IN_FLIGHT, PAGE_SIZE
from testkit.cluster import stored_state, wait_converged
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for

SECRET = "s3cret-for-tests"


def status(node: NodeProcess) -> dict:  # type: ignore[type-arg]
    return node.request("GET", "/v1/cluster/status").json()  # type: ignore[no-any-return]


def test_joining_through_one_seed_reaches_everyone(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    start_node = Security(tmp_path / "security").starter(start_node)  # tokens, cluster secret
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    c = start_node("c", ["--peer", b.url])
    d = start_node("d", ["--peer", a.url])
    nodes = [a, b, c, d]
    wait_for(
        lambda: all(sorted(m["state"] for m in status(n)["members"]) == ["up"] * 3 for n in nodes),
        what="every node linked to every other",
    )
    d.request("PUT", "/v1/kv/m/from-d", body=b"d")
    c.request("PUT", "/v1/kv/m/from-c", body=b"c")
    wait_converged(nodes)


def test_removed_member_is_no_longer_pulled_and_the_removal_spreads(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    start_node = Security(tmp_path / "security").starter(start_node)  # tokens, cluster secret
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    c = start_node("c", ["--peer", a.url])
    wait_for(lambda: len(status(b)["members"]) == 2, what="b knows c")
    c.kill()
    answer = a.request("DELETE", f"/v1/cluster/members/{c.node_id}")
    assert answer.status == 200
    wait_for(
        lambda: any(
            m["node_id"] == c.node_id and m["state"] == "removed" for m in status(b)["members"]
        ),
        what="removal reached b",
    )
    assert a.request("DELETE", "/v1/cluster/members/ffff").error_code == "not_found"
    assert a.request("DELETE", "/v1/cluster/members/xyz").error_code == "invalid_parameter"


def test_peer_with_wrong_secret_is_refused_and_logged(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a", ["--cluster-secret", SECRET])
    a.request("PUT", "/v1/kv/sec/k", body=b"private")
    b = start_node("b", ["--cluster-secret", "wrong", "--peer", a.url])
    wait_for(lambda: any("refused peer request" in line for line in a.output), what="log line")
    wait_for(
        lambda: any("401" in (m["last_error"] or "") for m in status(b)["members"]),
        what="b sees 401",
    )
    assert b.request("GET", "/v1/kv/sec/k").status == 404
    bare = a.request("GET", "/v1/peer/stream")
    assert (bare.status, bare.error_code) == (401, "unauthorized")


def test_right_secret_replicates(start_node: Callable[..., NodeProcess]) -> None:
    a = start_node("a", ["--cluster-secret", SECRET])
    b = start_node("b", ["--cluster-secret", SECRET, "--peer", a.url])
    a.request("PUT", "/v1/kv/sec/k", body=b"shared")
    wait_converged([a, b])
    metrics = b.request("GET", "/metrics").body.decode()
    peer = f'peer="{a.node_id}"'
    assert f"edgekv_repl_changes_applied_total{{{peer}}} 1.0" in metrics
    assert f"edgekv_repl_peer_up{{{peer}}} 1.0" in metrics
    assert "edgekv_repl_held_changes 0.0" in metrics
    assert "edgekv_repl_stream_reconnects_total" in metrics


async def test_garbage_hello_is_refused_without_effect(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a")
    before = stored_state(a)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(a.url + "/v1/peer/stream") as ws,
    ):
        assert isinstance(decode(await ws.receive_bytes()), Welcome)
        await ws.send_bytes(b"\x93\x01\x03garbage")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == 1007
    assert stored_state(a) == before
    # Logged as the stream is refused; the harness reads the log on a thread.
    wait_for(lambda: any("refused peer stream" in line for line in a.output), what="log line")


async def test_bad_batch_is_rejected_whole_and_the_stream_resumes(
    start_node: Callable[..., NodeProcess],
) -> None:
    """A fake peer serves one corrupt batch, then a good one."""
    fake_node = 0x1234
    good = Change("fake", b"good", b"1", None, None, 1 << 16, fake_node, 1)
    corrupt = msgpack.packb(
        [1, 3, [0, 2, 0, [list(good), ["fake", "not-bytes", b"2", None, None, 1, 1, 2]]]],
        use_bin_type=True,
    )
    hellos: list[Hello] = []
    served = 0

    async def stream(request: web.Request) -> web.WebSocketResponse:
        nonlocal served
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(encode(Welcome(fake_node, 7, "fake", 2)))
        hello = decode(await ws.receive_bytes())
        assert isinstance(hello, Hello)
        hellos.append(hello)
        served += 1
        if served == 1:
            await ws.send_bytes(corrupt)
        else:
            await ws.send_bytes(encode(Batch(hello.cursor, 2, (good,), 0)))
        async for _ in ws:  # hold the stream open until the node closes it
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/peer/stream", stream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        node = start_node("a", ["--peer", f"http://127.0.0.1:{port}", "--peer-discovery", "false"])
        deadline = asyncio.get_running_loop().time() + 20
        while served < 2 or node.request("GET", "/v1/kv/fake/good").status != 200:
            assert asyncio.get_running_loop().time() < deadline, "stream did not resume"
            await asyncio.sleep(0.02)
        wait_for(
            lambda: any("stream from" in line and "refused" in line for line in node.output),
            what="log line",
        )
        assert hellos[0].cursor == 0, "nothing of the corrupt batch moved the cursor"
        assert hellos[1].cursor == 0
        assert [row[1] for row in stored_state(node)] == [b"good"]
    finally:
        await runner.cleanup()


def test_change_from_a_fast_clock_is_held_until_the_clock_catches_up(
    start_node: Callable[..., NodeProcess],
) -> None:
    fast = start_node("fast", ["--test-clock-offset-ms", "2500"])
    local = start_node("local", ["--peer", fast.url, "--max-clock-offset", "0.5"])
    fast.request("PUT", "/v1/kv/skew/k", body=b"from the future")
    wait_for(lambda: status(local)["node"]["held_changes"] == 1, what="change held back")
    assert local.request("GET", "/v1/kv/skew/k").status == 404
    offsets = [m["clock_offset_ms"] for m in status(local)["members"]]
    assert offsets[0] is not None
    assert offsets[0] > 2000
    wait_for(lambda: local.request("GET", "/v1/kv/skew/k").status == 200, what="release")
    assert status(local)["node"]["held_changes"] == 0
    wait_converged([fast, local])


def test_peer_links_over_tls(tmp_path: Path, start_node: Callable[..., NodeProcess]) -> None:
    security = Security(tmp_path / "security", tls=True)  # and tokens, and the cluster secret
    start_node = security.starter(start_node)
    a = start_node("a")
    assert a.url.startswith("https://")
    b = start_node("b", ["--peer", a.url])
    for node, key in ((a, "from-a"), (b, "from-b")):
        assert node.request("PUT", f"/v1/kv/tls/{key}", body=key.encode()).status == 200
    wait_converged([a, b])
    assert b.request("GET", "/v1/kv/tls/from-a").body == b"from-a"
    # A client that does not trust the cluster's CA gets no answer at all.
    with pytest.raises(ssl.SSLCertVerificationError):
        a.request("GET", "/healthz", ssl_context=ssl.create_default_context())


@pytest.mark.slow
async def test_a_puller_reporting_progress_gets_only_a_window_of_batches_ahead(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a")
    assert (FIRST_IN_FLIGHT, IN_FLIGHT) == (4, 32)  # the steps below are worked out for these
    batches = 4 + 6 + 16 + 32 + 8
    for start in range(0, batches * PAGE_SIZE, 5_000):
        operations = [
            {"op": "put", "key": f"k{i:06d}", "value": "dg=="} for i in range(start, start + 5_000)
        ]
        assert (
            a.request("POST", "/v1/kv/flow/_bulk", json_body={"operations": operations}).status
            == 200
        )

    async def batches_until_quiet(ws: aiohttp.ClientWebSocketResponse) -> list[Batch]:
        got: list[Batch] = []
        while True:
            try:
                message = decode(await ws.receive_bytes(timeout=0.5))
            except TimeoutError:
                return got
            if isinstance(message, Batch) and message.changes:
                got.append(message)

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(a.url + "/v1/peer/stream") as ws,
    ):
        welcome = decode(await ws.receive_bytes())
        assert isinstance(welcome, Welcome)
        await ws.send_bytes(encode(Hello(0x5151, 1, "puller", "", 0, welcome.incarnation)))
        await ws.send_bytes(encode(Progress(0)))
        first = await batches_until_quiet(ws)
        assert len(first) == 4  # the first window; then the server waits for progress
        await ws.send_bytes(encode(Progress(first[1].upto)))  # two applied: the window doubles
        second = await batches_until_quiet(ws)
        assert len(second) == 8 - 2
        assert second[0].after == first[-1].upto
        await ws.send_bytes(encode(Progress(second[-1].upto)))
        third = await batches_until_quiet(ws)
        assert len(third) == 16
        await ws.send_bytes(encode(Progress(third[-1].upto)))
        fourth = await batches_until_quiet(ws)
        assert len(fourth) == IN_FLIGHT
        await ws.send_bytes(encode(Progress(fourth[4].upto)))  # five applied: it grows no more
        more = await batches_until_quiet(ws)
        assert len(more) == 5
        assert more[0].after == fourth[-1].upto
