"""Rows pulled from the upstream are held to the API's limits: a real node, a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings

from edgekv_replication.changes import Change
from testkit.cluster import stored_state
from testkit.pg import DSN, query
from testkit.processes import NodeProcess
from testkit.waiting import wait_for
from tests.intake_cases import LIMIT_ARGS, invalid_changes

StartNode = Callable[..., NodeProcess]


def _storable(change: Change) -> bool:
    # PostgreSQL text holds no NUL; document rows live in another table.
    texts = [change.ns, change.metadata or ""]
    return not any("\x00" in text for text in texts) and not change.ns.startswith("@doc:")


def _upstream_error(node: NodeProcess) -> str:
    return str(node.request("GET", "/v1/cluster/status").json()["upstream"]["last_error"] or "")


def test_invalid_upstream_rows_stop_the_pull_logged_and_nothing_stored(
    start_node: StartNode, pg_schema: str
) -> None:
    node = start_node("a", [*LIMIT_ARGS, "--upstream", DSN, "--upstream-schema", pg_schema])
    wait_for(lambda: node.request("GET", "/v1/cluster/status").json()["upstream"]["state"] == "up")
    kv = f"{pg_schema}.kv"
    markers = 0

    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(bad=invalid_changes("u").filter(_storable))
    def refused(bad: Change) -> None:
        nonlocal markers
        query(
            f"INSERT INTO {kv} (ns, key, value, metadata, expiration, hlc, node)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *bad[:7],
        )
        seq: list[int] = []

        def numbered() -> bool:
            rows = query(f"SELECT seq FROM {kv} WHERE ns = $1 AND key = $2", bad.ns, bad.key)
            seq[:] = [rows[0]["seq"]] if rows and rows[0]["seq"] is not None else []
            return bool(seq)

        wait_for(numbered, 10, "the row numbered by the node's sequencer")
        wait_for(lambda: f"upstream row seq {seq[0]} " in _upstream_error(node), 10, "refusal")
        assert "repaired in PostgreSQL" in _upstream_error(node)
        # Repaired (deleted): the pull goes on, and the row after it applies.
        query(f"DELETE FROM {kv} WHERE ns = $1 AND key = $2", bad.ns, bad.key)
        markers += 1
        marker = f"m{markers}".encode()
        query(
            f"INSERT INTO {kv} (ns, key, value, hlc, node) VALUES ('u', $1, 'x', 65536, 99)",
            marker,
        )
        wait_for(lambda: node.request("GET", f"/v1/kv/u/{marker.decode()}").status == 200, 10)
        assert all(row[1].startswith(b"m") and row[0] == "u" for row in stored_state(node))
        listing = node.request("GET", "/v1/kv/u")
        assert listing.status == 200

    refused()
    wait_for(lambda: any("refused upstream row" in line for line in node.output), what="log line")
