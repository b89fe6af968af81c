"""``edgekv export`` and ``edgekv import`` against real nodes."""

from __future__ import annotations

import base64
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.processes import NodeProcess
from testkit.waiting import wait_for


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args], capture_output=True, text=True, timeout=300
    )


def _fill(node: NodeProcess, ns: str, count: int, seed: int = 7) -> None:
    """``count`` keys of random bytes (any byte, empty too), some with metadata and expiry."""
    rng = random.Random(seed)
    far = int(time.time()) + 86400 * 30
    for start in range(0, count, 10_000):
        operations = []
        for i in range(start, min(count, start + 10_000)):
            value = rng.randbytes(rng.randrange(0, 64))
            op: dict[str, object] = {
                "op": "put",
                "key": f"k{i:06d}/é{rng.randrange(1000)}",
                "value": base64.b64encode(value).decode(),
            }
            if i % 3 == 0:
                op["metadata"] = {"n": i, "tag": "ü", "nested": {"x": [1, 2.5]}}
            if i % 4 == 0:
                op["expiration"] = far + i
            operations.append(op)
        answer = node.request("POST", f"/v1/kv/{ns}/_bulk", json_body={"operations": operations})
        assert answer.status == 200, answer.body


@pytest.mark.slow
def test_export_then_import_of_100000_keys_round_trips_byte_for_byte(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    a = start_node("a")
    _fill(a, "big", 100_000)
    assert a.request("PUT", "/v1/kv/other/one", body=b"\x00\xff").status == 200
    first = tmp_path / "a.ndjson"
    done = edgekv("export", "--url", a.url, "--namespace", "big", "--out", str(first))
    assert done.returncode == 0, done.stderr
    lines = first.read_bytes().splitlines()
    assert len(lines) == 100_000
    b = start_node("b")
    imported = edgekv("import", str(first), "--url", b.url)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {"written": 100_000, "skipped_expired": 0}
    second = tmp_path / "b.ndjson"
    assert edgekv("export", "--url", b.url, "--out", str(second)).returncode == 0
    assert second.read_bytes() == first.read_bytes()
    # And the values as stored, not only as exported.
    sample = json.loads(lines[12_345])
    answer = b.request("GET", f"/v1/kv/big/{sample['key']}".replace("é", "%C3%A9"))
    assert answer.body == base64.b64decode(sample["value"])


def test_export_filters_hides_the_reserved_namespace_and_carries_documents(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node("a")
    for key in ("p1", "p2", "q1"):
        assert node.request("PUT", f"/v1/kv/n1/{key}", body=key).status == 200
    assert node.request("PUT", "/v1/kv/n2/p1", body="x").status == 200
    for doc_id, document in (("pdoc", {"a": 1, "t": "é"}), ("qdoc", {"b": [1, 2]})):
        assert node.request("PUT", f"/v1/docs/n1/{doc_id}", json_body=document).status == 200
    node.request("POST", "/v1/admin/tokens", json_body={"name": "t", "scopes": ["admin"]})
    every = edgekv("export", "--url", node.url)
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert [(e.get("ns"), e.get("key")) for e in lines if "ns" in e] == [
        ("n1", "p1"),
        ("n1", "p2"),
        ("n1", "q1"),
        ("n2", "p1"),
    ]
    assert [(e["collection"], e["id"], e["document"]) for e in lines if "id" in e] == [
        ("n1", "pdoc", {"a": 1, "t": "é"}),
        ("n1", "qdoc", {"b": [1, 2]}),
    ]
    some = edgekv("export", "--url", node.url, "--namespace", "n1", "--prefix", "p")
    assert [
        json.loads(line).get("key") or json.loads(line)["id"] for line in some.stdout.splitlines()
    ] == ["p1", "p2", "pdoc"]
    assert node.request("GET", "/v1/admin/export?prefix=p").status == 400
    # Documents come back with the rest.
    source = tmp_path / "all.ndjson"
    source.write_text(every.stdout)
    other = start_node("b")
    imported = edgekv("import", str(source), "--url", other.url)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["written"] == 6
    assert other.request("GET", "/v1/docs/n1/qdoc").json()["doc"] == {"b": [1, 2]}
    again = edgekv("export", "--url", other.url)
    assert again.stdout == every.stdout


@pytest.mark.slow
def test_interrupted_import_resumes_and_writes_each_line_once(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    lines = [
        json.dumps(
            {
                "ns": "r",
                "key": f"k{i}",
                "value": base64.b64encode(b"v").decode(),
                "metadata": None,
                "expiration": None,
            }
        )
        for i in range(30_000)
    ]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines) + "\n")
    node = start_node("a")
    seq_before = node.request("GET", "/healthz").json()["seq"]
    progress = tmp_path / "in.ndjson.progress"
    command = [
        sys.executable,
        "-m",
        "edgekv",
        "import",
        str(source),
        "--url",
        node.url,
        "--batch",
        "200",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(progress.exists, what="the first requests")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    done_first = json.loads(progress.read_text())["done"]
    assert 0 < done_first < 30_000
    assert node.request("GET", "/healthz").json()["seq"] - seq_before == done_first
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming after item {done_first}" in second.stderr
    assert json.loads(second.stdout)["written"] == 30_000 - done_first
    assert not progress.exists()
    # One change per line: no line was written twice.
    assert node.request("GET", "/healthz").json()["seq"] - seq_before == 30_000


def test_import_from_workers_kv_bulk_json(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node("a")
    soon = int(time.time()) + 3600
    items = [
        {"key": "plain", "value": "hello"},
        {"key": "binary", "value": base64.b64encode(b"\x00\x01\xfe").decode(), "base64": True},
        {"key": "meta", "value": "m", "metadata": {"owner": "web"}, "expiration": soon},
        {"key": "ttl", "value": "t", "expiration_ttl": 600},
        {"key": "gone", "value": "g", "expiration": 1_000_000_000},
    ]
    source = tmp_path / "kv.json"
    source.write_text(json.dumps(items))
    refused = edgekv("import", str(source), "--url", node.url, "--format", "workers-kv")
    assert refused.returncode == 2  # --namespace is required
    done = edgekv(
        "import", str(source), "--url", node.url, "--format", "workers-kv", "--namespace", "wk"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"written": 4, "skipped_expired": 1}
    assert node.request("GET", "/v1/kv/wk/plain").body == b"hello"
    assert node.request("GET", "/v1/kv/wk/binary").body == b"\x00\x01\xfe"
    meta = node.request("GET", "/v1/kv/wk/meta")
    assert json.loads(meta.headers["EdgeKV-Metadata"]) == {"owner": "web"}
    assert meta.headers["EdgeKV-Expiration"] == str(soon)
    ttl = int(node.request("GET", "/v1/kv/wk/ttl").headers["EdgeKV-Expiration"])
    assert abs(ttl - (time.time() + 600)) < 60
    assert node.request("GET", "/v1/kv/wk/gone").status == 404
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"key": "x", "value": "!", "base64": True}]))
    failed = edgekv(
        "import", str(bad), "--url", node.url, "--format", "workers-kv", "--namespace", "wk"
    )
    assert failed.returncode == 1
    assert "not base64" in failed.stderr
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(
        json.dumps([{"key": "a", "value": "1"}, {"key": "b", "value": "2", "metadata": 7}])
    )
    refused_meta = edgekv(
        "import", str(meta_file), "--url", node.url, "--format", "workers-kv", "--namespace", "wk2"
    )
    assert refused_meta.returncode == 1
    assert "items 1-2: 400 invalid_metadata: operations[1]" in refused_meta.stderr
    assert node.request("GET", "/v1/kv/wk2/a").status == 404  # a bulk request is all or none
    assert not (tmp_path / "meta.json.progress").exists()  # nothing acknowledged


