"""``edgekv cluster`` and ``edgekv demo`` as an operator runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args], capture_output=True, text=True, timeout=60
    )


def test_cluster_status_table_and_json(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")  # tokens and a cluster secret
    start_node = security.starter(start_node)
    a = start_node("a", ["--node-name", "fra"])
    b = start_node("b", ["--node-name", "ams", "--peer", a.url])
    wait_for(
        lambda: (
            [m["state"] for m in b.request("GET", "/v1/cluster/status").json()["members"]] == ["up"]
        ),
        what="link up",
    )
    document = json.loads(
        edgekv("cluster", "status", "--url", b.url, "--token", security.token, "--json").stdout
    )
    assert document["node"]["name"] == "ams"
    assert document["members"][0]["name"] == "fra"
    assert edgekv("cluster", "status", "--url", b.url).returncode != 0  # no token, no status
    table = edgekv("cluster", "status", "--url", b.url, "--token", security.token)
    assert table.returncode == 0
    assert "fra" in table.stdout
    assert "up" in table.stdout
    assert "seq" in table.stdout


def test_cluster_remove(start_node: Callable[..., NodeProcess]) -> None:
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    # a pulls from b once b has introduced itself; killed before that, b would
    # leave a link a never reached, which this test is not about.
    wait_for(
        lambda: [m["state"] for m in a.request("GET", "/v1/cluster/status").json()["members"]]
        == ["up"]
    )
    b.kill()
    removed = edgekv("cluster", "remove", "--url", a.url, b.node_id)
    assert removed.returncode == 0, removed.stderr
    states = [m["state"] for m in a.request("GET", "/v1/cluster/status").json()["members"]]
    assert states == ["removed"]
    assert edgekv("cluster", "remove", "--url", a.url, "abc").returncode == 1


def test_demo_replicates_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekv", "demo", "--base-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        lines.extend(proc.stdout)

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        wait_for(lambda: any("Ctrl-C stops" in line for line in lines), 30, "demo ready")
        output = "".join(lines)
        assert len(re.findall(r"arrived at pop-[bc]", output)) == 2
        assert len(re.findall(r"http://127\.0\.0\.1:\d+", output)) >= 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert "demo stopped" in "".join(lines)
