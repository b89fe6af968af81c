"""Benchmark of the operator's kit: online backup under PUT load, export, import.

One run, side by side, medians of interleaved rounds:

- **PUT during backup vs without**: a node whose database holds ``--db-mib``
  MiB (1 GiB by default: 4 KiB random values, written straight into its
  SQLite file before it starts) under the same PUT load (the Python load
  generator, new random keys, 100-byte values), once while backups run back
  to back through the whole window (``GET /v1/admin/backup``, the file read
  to the end as ``edgekv backup`` does) and once with none. Target: during
  >= 70% of without.
- **export**: ``GET /v1/admin/export`` of a namespace of ``--keys`` keys
  (100-byte values, metadata on a third), read to the end. Target: >= 50,000
  keys/s.
- **import vs raw sqlite3**: that export imported into an empty node by the
  code ``edgekv import`` runs (bulk requests of 1000 keys on one keep-alive
  connection, the next batch read while the node writes the last, the
  progress file written after each), against raw ``sqlite3`` inserting the
  same rows (parsed from the same file), 1000 per commit, into an empty table
  shaped like the node's with the node's settings (WAL, ``synchronous=FULL``),
  in this process. Target: import >= 50% of raw.

Run from the repository root::

    python -m bench.operations [--db-mib 1024] [--seconds 5] [--rounds 3] [--keys 100000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.loadgen import LoadSettings, run_load
from bench.servers import ServerProcess, node_process
from edgekv.importing import Batch, PipelinedSender, ProgressFile, batches, ndjson_items
from edgekv.operator_http import KeepAlive

VALUE_BYTES = 4096


def build_database(data_dir: Path, mib: int, log: Path) -> None:
    """A node's database of about ``mib`` MiB of 4 KiB random values, written directly."""
    node = node_process(data_dir, log).start()
    node.stop()
    rows = mib * 1024 * 1024 // VALUE_BYTES
    conn = sqlite3.connect(data_dir / "edgekv.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    (node_id,) = conn.execute("SELECT node_id FROM node_state").fetchone()
    hlc = (time.time_ns() // 1_000_000) << 16
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO kv (seq, ns, key, value, metadata, expiration, hlc, node)"
        " SELECT i, 'big', CAST(printf('key-%09d', i) AS BLOB), randomblob(?), NULL, NULL,"
        " ? + i, ? FROM n",
        (rows, VALUE_BYTES, hlc, node_id),
    )
    conn.execute("UPDATE node_state SET seq = ?, hlc = ? WHERE id = 1", (rows, hlc + rows))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _request(url: str, method: str, path: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=600) as answer:
        return bytes(answer.read())


def _read_to_end(url: str, path: str) -> int:
    """Read a streamed answer to the end; return its bytes."""
    size = 0
    buffer = bytearray(1024 * 1024)
    with urllib.request.urlopen(url + path, timeout=3600) as answer:
        while count := answer.readinto(buffer):
            size += count
    return size


def put_rate(node: ServerProcess, seconds: float, seed: int, during_backup: bool) -> dict[str, Any]:
    """PUT requests per second, with backups running back to back or not at all."""
    settings = LoadSettings(seconds, 16, 10_000, 100, "puts", seed)
    stop = threading.Event()
    backups: list[float] = []
    backup_bytes: list[int] = []

    def back_up() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            size = _read_to_end(node.url, "/v1/admin/backup")
            backups.append(time.perf_counter() - started)
            backup_bytes.append(size)

    thread = threading.Thread(target=back_up) if during_backup else None
    if thread is not None:
        thread.start()
    try:
        result = run_load("python", node.url, "put", settings)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    assert result.status_5xx == 0, "5xx answers under load"
    return {
        "rps": result.rps,
        "p99_ms": result.p99_ms,
        "backups_finished": len(backups),
        "backup_seconds": backups,
        "backup_mib_per_s": (
            sum(backup_bytes) / 2**20 / sum(backups) if backups and sum(backups) else None
        ),
    }


def fill_namespace(url: str, ns: str, keys: int) -> None:
    """``keys`` keys of 100-byte values, metadata on every third."""
    for start in range(0, keys, 10_000):
        operations = []
        for i in range(start, min(keys, start + 10_000)):
            op: dict[str, Any] = {
                "op": "put",
                "key": f"key-{i:09d}",
                "value": base64.b64encode(os.urandom(100)).decode(),
            }
            if i % 3 == 0:
                op["metadata"] = {"n": i}
            operations.append(op)
        _request(url, "POST", f"/v1/kv/{ns}/_bulk", json.dumps({"operations": operations}).encode())


def export_rate(url: str, ns: str, out: Path) -> float:
    """Keys per second of ``GET /v1/admin/export?namespace=ns``, written to ``out``."""
    started = time.perf_counter()
    lines = 0
    export_url = f"{url}/v1/admin/export?namespace={ns}"
    with urllib.request.urlopen(export_url, timeout=600) as answer, out.open("wb") as handle:
        while chunk := answer.read(1024 * 1024):
            handle.write(chunk)
            lines += chunk.count(b"\n")
    return lines / (time.perf_counter() - started)


def import_rate(url: str, source: Path, ns: str, progress: Path) -> float:
    """Keys per second of what ``edgekv import`` does, into namespace ``ns``."""
    tracker = ProgressFile(progress)
    connection = KeepAlive(url, None)
    written = [0]

    def send(request: Batch) -> None:
        for method, path, body in request.requests():
            connection.send(method, path, body)

    def sent(request: Batch) -> None:
        written[0] += len(request.operations)

    started = time.perf_counter()
    sender = PipelinedSender(send, tracker, sent)
    for request, _ in batches(ndjson_items(source, ns), 0, 1000):
        sender.submit(request)
    sender.close()
    elapsed = time.perf_counter() - started
    connection.close()
    tracker.remove()
    return written[0] / elapsed


def raw_sqlite_rate(source: Path, directory: Path) -> float:
    """Keys per second of raw sqlite3 inserting the export's rows, 1000 per commit."""
    path = directory / f"raw-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE kv (seq INTEGER PRIMARY KEY, ns TEXT NOT NULL, key BLOB NOT NULL,"
        " value BLOB, metadata TEXT, expiration INTEGER, hlc INTEGER NOT NULL,"
        " node INTEGER NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX kv_ns_key ON kv (ns, key)")
    seq = 0
    rows: list[tuple[Any, ...]] = []
    started = time.perf_counter()
    with source.open("rb") as handle:
        for line in handle:
            entry = json.loads(line)
            seq += 1
            metadata = entry["metadata"]
            rows.append(
                (
                    seq,
                    "raw",
                    entry["key"].encode(),
                    base64.b64decode(entry["value"]),
                    None if metadata is None else json.dumps(metadata, separators=(",", ":")),
                    entry["expiration"],
                    seq,
                    1,
                )
            )
            if len(rows) == 1000:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
                rows.clear()
    if rows:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return seq / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-mib", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        data_dir = work / "node"
        started = time.perf_counter()
        build_database(data_dir, args.db_mib, work / "build.log")
        print(f"built a {args.db_mib} MiB database in {time.perf_counter() - started:.1f} s")
        node = node_process(data_dir, work / "node.log").start()
        try:
            results = _measure(node, args, work)
        finally:
            node.stop()
    print(json.dumps(results, indent=2))
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "operations-latest.json").write_text(json.dumps(results, indent=2))
    return 0


