"""The watch fan-out process: it serves the live tail of plain key-value streams, the node
takes them back when it ends them, and watchers outlive the process dying."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.processes import NodeProcess
from testkit.sse import SseBlock, SseStream
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


def _fanout_pids(node: NodeProcess) -> list[int]:
    """The node's children that are its watch fan-out process."""
    assert node.proc is not None
    found = []
    for task in os.listdir(f"/proc/{node.proc.pid}/task"):
        children = Path(f"/proc/{node.proc.pid}/task/{task}/children").read_text().split()
        for child in map(int, children):
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"edgekv.watch.fanout_worker" in command:
                found.append(child)
    return found


def _watch_status(node: NodeProcess) -> dict[str, int]:
    answer = node.request("GET", "/v1/cluster/status")
    fields: dict[str, int] = json.loads(answer.body)["node"]["watch"]
    return fields


def _put(node: NodeProcess, key: str) -> None:
    answer = node.request("PUT", f"/v1/kv/ns/{key}", body=key.encode())
    assert answer.status == 200, answer.body


def hang_up(stream: SseStream) -> None:
    """Close ``stream`` as its client going: at once, even while a thread reads it."""
    if stream.conn.sock is not None:
        stream.conn.sock.shutdown(socket.SHUT_RDWR)
    stream.close()


class Reader:
    """A watch stream read to its end in a thread: its change keys, and whether it ended."""

    def __init__(self, stream: SseStream) -> None:
        self.stream = stream
        self.keys: list[str] = []
        self.last: SseBlock | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for block in self.stream.blocks():
                if block.type == "change":
                    self.keys.append(block.json()["key"])
                    self.last = block
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # the connection dropped, or the test closed it: the end for this reader
        self.ended.set()


def _handed_over(node: NodeProcess, path: str, in_fanout: int = 1) -> tuple[SseStream, Reader]:
    """A stream opened on ``node``, live and handed over (the ``in_fanout``-th), being read."""
    stream = SseStream(node.url, path)
    stream.until("ready")
    wait_for(
        lambda: _watch_status(node)["watchers_in_fanout"] == in_fanout,
        what="the stream handed over",
    )
    return stream, Reader(stream)


def test_the_fanout_process_serves_plain_key_value_streams(start_node: StartNode) -> None:
    node = start_node("n")
    assert len(_fanout_pids(node)) == 1
    stream, reader = _handed_over(node, "/v1/kv/ns/_watch?prefix=k")
    keys = [f"k{i:03d}" for i in range(50)]
    for key in keys:
        _put(node, key)
    _put(node, "other")  # outside the prefix
    wait_for(lambda: reader.keys == keys, what="every event from the fan-out process")
    wait_for(lambda: _watch_status(node)["events_sent"] >= 50, what="its events counted")
    hang_up(stream)
    wait_for(lambda: _watch_status(node)["watchers_open"] == 0, what="the closed stream gone")
    assert _watch_status(node)["watchers_in_fanout"] == 0


def test_streams_outlive_the_fanout_process(start_node: StartNode) -> None:
    node = start_node("n")
    stream, reader = _handed_over(node, "/v1/kv/ns/_watch")
    _put(node, "before")
    wait_for(lambda: reader.keys == ["before"], what="the first event")
    (worker,) = _fanout_pids(node)
    os.kill(worker, signal.SIGKILL)
    # The node drops what the process served (its client resumes from its last id) ...
    assert reader.ended.wait(10), "the stream outlived its writer"
    stream.close()
    wait_for(lambda: worker not in _children(node), what="the process reaped (no zombie)")
    assert _watch_status(node)["watchers_open"] == 0
    assert reader.last is not None
    _put(node, "during")
    # ... and resumes it: nothing missed, nothing twice (written by the node itself
    # until a new process is up) ...
    assert reader.last.id is not None
    resumed = SseStream(node.url, "/v1/kv/ns/_watch", headers={"Last-Event-ID": reader.last.id})
    caught_up, _ = resumed.until("ready")
    assert [block.json()["key"] for block in caught_up] == ["during"]
    live = Reader(resumed)
    _put(node, "after")
    wait_for(lambda: live.keys == ["after"], what="live events after the process died")
    hang_up(resumed)
    _a_new_process_serves(node, worker)


def _a_new_process_serves(node: NodeProcess, ended: int) -> None:
    """A fan-out process other than ``ended`` is started, and takes new streams again."""
    wait_for(lambda: _fanout_pids(node) not in ([], [ended]), what="a new fan-out process")
    wait_for(lambda: _watch_status(node)["watchers_open"] == 0, what="the old streams gone")
    stream, reader = _handed_over(node, "/v1/kv/ns/_watch")
    _put(node, "new")
    wait_for(lambda: reader.keys == ["new"], what="events from the new process")
    hang_up(stream)


