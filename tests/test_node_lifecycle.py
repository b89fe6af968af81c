"""A real node process: start-up, durability across SIGKILL, graceful stop, footprint."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from testkit.processes import NodeProcess

MIB = 1024 * 1024


def put_until_stopped(node: NodeProcess, worker: int, stop: threading.Event) -> list[str]:
    """PUT fresh keys until ``stop``; return the keys the node acknowledged."""
    acknowledged = []
    for i in range(100_000):
        if stop.is_set():
            break
        key = f"w{worker}-{i}"
        try:
            answer = node.request("PUT", f"/v1/kv/dur/{key}", body=key.encode(), timeout=5)
        except OSError:
            break  # the node went away: this write is unacknowledged
        if answer.status == 200:
            acknowledged.append(key)
    return acknowledged


def test_startup_line_names_url_node_and_data_dir(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node()
    line = next(line for line in node.output if "serving" in line)
    assert node.url.startswith("http://127.0.0.1:")
    assert f"node={node.node_id}" in line
    assert str(node.data_dir) in line
    assert node.request("GET", "/healthz").json()["node_id"] == node.node_id


def test_acknowledged_writes_survive_sigkill(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node()
    stop = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(put_until_stopped, node, w, stop) for w in range(8)]
        # Kill once a good number of writes are acknowledged, with writes still in flight.
        while node.request("GET", "/healthz").json()["seq"] < 400:
            pass
        node.kill()
        stop.set()
        acknowledged = [key for future in futures for key in future.result()]
    # Seq 400 was committed; a few of those answers may still have been on the wire.
    assert len(acknowledged) >= 300
    node.start()
    missing = [
        key for key in acknowledged if node.request("GET", f"/v1/kv/dur/{key}").body != key.encode()
    ]
    assert missing == []


def test_sigterm_commits_in_flight_writes_and_exits_cleanly(
    start_node: Callable[..., NodeProcess],
) -> None:
    node = start_node()
    stop = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(put_until_stopped, node, w, stop) for w in range(8)]
        while node.request("GET", "/healthz").json()["seq"] < 200:
            pass
        assert node.stop(signal.SIGTERM) == 0
        stop.set()
        acknowledged = [key for future in futures for key in future.result()]
    assert any("stopped" in line for line in node.output)
    node.start()
    for key in acknowledged:
        assert node.request("GET", f"/v1/kv/dur/{key}").status == 200, key


def test_restart_keeps_identity(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node()
    first_id = node.node_id
    node.stop()
    node.start()
    assert node.node_id == first_id


def test_idle_node_rss_is_small(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node()
    for i in range(50):
        assert node.request("PUT", f"/v1/kv/rss/k{i}", body=b"x" * 100).status == 200
        assert node.request("GET", f"/v1/kv/rss/k{i}").status == 200
    assert node.request("GET", "/metrics").status == 200
    assert node.rss_bytes() <= 60 * MIB
