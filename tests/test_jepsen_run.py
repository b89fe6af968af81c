"""The fault-injection harness end to end: a short seeded run passes, a broken merge fails.

Both run ``python -m jepsen_like run`` as a user would, against real nodes
(and the real PostgreSQL for the strong-namespace workload).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testkit.pg import DSN

ROOT = Path(__file__).resolve().parent.parent


def run_harness(out: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the harness; return its exit code, results.json and output."""
    done = subprocess.run(
        [sys.executable, "-m", "jepsen_like", "run", "--out", str(out), *args],
        cwd=ROOT,
        env={**os.environ, "EDGEKV_TEST_PG_DSN": DSN},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    return done.returncode, results, output


@pytest.mark.slow
@pytest.mark.pg  # the cas workload runs against the test PostgreSQL
def test_short_seeded_run_with_partitions_and_kills_passes(tmp_path: Path) -> None:
    code, results, output = run_harness(
        tmp_path,
        "--nodes=5",
        "--time-limit=30",
        "--workload=all",
        "--nemesis=partition,kill",
        "--seed=20",
    )
    assert code == 0, output
    assert results["valid"] is True
    # The secure configuration by default: every node had tokens and the cluster secret.
    assert results["tokens_and_cluster_secret"] is True
    assert "[[tokens]]" in (tmp_path / "nodes" / "security" / "edgekv.toml").read_text()
    kinds = {fault["kind"] for fault in results["faults"]}
    assert kinds == {"partition", "kill"}, results["faults"]
    checkers = results["checkers"]
    assert set(checkers) == {
        "set",
        "register",
        "session",
        "documents",
        "delete-readd",
        "cas",
        "counter",
        "orset",
        "watch",
    }
    assert checkers["set"]["lost_count"] == 0
    assert checkers["set"]["acknowledged"] > 100
    assert checkers["cas"]["linearizable"] is True
    assert all(c["converged_after_heal_s"] is not None for c in checkers.values())
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    kinds_seen = {json.loads(line)["type"] for line in history}
    assert {"invoke", "ok"} <= kinds_seen
    assert "<svg" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_broken_merge_is_caught(tmp_path: Path) -> None:
    code, results, output = run_harness(
        tmp_path,
        "--nodes=3",
        "--time-limit=4",
        "--workload=register",
        "--nemesis=none",
        "--seed=1",
        "--broken-merge",
        "--recovery-timeout=3",
    )
    assert code == 1, output
    assert results["valid"] is False
    errors = results["checkers"]["register"]["errors"]
    assert any(error["error"] == "nodes disagree" for error in errors), errors
    assert "INVALID" in output


@pytest.mark.slow
def test_regions_run_with_a_region_cut_and_the_backbone_stopped_passes(tmp_path: Path) -> None:
    # Two regions of the WAN model joined by a NATS JetStream backbone of the
    # run's own: a region cut from it, then the server stopped and started.
    code, results, output = run_harness(
        tmp_path,
        "--nodes=4",
        "--topology=regions",
        "--regions=2",
        "--time-limit=25",
        "--workload=set,register",
        "--nemesis=region,backbone",
        "--seed=5",
    )
    assert code == 0, output
    assert results["valid"] is True
    assert {fault["kind"] for fault in results["faults"]} == {"region", "backbone"}
    checkers = results["checkers"]
    assert checkers["set"]["lost_count"] == 0
    assert checkers["set"]["acknowledged"] > 100
    assert all(c["converged_after_heal_s"] is not None for c in checkers.values())
    # The backbone stop reached the nodes (through their links to it).
    assert "backbone nats://127.0.0.1:" in (tmp_path / "nodes" / "n0.log").read_text()