def _measure(node: ServerProcess, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    without: list[dict[str, Any]] = []
    during: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        order = (False, True) if round_number % 2 == 0 else (True, False)
        for with_backup in order:
            measured = put_rate(node, args.seconds, round_number, with_backup)
            (during if with_backup else without).append(measured)
            print(
                ("during backup " if with_backup else "without       ")
                + f"{measured['rps']:.0f} PUT/s"
            )
    fill_namespace(node.url, "exp", args.keys)
    exports, imports, raws = [], [], []
    source = work / "export.ndjson"
    for round_number in range(args.rounds):
        exports.append(export_rate(node.url, "exp", source))
        raws.append(raw_sqlite_rate(source, work))
        # Into an empty node, as raw sqlite3 inserts into an empty file: both start equal.
        fresh = node_process(work / f"import-{round_number}", work / "import.log").start()
        try:
            imports.append(import_rate(fresh.url, source, "imp", work / "progress"))
        finally:
            fresh.stop()
        print(f"export {exports[-1]:.0f} keys/s, import {imports[-1]:.0f}, raw {raws[-1]:.0f}")
    put_without = statistics.median(m["rps"] for m in without)
    put_during = statistics.median(m["rps"] for m in during)
    return {
        "db_mib": args.db_mib,
        "put_without_backup_rps": put_without,
        "put_during_backup_rps": put_during,
        "put_ratio": put_during / put_without,
        "backup_mib_per_s": statistics.median(
            m["backup_mib_per_s"] for m in during if m["backup_mib_per_s"] is not None
        ),
        "backups_finished": [m["backups_finished"] for m in during],
        "export_keys_per_s": statistics.median(exports),
        "import_keys_per_s": statistics.median(imports),
        "raw_sqlite_keys_per_s": statistics.median(raws),
        "import_ratio": statistics.median(imports) / statistics.median(raws),
        "rounds": {"without": without, "during": during},
    }


if __name__ == "__main__":
    raise SystemExit(main())
