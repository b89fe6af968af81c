"""A rolling upgrade: a node of this version and one of the previous version replicate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.cluster import wait_converged
from testkit.previous import PREVIOUS_VERSION, unpack
from testkit.processes import NodeProcess
from testkit.security import Security


@pytest.mark.slow
def test_previous_and_current_versions_replicate_both_ways(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    old_env = unpack(PREVIOUS_VERSION, tmp_path / "previous")
    security = Security(tmp_path / "security")
    start = security.starter(start_node)
    old = start("old", env=old_env)
    new = start("new", ["--peer", old.url])
    # Each runs its own version: only this one has the admin routes.
    assert old.request("GET", "/v1/admin/tokens").status == 404
    assert new.request("GET", "/v1/admin/tokens").status == 200
    for i in range(50):
        assert old.request("PUT", f"/v1/kv/up/old{i}", body=f"o{i}").status == 200
        assert new.request("PUT", f"/v1/kv/up/new{i}", body=f"n{i}").status == 200
    assert new.request("DELETE", "/v1/kv/up/old3").status == 200
    assert old.request("DELETE", "/v1/kv/up/new3").status == 200
    state = wait_converged([old, new])
    live = {row[1].decode() for row in state if row[2] is not None}
    assert len(live) == 98
    assert "old3" not in live
    assert "new3" not in live
    assert new.request("GET", "/v1/kv/up/old7").body == b"o7"
    assert old.request("GET", "/v1/kv/up/new7").body == b"n7"
