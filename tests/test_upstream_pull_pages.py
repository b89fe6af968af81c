"""Upstream pull pages are bounded in bytes as well as rows: a real node, a real PostgreSQL.

Without the byte bound a page was up to 2000 rows of any size (2000 x 25 MiB).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from testkit.pg import DSN, query
from testkit.processes import NodeProcess
from testkit.waiting import wait_for
from tests.intake_cases import HLC

StartNode = Callable[..., NodeProcess]
MIB = 1024 * 1024
VALUE_BYTES = 12 * MIB
ROWS = 3


def _pull_pages(node: NodeProcess) -> float:
    text = node.request("GET", "/metrics").body.decode()
    line = next(
        line for line in text.splitlines() if line.startswith("edgekv_upstream_pull_pages_total")
    )
    return float(line.split()[1])


def test_large_rows_are_pulled_a_budget_at_a_time_and_all_arrive(
    start_node: StartNode, pg_schema: str
) -> None:
    budget = 4 * MIB  # a page takes rows while those before hold less: one 12 MiB row each
    args = ["--upstream", DSN, "--upstream-schema", pg_schema, "--upstream-pull-bytes", str(budget)]
    node = start_node("a", args)
    wait_for(lambda: node.request("GET", "/v1/cluster/status").json()["upstream"]["state"] == "up")
    pages_before = _pull_pages(node)
    baseline = peak = node.rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, node.rss_bytes())
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # One statement: the rows are numbered together and one unbounded page would take them all.
    query(
        f"INSERT INTO {pg_schema}.kv (ns, key, value, hlc, node)"
        " SELECT 'u', k, v, $3, 99 FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v)",
        [f"big{i}".encode() for i in range(ROWS)],
        [bytes([65 + i]) * VALUE_BYTES for i in range(ROWS)],
        HLC,
    )
    try:
        for i in range(ROWS):

            def pulled(i: int = i) -> bool:
                return node.request("GET", f"/v1/kv/u/big{i}").status == 200

            wait_for(pulled, 30)
    finally:
        done.set()
        sampler.join()
    for i in range(ROWS):
        assert node.request("GET", f"/v1/kv/u/big{i}").body == bytes([65 + i]) * VALUE_BYTES
    assert _pull_pages(node) - pages_before >= ROWS
    # Measured: about 100 MiB with pages of one row (the record, its bytes, SQLite's copies,
    # the GETs polling for it), 156 MiB with the three rows in one page.
    assert peak - baseline < 128 * MIB, (peak - baseline) / MIB
