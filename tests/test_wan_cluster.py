"""Real nodes over the WAN model: the latency matrix shapes every peer link of a Cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.cluster import Cluster, wait_converged
from testkit.wan import wan_model


def _readable_after_ms(cluster: Cluster, writer: int, reader: int, key: str) -> float:
    cluster.put(writer, "wan", key, b"v")
    acked = time.perf_counter()
    deadline = acked + 10
    while time.perf_counter() < deadline:
        if cluster.nodes[reader].request("GET", f"/v1/kv/wan/{key}").status == 200:
            return (time.perf_counter() - acked) * 1000
    raise AssertionError(f"{key} never reached node {reader}")


@pytest.mark.slow
def test_a_write_crosses_regions_no_faster_than_the_matrix_allows(tmp_path: Path) -> None:
    wan = wan_model(4)
    cluster = Cluster(tmp_path, n=4, wan=wan)  # one node per region
    try:
        assert cluster.regions == ["r00", "r01", "r02", "r03"]
        wait_converged(cluster.nodes)
        far = wan.rtt_ms("r00", "r03") / 2  # 75 ms one way
        for i in range(3):
            assert _readable_after_ms(cluster, 0, 3, f"far{i}") >= far
        wait_converged(cluster.nodes)
    finally:
        cluster.close()
