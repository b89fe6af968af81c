"""The shared rate limiter example, measured on three real PoPs (tokens + cluster secret)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.cluster import Cluster

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rate_limiter.py"


@pytest.mark.slow
def test_three_pops_let_through_the_limit_and_little_more(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        urls = [arg for node in cluster.nodes for arg in ("--url", node.url)]
        assert cluster.token is not None
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--measure", "--token", cluster.token, *urls],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    finally:
        cluster.close()
    result = json.loads(done.stdout)
    # Never fewer than the limit; at most what the bound allows (PoPs x limit, partitioned).
    assert 100 <= result["admitted"] <= 300, result
    # No request lost: every PoP counts every request sent to any of them.
    assert result["final_count_per_pop"] == [result["sent"]] * 3, result
