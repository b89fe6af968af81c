"""Attacks on this round's surfaces, the web console and its admin routes, that once worked.

Each test starts real ``edgekv serve`` processes and plays a hostile client
(a tenant with a write token, a page of another site in protected mode); it
failed before the fix it names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.store.browse import DETAIL_BYTES
from testkit.processes import NodeProcess

MIB = 1024 * 1024


def _bytes_read(node: NodeProcess) -> int:
    """Bytes the node's event-loop thread has read from files so far (``rchar``).

    The main thread serves every request; the writer's thread (commits,
    checkpoints) is another task and is not counted.
    """
    assert node.proc is not None
    io = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/io").read_text()
    return next(int(line.split()[1]) for line in io.splitlines() if line.startswith("rchar:"))


@pytest.mark.slow
def test_a_tenant_s_large_values_do_not_make_the_live_feed_read_them(
    start_node: Callable[..., NodeProcess],
) -> None:
    """The console's live feed polls ``/v1/admin/changes`` every second. A tenant
    that wrote large values made every poll read each value in the newest
    10,000 rows of the log in full, on the event loop (SQLite keeps a row's
    version after its value), even when the page answered none of them.
    """
    node = start_node()
    values = 20
    for i in range(values):
        value = bytes([65 + i]) * (4 * MIB)
        assert node.request("PUT", f"/v1/kv/tenant/big/{i:02d}", body=value).status == 200
    assert node.request("PUT", "/v1/kv/app/small", body=b"hello").status == 200

    # A filter that matches no large value reads none of them.
    started = _bytes_read(node)
    answer = node.request("GET", "/v1/admin/changes?ns=app&limit=50")
    assert answer.status == 200
    assert [c["key"] for c in answer.json()["changes"]] == ["small"]
    assert _bytes_read(node) - started < 2 * MIB

    # The unfiltered feed reads at most its byte budget plus one value per page,
    # and pages on through every change, each with its preview.
    seen: list[tuple[str, str]] = []
    before: int | None = None
    query = "/v1/admin/changes?limit=200"
    pages = 0
    while True:
        started = _bytes_read(node)
        page = node.request("GET", query if before is None else f"{query}&before={before}")
        assert page.status == 200
        assert _bytes_read(node) - started < DETAIL_BYTES + 4 * MIB + 2 * MIB
        body = page.json()
        seen += [(c["key"], c["preview"][:1]) for c in body["changes"]]
        assert all(len(c["preview"]) == 256 and c["truncated"] for c in body["changes"][1:])
        pages += 1
        before = body["before"]
        if before is None:
            break
    assert pages > 1  # the budget cut a page short, and the cursor went on from there
    expected = [("small", "h")] + [(f"big/{i:02d}", chr(65 + i)) for i in reversed(range(values))]
    assert seen == expected
