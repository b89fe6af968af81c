"""What a node accepts from its clients, its peers accept from it.

A write the HTTP API takes but peers' intake refuses halts replication from
that node for every tenant: peers refuse the whole batch holding it and retry
it forever (metadata holding ``Infinity``, a gzip-inflated value, a document
change over ``max_value_bytes``...). This property test drives a real node
with whatever hypothesis makes of every write route -- keys, values,
metadata headers, ttl/expiration, bulk operations, document bodies and
patches, Y updates (also to roots other than the document's), counter adds and
resets, set updates and clears -- then reads
the rows the node would send its peers straight from SQLite (read-only, the
query peers are served from) and runs them through the peers' check,
:func:`edgekv_replication.intake.check_changes`. Whatever the node answered
(2xx or 4xx, never 5xx), every stored row must pass.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv.store.changelog import CHANGES_AFTER_WITH_DOCUMENTS
from edgekv_replication.documents import MAX_Y_STATE_BYTES, foreign_roots, is_document
from edgekv_replication.envelope import MAX_BATCH_CHANGES
from edgekv_replication.intake import check_changes
from edgekv_replication.log import read_page
from testkit.processes import NodeProcess
from testkit.responses import Response
from tests.intake_cases import LIMIT_ARGS, LIMITS

NAMESPACES = ["n1", "n2"]
COLLECTION = "c1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node with small limits, so over-limit input costs bytes, not megabytes."""
    started = NodeProcess(tmp_path_factory.mktemp("agreement") / "data", LIMIT_ARGS).start()
    yield started
    started.kill()


def sent_rows(node: NodeProcess) -> list[Any]:
    """Every change the node would send a peer from cursor 0, as the peer receives it."""
    uri = f"file:{Path(node.data_dir) / 'edgekv.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = conn.execute(CHANGES_AFTER_WITH_DOCUMENTS, (0, -1, int(node.node_id, 16)))
        changes, _ = read_page(rows, math.inf)  # type: ignore[arg-type]
    return changes


# -- what clients send ----------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
odd_json_texts = st.sampled_from(
    [
        '{"a": 1e999}',
        '{"a": -1E400}',
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": 1' + "0" * 40 + "}",
        '{"\\ud800": 1}',
        '{"a": "\\udfff"}',
        '{"a": "\\u0000\\r\\n"}',
        "[1]",
        '"text"',
        "{",
        '{"a": ' + "[" * 40 + "]" * 40 + "}",
        '{"a": -0.0, "b": 5e-324}',
    ]
)
keys = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from([".", "..", "%FF", "a/b", "é" * 9, "k" * 17, " ", "\r\n"]),
)
values = st.binary(max_size=LIMITS.max_value_bytes + 8)
metadata_headers = st.one_of(
    st.none(),
    json_objects.map(json.dumps),  # ASCII: http.client sends header values as latin-1
    odd_json_texts,
)
expiry_params = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(["ttl", "expiration"]),
        st.one_of(
            st.integers(min_value=-5, max_value=10**13).map(str),
            st.sampled_from(["1e3", "", "9" * 30, "0x10", "60.5"]),
        ),
    ),
)


def _path(ns: str, key: str) -> str:
    return f"/v1/kv/{ns}/{quote(key, safe='')}"


def _put(
    node: NodeProcess, ns: str, key: str, value: bytes, meta: Any, expiry: Any, gzipped: bool
) -> Response:
    headers = {} if meta is None else {"EdgeKV-Metadata": meta}
    if gzipped:  # inflated by the server, this once stored values past every limit
        headers["Content-Encoding"] = "gzip"
        value = gzip.compress(value + bytes(10 * LIMITS.max_value_bytes))
    query = "" if expiry is None else f"?{expiry[0]}={quote(expiry[1])}"
    # http.client refuses header values holding CR/LF: those reach the node as 400s elsewhere.
    headers = {
        name: text for name, text in headers.items() if "\r" not in text and "\n" not in text
    }
    return node.request("PUT", _path(ns, key) + query, body=value, headers=headers)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


bulk_operations = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"op": st.just("put"), "key": keys, "value": values.map(_b64)},
            optional={
                "metadata": st.one_of(json_objects, json_values),
                "ttl": st.one_of(st.integers(min_value=-2, max_value=10**13), st.text(max_size=3)),
                "expiration": st.integers(min_value=-2, max_value=10**13),
            },
        ),
        st.fixed_dictionaries({"op": st.just("delete"), "key": keys}),
    ),
    min_size=1,
    max_size=4,
)


