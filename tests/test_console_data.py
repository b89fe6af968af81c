"""What the console's admin routes answer: the metrics history, recent changes, names."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from edgekv.console.sampler import History, request_totals
from edgekv.http.admin_routes import PREVIEW_BYTES
from edgekv.http.console_routes import FILES
from edgekv.store.kv import Write
from edgekv.store.store import Store
from testkit.processes import NodeProcess
from testkit.responses import assert_error


def test_history_answers_the_newest_samples_oldest_first_once_it_wraps() -> None:
    history = History(capacity=4)
    for second in range(6):
        history.add(float(second), {"reads_per_s": second * 10.0}, {})
    document = history.document()
    assert document["t"] == [2.0, 3.0, 4.0, 5.0]
    assert document["reads_per_s"] == [20.0, 30.0, 40.0, 50.0]
    assert document["writes_per_s"] == [None] * 4  # never given: unknown, not zero


def test_history_keeps_a_peer_s_lag_aligned_and_forgets_a_peer_gone_a_whole_window() -> None:
    history = History(capacity=3)
    history.add(0.0, {}, {"aa": ("fra-1", 5.0)})
    history.add(1.0, {}, {"aa": ("fra-1", None), "bb": ("ams-1", 7.0)})
    history.add(2.0, {}, {"bb": ("ams-1", 8.0)})
    lag = history.document()["lag_ms"]
    assert lag["aa"] == {"name": "fra-1", "values": [5.0, None, None]}
    assert lag["bb"] == {"name": "ams-1", "values": [None, 7.0, 8.0]}
    for second in (3.0, 4.0, 5.0):
        history.add(second, {}, {"bb": ("ams-1", 1.0)})
    assert set(history.document()["lag_ms"]) == {"bb"}


def test_history_memory_is_a_few_kib_per_series() -> None:
    history = History()
    per_series = history.columns["reads_per_s"].itemsize * history.capacity
    assert per_series <= 3 * 1024
    assert not any(math.isfinite(v) for v in history.times)


def test_reads_and_writes_are_told_apart_by_method_and_route() -> None:
    tallies = [
        (("GET", "/v1/kv/{ns}/{key}", 200), [5.0]),
        (("HEAD", "/v1/kv/{ns}/{key}", 404), [1.0]),
        (("POST", "/v1/kv/{ns}/_get", 200), [2.0]),
        (("GET", "/v1/docs/{collection}", 200), [3.0]),
        (("PUT", "/v1/kv/{ns}/{key}", 200), [7.0]),
        (("POST", "/v1/kv/{ns}/_bulk", 200), [1.0]),
        (("PATCH", "/v1/docs/{collection}/{id}", 200), [2.0]),
        (("POST", "/v1/docs/{collection}/_indexes", 201), [4.0]),
        (("GET", "/v1/cluster/status", 200), [9.0]),
        (("GET", "/metrics", 200), [9.0]),
    ]
    assert request_totals(tallies) == (11, 10)


async def test_recent_changes_page_newest_first_with_filters_and_a_bounded_scan(
    store: Store,
) -> None:
    for i in range(5):
        await store.write("a", [Write(f"k{i}".encode(), f"v{i}".encode())])
    await store.write("b", [Write(b"other", b"x")])
    await store.write("a", [Write(b"k1", None)])  # a delete moves k1 to the newest seq
    browse = store.browse
    newest = store.seq + 1

    page, before = browse.recent_changes(newest, 3, None, b"", 16, 100)
    assert [(c.ns, c.key, c.preview) for c in page] == [
        ("a", b"k1", None),
        ("b", b"other", b"x"),
        ("a", b"k4", b"v4"),
    ]
    rest, end = browse.recent_changes(before, 10, None, b"", 16, 100)
    assert [c.key for c in rest] == [b"k3", b"k2", b"k0"]
    assert end == 0  # the start of the log

    only_b, _ = browse.recent_changes(newest, 10, "b", b"", 16, 100)
    assert [c.key for c in only_b] == [b"other"]
    prefixed, _ = browse.recent_changes(newest, 10, "a", b"k3", 16, 100)
    assert [c.key for c in prefixed] == [b"k3"]

    # A scan of 2 rows finds nothing of "b" below the newest two: it says where to go on.
    none, cursor = browse.recent_changes(store.seq - 1, 10, "b", b"", 16, 2)
    assert none == []
    assert cursor == store.seq - 3


async def test_values_leave_sqlite_cut_and_names_are_counted(store: Store) -> None:
    await store.write("big", [Write(b"v", b"x" * 100_000), Write(b"w", b"y", expiration=1)])
    (change,), _ = store.browse.recent_changes(store.seq + 1, 1, "big", b"v", 8, 10)
    assert change.preview == b"x" * 8
    assert change.value_bytes == 100_000
    await store.write("small", [Write(b"a", b"1"), Write(b"b", b"2")])
    await store.write("small", [Write(b"b", None)])
    assert store.browse.namespaces(now=1000.0, limit=10) == [("big", 1), ("small", 1)]
    assert store.browse.namespaces(now=0.0, limit=1) == [("big", 2)]


def _admin_node(start_node: Callable[..., NodeProcess], tmp_path: Path) -> tuple[NodeProcess, str]:
    config = tmp_path / "edgekv.toml"
    admin, reader = new_token(), new_token()
    config.write_text(
        token_toml("admin", admin, ["admin"]) + token_toml("reader", reader, ["read:*"])
    )
    node = start_node(args=["--config", str(config)])
    node.token = admin
    return node, reader


def test_admin_routes_need_the_admin_scope_and_check_their_parameters(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node, reader = _admin_node(start_node, tmp_path)
    paths = ["/v1/admin/history", "/v1/admin/namespaces", "/v1/admin/collections"]
    for path in [*paths, "/v1/admin/changes"]:
        assert node.request("GET", path).status == 200
        assert_error(
            node.request("GET", path, headers={"Authorization": f"Bearer {reader}"}), "forbidden"
        )
    for query in ("limit=0", "limit=201", "limit=x", "before=-1", "before=" + "9" * 30):
        assert_error(node.request("GET", f"/v1/admin/changes?{query}"), "invalid_parameter")
    assert_error(node.request("GET", "/v1/admin/changes?ns=bad%20name"), "invalid_namespace")
    assert_error(node.request("GET", "/v1/admin/changes?prefix=%FF"), "invalid_key")


def test_recent_changes_preview_text_json_or_hex(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node, _ = _admin_node(start_node, tmp_path)
    long_text = "a" + "é" * PREVIEW_BYTES  # "é" is two bytes: the cut falls inside one
    for key, value in (("text", long_text.encode()), ("bin", b"\xff\x00\x01")):
        assert node.request("PUT", f"/v1/kv/feed/{key}", body=value).status == 200
    assert node.request("DELETE", "/v1/kv/feed/gone").status == 200
    answer = json.loads(node.request("GET", "/v1/admin/changes?ns=feed").body)
    gone, binary, text = answer["changes"]
    assert (gone["key"], gone["op"], "preview" in gone) == ("gone", "delete", False)
    assert binary["preview"] == "ff0001"
    assert (binary["preview_kind"], binary["truncated"]) == ("hex", False)
    assert text["preview"] == "a" + "é" * (PREVIEW_BYTES // 2 - 1)
    assert (text["preview_kind"], text["truncated"], text["value_bytes"]) == (
        "text",
        True,
        1 + 2 * PREVIEW_BYTES,
    )
    assert answer["before"] is None  # the whole log was read


@pytest.mark.parametrize("path", ["/ui/", "/v1/admin/history", "/v1/admin/changes"])
def test_a_node_with_the_console_off_serves_none_of_it(
    start_node: Callable[..., NodeProcess], path: str
) -> None:
    node = start_node(args=["--console", "false"])
    assert_error(node.request("GET", path), "not_found")


def test_the_console_serves_exactly_the_files_it_ships() -> None:
    static = Path(__file__).resolve().parent.parent / "edgekv" / "console" / "static"
    assert set(FILES) == {path.name for path in static.iterdir()}
    pyproject = (static.parent.parent.parent / "pyproject.toml").read_text()
    assert '"console/static/*"' in pyproject  # shipped as package data
