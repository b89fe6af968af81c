"""A document query page is bounded in bytes as well as by ``limit``: a real node.

Without the byte bound, ``limit=1000`` of 1 MiB documents answered about 1 GiB at once.
"""

from __future__ import annotations

from collections.abc import Callable

from testkit.processes import NodeProcess
from testkit.resources import watched

StartNode = Callable[..., NodeProcess]
MIB = 1024 * 1024
DOCUMENTS = 40
TEXT_BYTES = 900 * 1024
BUDGET = 16 * MIB  # max_query_bytes' default


def test_a_query_of_large_documents_pages_within_the_byte_budget(start_node: StartNode) -> None:
    node = start_node("a")
    assert node.request("PUT", "/v1/kv/probe/small", body=b"s").status == 200
    for i in range(DOCUMENTS):
        body = {"n": i, "text": chr(97 + i % 26) * TEXT_BYTES}
        assert node.request("PUT", f"/v1/docs/big/d{i:02}", json_body=body).status == 200
    first, watch = watched(node, lambda: node.request("GET", "/v1/docs/big?limit=1000"))
    assert first.status == 200
    page = first.json()
    assert not page["list_complete"]
    assert page["cursor"]
    assert 1 < len(page["documents"]) < DOCUMENTS
    assert len(first.body) < BUDGET + MIB  # the budget, plus the document that crossed it
    # Measured: 19 documents (16.7 MiB), 50 MiB of growth: the page's rows, its JSON text
    # and the answer being sent; all 40 documents' worth (36 MiB) held three times over before.
    assert watch.growth < 80 * MIB, watch.growth / MIB
    seen = [item["id"] for item in page["documents"]]
    while not page["list_complete"]:
        answer = node.request("GET", f"/v1/docs/big?limit=1000&cursor={page['cursor']}")
        assert answer.status == 200
        assert len(answer.body) < BUDGET + MIB
        page = answer.json()
        seen += [item["id"] for item in page["documents"]]
    assert seen == [f"d{i:02}" for i in range(DOCUMENTS)]
    assert all(len(item["doc"]["text"]) == TEXT_BYTES for item in page["documents"])