def _y_update(node: NodeProcess, doc_id: str, edits: list[tuple[str, Any]]) -> bytes:
    """A Y update on top of the node's state: sets in the content map, or text in other roots."""
    replica: pycrdt.Doc[Any] = pycrdt.Doc()
    answer = node.request("GET", f"/v1/docs/{COLLECTION}/{doc_id}/ystate")
    if answer.status == 200:
        replica.apply_update(answer.body)
    before = replica.get_state()
    with replica.transaction():
        for root, value in edits:
            if root == "content":
                content = replica.get("content", type=pycrdt.Map)
                content["f"] = value
            else:
                text = replica.get(root, type=pycrdt.Text)
                text += str(value)[:50]
    return replica.get_update(before)


y_edits = st.lists(
    st.tuples(
        st.sampled_from(["content", "content", "junk", "meta2"]),
        st.one_of(st.none(), st.booleans(), st.text(max_size=10), st.integers(-(2**60), 2**60)),
    ),
    min_size=1,
    max_size=3,
)

writes = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(NAMESPACES),
        keys,
        values,
        metadata_headers,
        expiry_params,
        st.booleans(),
    ),
    st.tuples(st.just("delete"), st.sampled_from(NAMESPACES), keys),
    st.tuples(st.just("bulk"), st.sampled_from(NAMESPACES), bulk_operations),
    st.tuples(
        st.just("doc"), st.sampled_from(["d1", "d2"]), st.one_of(json_objects, odd_json_texts)
    ),
    st.tuples(
        st.just("patch"), st.sampled_from(["d1", "d2"]), st.one_of(json_objects, odd_json_texts)
    ),
    st.tuples(st.just("yupdate"), st.sampled_from(["d1", "d2"]), y_edits),
    st.tuples(
        st.just("counter"),
        st.sampled_from(NAMESPACES),
        keys,
        st.one_of(
            st.fixed_dictionaries(
                {"add": st.one_of(st.integers(-(2**64), 2**64), json_values)},
                optional={"ttl": st.integers(-2, 10**13), "min": numbers},
            ),
            json_values,
        ),
    ),
    st.tuples(st.just("counter_reset"), st.sampled_from(NAMESPACES), keys),
    st.tuples(
        st.just("set"),
        st.sampled_from(NAMESPACES),
        keys,
        st.fixed_dictionaries(
            {},
            optional={
                "add": st.lists(st.one_of(st.text(max_size=6), json_values), max_size=3),
                "remove": st.lists(st.text(max_size=6), max_size=3),
            },
        ),
    ),
    st.tuples(st.just("set_clear"), st.sampled_from(NAMESPACES), keys),
)


def _send(node: NodeProcess, write: tuple[Any, ...]) -> Response:
    kind = write[0]
    if kind == "put":
        return _put(node, *write[1:])
    if kind == "delete":
        return node.request("DELETE", _path(write[1], write[2]))
    if kind == "bulk":
        body = json.dumps({"operations": write[2]})
        return node.request("POST", f"/v1/kv/{write[1]}/_bulk", body=body)
    if kind in ("counter", "counter_reset", "set", "set_clear"):
        route = "counters" if kind.startswith("counter") else "sets"
        crdt_path = f"/v1/{route}/{write[1]}/{quote(write[2], safe='')}"
        if kind in ("counter_reset", "set_clear"):
            return node.request("DELETE", crdt_path)
        return node.request("POST", crdt_path, body=json.dumps(write[3]))
    path = f"/v1/docs/{COLLECTION}/{write[1]}"
    if kind in ("doc", "patch"):
        body = write[2] if isinstance(write[2], str) else json.dumps(write[2])
        return node.request("PUT" if kind == "doc" else "PATCH", path, body=body.encode())
    return node.request("POST", path + "/yupdate", body=_y_update(node, write[1], write[2]))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(writes, min_size=1, max_size=4))
def test_every_row_a_client_write_stores_passes_the_peers_intake(
    node: NodeProcess, batch: list[tuple[Any, ...]]
) -> None:
    """Whatever the API accepted is stored only as changes every peer takes."""
    for write in batch:
        answer = _send(node, write)
        assert answer.status < 500, (write, answer.status, answer.body[:200])
    changes = sent_rows(node)
    for start in range(0, len(changes), MAX_BATCH_CHANGES):
        check_changes(changes[start : start + MAX_BATCH_CHANGES], LIMITS)
    # What a peer checks once it merges a document's changes (storage.apply_remote).
    documents: dict[tuple[str, bytes], pycrdt.Doc[Any]] = {}
    for change in changes:
        if is_document(change):
            assert change.value is not None
            documents.setdefault((change.ns, change.key), pycrdt.Doc()).apply_update(change.value)
    for slot, doc in documents.items():
        assert foreign_roots(doc) is None, slot
        assert len(doc.get_update()) <= MAX_Y_STATE_BYTES, slot