@pytest.mark.parametrize("fanout", ["true", "false"])
def test_a_stalled_watcher_is_cut_by_whoever_writes_it(start_node: StartNode, fanout: str) -> None:
    node = start_node(
        "n",
        ["--watch-fanout", fanout, "--watch-buffer-bytes", "65536", "--watch-value-bytes", "0"],
    )
    assert len(_fanout_pids(node)) == (1 if fanout == "true" else 0)
    # The loopback's own buffers (no small receive window: reading on through one
    # would crawl at TCP's persist timer) hold a few MB before the node's bound is hit.
    stalled = SseStream(node.url, "/v1/kv/ns/_watch")
    _, ready = stalled.until("ready")
    handed = 1 if fanout == "true" else 0
    wait_for(lambda: _watch_status(node)["watchers_in_fanout"] == handed, what="where it is")
    written = 0
    while _watch_status(node)["watchers_cut"] == 0:
        operations = [
            {"op": "put", "key": f"k{written + i:06d}", "value": "dg=="} for i in range(2000)
        ]
        answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": operations})
        assert answer.status == 200, answer.body
        written += len(operations)
        assert written < 200_000, "never cut"
    # Reading on, it gets whole events up to the cut, then the cut event saying why.
    keys: list[str] = []
    for block in stalled.blocks():
        if block.type == "change":
            keys.append(block.json()["key"])
        elif block.type == "cut":
            assert "resume" in block.json()["reason"]
            break
    else:
        raise AssertionError("no cut event")
    assert keys == [f"k{i:06d}" for i in range(len(keys))]
    stalled.close()
    resumed = SseStream(node.url, f"/v1/kv/ns/_watch?after={ready.id}")
    caught_up, _ = resumed.until("ready")
    assert len(caught_up) == written
    resumed.close()


def _raw_watch(node: NodeProcess, path: str) -> socket.socket:
    """A watch stream over HTTP/1.0 (the body is the bytes as they are): its socket."""
    host, port = node.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, needle: bytes, seconds: float) -> bytes:
    """Bytes from ``sock`` until ``needle`` has come (or ``seconds`` pass: an error)."""
    got = b""
    sock.settimeout(seconds)
    while needle not in got:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        got += chunk
    return got


def _silent_for(sock: socket.socket, seconds: float) -> bool:
    """Whether nothing at all comes from ``sock`` for ``seconds``."""
    sock.settimeout(seconds)
    try:
        return not sock.recv(65536)
    except TimeoutError:
        return True


@pytest.mark.slow  # seconds of silence are what it checks
def test_a_hung_node_s_streams_fall_silent(start_node: StartNode) -> None:
    # A stream that beats says its node is alive: should the node hang, the fan-out
    # process (which would go on beating by itself) lets its streams fall silent, so
    # their clients time out and resume at another PoP, as with the node's own streams.
    heartbeat = 0.4
    node = start_node("n", ["--watch-heartbeat", str(heartbeat)])
    sock = _raw_watch(node, "/v1/kv/ns/_watch")
    _read_until(sock, b"event: ready", 10)
    wait_for(lambda: _watch_status(node)["watchers_in_fanout"] == 1, what="the stream handed over")
    _read_until(sock, b": heartbeat", 10)  # beating from the fan-out process
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        # The last tick may let it beat for one more interval; then nothing comes.
        _silent_for(sock, 3 * heartbeat)
        assert _silent_for(sock, 4 * heartbeat), "heartbeats went on with the node hung"
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    _read_until(sock, b": heartbeat", 10)  # the node is back: so are the heartbeats
    sock.close()


def test_a_fanout_process_that_lagged_catches_up_exactly(start_node: StartNode) -> None:
    # Rounds queue while the process gets no CPU; it reads them as one when it runs again,
    # but a watcher handed over among them still joins at its own head: each stream gets
    # every event after its ready, once, in order.
    node = start_node("n")
    first, first_reader = _handed_over(node, "/v1/kv/ns/_watch")
    (worker,) = _fanout_pids(node)
    os.kill(worker, signal.SIGSTOP)
    try:
        before = [f"a{i:03d}" for i in range(100)]
        for key in before:
            _put(node, key)
        second, second_reader = _handed_over(node, "/v1/kv/ns/_watch", in_fanout=2)
        after = [f"b{i:03d}" for i in range(100)]
        for key in after:
            _put(node, key)
        # The node tells how far behind its rounds the process is.
        wait_for(lambda: _watch_status(node)["fanout_behind_ms"] > 0, what="a lag shown")
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: len(first_reader.keys) >= 200, what="the first stream's events")
    wait_for(lambda: len(second_reader.keys) >= 100, what="the second stream's events")
    wait_for(lambda: _watch_status(node)["fanout_behind_ms"] == 0, what="the lag gone")
    assert first_reader.keys == before + after
    assert second_reader.keys == after
    hang_up(first)
    hang_up(second)


def _children(node: NodeProcess) -> list[int]:
    """Every child process of the node, ended ones not reaped yet (zombies) included."""
    assert node.proc is not None
    found: list[int] = []
    for task in os.listdir(f"/proc/{node.proc.pid}/task"):
        found += map(int, Path(f"/proc/{node.proc.pid}/task/{task}/children").read_text().split())
    return found


def test_a_hung_fanout_process_is_ended_and_replaced(start_node: StartNode) -> None:
    # A process that answers nothing (stopped here) would keep its streams silent and
    # never count out a client that went: the node ends it, as if it had died.
    node = start_node("n", ["--watch-heartbeat", "0.5"])
    stream, reader = _handed_over(node, "/v1/kv/ns/_watch")
    (worker,) = _fanout_pids(node)
    os.kill(worker, signal.SIGSTOP)
    assert reader.ended.wait(30), "the stream of a hung process was kept"
    stream.close()
    wait_for(lambda: worker not in _children(node), what="the hung process ended and reaped")
    assert "answered nothing" in "".join(node.output)
    _a_new_process_serves(node, worker)