def test_counters_and_sets_round_trip_and_an_import_sent_twice_counts_once(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    a = start_node("a")
    later = int(time.time()) + 3600

    def add(node: NodeProcess, path: str, body: dict[str, object]) -> None:
        assert node.request("POST", path, json_body=body).status == 200

    add(a, "/v1/counters/n1/p-hits", {"add": 5})
    add(a, "/v1/counters/n1/p-hits", {"add": -2})
    add(a, "/v1/counters/n1/p-window", {"add": 7, "expiration": later})
    add(a, "/v1/counters/n1/q/%C3%A9", {"add": -(2**63 - 1)})
    add(a, "/v1/counters/n1/zero", {"add": 4})
    assert a.request("DELETE", "/v1/counters/n1/zero").status == 200
    add(a, "/v1/sets/n1/p-tags", {"add": ["red", "blue", "é"]})
    add(a, "/v1/sets/n1/p-tags", {"remove": ["blue"]})
    add(a, "/v1/sets/n2/other", {"add": ["x"]})
    assert a.request("PUT", "/v1/kv/n1/p-key", body=b"v").status == 200
    every = edgekv("export", "--url", a.url)
    assert every.returncode == 0, every.stderr
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert lines[1:] == [
        {"ns": "n1", "counter": "p-hits", "value": 3, "expiration": None},
        {"ns": "n1", "counter": "p-window", "value": 7, "expiration": later},
        {"ns": "n1", "counter": "q/é", "value": -(2**63 - 1), "expiration": None},
        {"ns": "n1", "set": "p-tags", "member": "red"},
        {"ns": "n1", "set": "p-tags", "member": "é"},
        {"ns": "n2", "set": "other", "member": "x"},
    ]  # a counter at 0 reads as one never written: not exported
    some = edgekv("export", "--url", a.url, "--namespace", "n1", "--prefix", "p")
    assert [
        (e.get("key"), e.get("counter"), e.get("member"))
        for e in map(json.loads, some.stdout.splitlines())
    ] == [
        ("p-key", None, None),
        (None, "p-hits", None),
        (None, "p-window", None),
        (None, None, "red"),
        (None, None, "é"),
    ]
    source = tmp_path / "all.ndjson"
    source.write_text(every.stdout)
    b = start_node("b")
    for _ in range(2):  # sent again (as after a hard kill): a counter still counts once
        imported = edgekv("import", str(source), "--url", b.url)
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["written"] == 7
    assert b.request("GET", "/v1/counters/n1/p-hits").json()["value"] == 3
    assert b.request("GET", "/v1/counters/n1/q/%C3%A9").json()["value"] == -(2**63 - 1)
    assert b.request("GET", "/v1/sets/n1/p-tags").json()["members"] == ["red", "é"]
    again = edgekv("export", "--url", b.url)
    assert again.stdout == every.stdout
