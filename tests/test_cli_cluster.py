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
from typing import Any

from rich.console import Console

from edgekv.status_view import status_renderable
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
    a = start_node("a", ["--node-name", "fra", "--region", "eu-central"])
    b = start_node("b", ["--node-name", "ams", "--region", "eu-west", "--peer", a.url])
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
    assert document["members"][0]["region"] == "eu-central"
    assert edgekv("cluster", "status", "--url", b.url).returncode != 0  # no token, no status
    table = edgekv("cluster", "status", "--url", b.url, "--token", security.token)
    assert table.returncode == 0
    assert "fra" in table.stdout
    assert "up" in table.stdout
    assert "seq" in table.stdout
    assert "1 member in 1 region: 1 up, 0 down, 0 joining" in table.stdout
    assert "region eu-central: 1/1 up" in table.stdout
    assert "eu-west" in table.stdout  # this node's own region, in the header
    elsewhere = edgekv(
        "cluster", "status", "--url", b.url, "--token", security.token, "--region", "elsewhere"
    )
    assert elsewhere.returncode == 0
    assert "0 members" in elsewhere.stdout
    assert "no member in region 'elsewhere'" in elsewhere.stdout
    assert "fra" not in elsewhere.stdout


def _member(i: int, region: str, state: str = "up", lag: int = 0) -> dict[str, Any]:
    return {
        "node_id": f"{i:016x}",
        "name": f"pop-{i:02d}",
        "url": f"https://pop-{i:02d}.example:8787",
        "region": region,
        "direct": region == "region-0" and i % 12 < 8,
        "state": state,
        "lag_changes": lag,
        "lag_ms": lag * 10,
        "last_contact_ms": None,
        "clock_offset_ms": 0,
        "last_error": "unreachable" if state == "down" else None,
    }


def _status_of_48() -> dict[str, Any]:
    """This node and 48 members in 4 regions: two down, one joining, two lagging."""
    members = [_member(i, f"region-{i // 12}") for i in range(48)]
    members[3] = _member(3, "region-0", "down")
    members[30] = _member(30, "region-2", "down")
    members[31] = _member(31, "region-2", "joining", lag=0)
    members[40] = _member(40, "region-3", lag=7)
    members[41] = _member(41, "region-3", lag=950)
    node = {
        "node_id": "ff" * 8,
        "incarnation": "01" * 8,
        "name": "pop-me",
        "url": "https://pop-me.example:8787",
        "region": "region-0",
        "seq": 12,
        "keys": 3,
        "db_bytes": 4096,
        "held_changes": 0,
    }
    backbone = {"state": "up", "url": "nats://nats.example:4222", "lag_changes": 4}
    return {"node": node, "members": members, "backbone": backbone}


def _render(status: dict[str, Any], region: str | None = None) -> list[str]:
    console = Console(width=200, record=True, force_terminal=False)
    console.print(status_renderable(status, region))
    return console.export_text().splitlines()


def _first_line(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def test_status_of_48_members_summarises_then_groups_regions_worst_first() -> None:
    lines = _render(_status_of_48())
    assert "region region-0" in lines[0]
    assert lines[1].startswith("48 members in 4 regions: 45 up, 2 down, 1 joining")
    assert "worst lag 950 changes (pop-41, region-3)" in lines[1]
    assert "backbone up lag 4" in lines[1]
    headings = [line.split("│")[0].strip() for line in lines if line.strip().startswith("region ")]
    # Regions with a member down first (by name among equals), then lag, then the rest.
    assert headings == [
        "region region-0: 11/12 up",
        "region region-2: 10/12 up",
        "region region-3: 12/12 up",
        "region region-1: 12/12 up",
    ]
    members = [line.split()[0] for line in lines[2:] if line.lstrip().startswith("pop-")]
    assert len(members) == 48
    assert members[:2] == ["pop-03", "pop-00"]  # down before up within region-0
    at = members.index("pop-30")
    assert members[at : at + 3] == ["pop-30", "pop-31", "pop-24"]  # down, joining, up
    at = members.index("pop-41")
    assert members[at : at + 2] == ["pop-41", "pop-40"]  # larger lag first
    assert any(line.lstrip().startswith("backbone") and "nats://" in line for line in lines)
    via = {line.split()[0]: line.split("│")[2].strip() for line in lines[2:] if "pop-" in line}
    assert (via["pop-00"], via["pop-10"], via["pop-20"]) == ("peer", "relayed", "backbone")


def test_status_region_filter_shows_one_region_and_counts_it() -> None:
    lines = _render(_status_of_48(), region="region-3")
    assert lines[1].startswith("12 members in 1 region: 12 up, 0 down")
    members = {line.split()[0] for line in lines[2:] if line.lstrip().startswith("pop-")}
    assert members == {f"pop-{i}" for i in range(36, 48)}
    nowhere = _render(_status_of_48(), region="mars")
    assert any("no member in region 'mars'" in line for line in nowhere)


def test_status_without_regions_renders_one_group_without_headings() -> None:
    status = _status_of_48()
    for member in status["members"]:
        del member["region"], member["direct"]
    del status["node"]["region"], status["backbone"]
    lines = _render(status)
    assert lines[1].startswith("48 members: 45 up, 2 down, 1 joining")
    assert not any(line.strip().startswith("region ") for line in lines)
    assert not any("backbone" in line for line in lines)


def test_cluster_remove(start_node: Callable[..., NodeProcess]) -> None:
    a = start_node("a")
    b = start_node("b", ["--peer", a.url])
    # a pulls from b once b has introduced itself; killed before that, b would
    # leave a link a never reached, which this test is not about.
    wait_for(
        lambda: (
            [m["state"] for m in a.request("GET", "/v1/cluster/status").json()["members"]] == ["up"]
        )
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


def test_status_header_shows_watch_events_waiting_on_a_busy_host() -> None:
    status = _status_of_48()
    status["node"]["watch"] = {"watchers_open": 1010, "fanout_behind_ms": 40}
    assert "watchers 1010" in _render(status)[0]
    assert "behind" not in _render(status)[0]  # milliseconds: the usual pace
    status["node"]["watch"]["fanout_behind_ms"] = 2500
    assert "watchers 1010 (events 2.5 s behind)" in _render(status)[0]
