"""Document benchmark: PATCH against key-value PUT, indexed queries against sqlite3.

Two measurements, each against a baseline run side by side in the same run:

1. Throughput over HTTP (wrk, 64 connections, closed loop): document PATCH
   (a small merge patch of a random document of 1,000) against key-value PUT
   (100-byte value, random key) on the same node, in alternating rounds.
2. A range query over 100,000 documents (``where=age>=A&where=age<B``,
   ``order_by=age``, ``limit=100``): the node's query path (the route's SQL
   builder, the read connection, the answer's JSON) with a declared index,
   the same SQL run directly on ``sqlite3``, and the node's path before the
   index exists. Then the same query over HTTP on a kept-alive connection,
   beside a GET of one document on it (the cost of the request itself).

Run: ``python -m bench.documents`` (about 75 seconds; ``--quick`` for less).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.loadgen import RESULT_MARKER, wrk_path
from bench.servers import node_process
from edgekv.config import Config
from edgekv.documents import indexes, query
from edgekv.store.doc_queries import Query
from edgekv.store.store import Store

DOCS_FOR_PATCH = 1000
QUERY_DOCS = 100_000
_WRK_SCRIPT = r"""
local threads = {}
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end
function init(args)
  mode = args[1]
  docs = tonumber(args[2])
  math.randomseed(7919 * thread_id)
  local chars = {}
  for i = 1, 100 do chars[i] = string.char(math.random(97, 122)) end
  value = table.concat(chars)
  json_headers = { ["Content-Type"] = "application/merge-patch+json" }
  raw_headers = { ["Content-Type"] = "application/octet-stream" }
  status_2xx, status_4xx, status_5xx, status_other = 0, 0, 0, 0
end
function request()
  if mode == "patch" then
    local body = string.format('{"n":%d,"profile":{"visits":%d}}',
      math.random(0, 1000000), math.random(0, 1000))
    return wrk.format("PATCH", string.format("/v1/docs/bench/d%05d",
      math.random(0, docs - 1)), json_headers, body)
  end
  return wrk.format("PUT", string.format("/v1/kv/bench/p%08d",
    math.random(0, 99999999)), raw_headers, value)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then status_2xx = status_2xx + 1
  elseif status >= 500 then status_5xx = status_5xx + 1
  elseif status >= 400 then status_4xx = status_4xx + 1
  else status_other = status_other + 1 end
end
function done(summary, latency, requests)
  local counts = { status_2xx = 0, status_4xx = 0, status_5xx = 0, status_other = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do counts[name] = counts[name] + (thread:get(name) or 0) end
  end
  io.write(string.format('BENCH-RESULT {"requests": %d, "duration_us": %d, "p99_us": %d, '
    .. '"status_2xx": %d, "non_2xx": %d}\n', summary.requests, summary.duration,
    latency:percentile(99), counts.status_2xx,
    counts.status_4xx + counts.status_5xx + counts.status_other))
end
"""


def _http(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _wrk(url: str, mode: str, seconds: int, script: Path) -> dict[str, float]:
    path = wrk_path()
    if path is None:
        raise SystemExit("wrk is not installed: sudo apt-get install -y wrk")
    command = [path, "-t1", "-c64", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(
        [*command, "--", mode, str(DOCS_FOR_PATCH)], capture_output=True, text=True, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            raw: dict[str, float] = json.loads(line[len(RESULT_MARKER) :])
            raw["rps"] = raw["requests"] / (raw["duration_us"] / 1e6)
            return raw
    raise SystemExit(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


def throughput(rounds: int, seconds: int, work: Path) -> dict[str, Any]:
    """PATCH and PUT requests/s on one node, alternating, ``rounds`` times."""
    script = work / "documents.lua"
    script.write_text(_WRK_SCRIPT)
    server = node_process(work / "node", work / "node.log").start()
    try:
        for i in range(DOCS_FOR_PATCH):
            doc = json.dumps({"n": 0, "name": f"user {i}", "profile": {"city": "Oslo"}})
            status, _ = _http(server.url, "PUT", f"/v1/docs/bench/d{i:05d}", doc.encode())
            assert status == 200
        _wrk(server.url, "patch", 1, script)  # warm-up
        _wrk(server.url, "put", 1, script)
        runs: dict[str, list[dict[str, float]]] = {"patch": [], "put": []}
        for r in range(rounds):
            order = ("patch", "put") if r % 2 == 0 else ("put", "patch")
            for mode in order:
                result = _wrk(server.url, mode, seconds, script)
                runs[mode].append(result)
                print(f"  round {r + 1} {mode:5}: {result['rps']:8.0f} req/s", flush=True)
    finally:
        server.stop()
    patch = statistics.median(run["rps"] for run in runs["patch"])
    put = statistics.median(run["rps"] for run in runs["put"])
    per_round = [p["rps"] / q["rps"] for p, q in zip(runs["patch"], runs["put"], strict=True)]
    errors = sum(run["non_2xx"] for mode in runs.values() for run in mode)
    return {
        "patch_rps": patch,
        "put_rps": put,
        "ratio": patch / put,
        "ratio_per_round": per_round,
        "non_2xx": errors,
        "runs": runs,
    }


def _timed(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _populate(store: Store, count: int) -> None:
    rng = random.Random(5)
    pending = []
    for i in range(count):
        body = {"age": rng.randrange(0, 1_000_000), "name": f"u{i}", "team": f"t{i % 50}"}
        pending.append(store.documents.put("people", f"p{i:06d}", body))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


DEFAULTS = Config()
"""The node's default settings: the query page and index limits the route runs with."""


def queries(work: Path, repeats: int, count: int) -> dict[str, Any]:
    """Indexed node query vs the same SQL on sqlite3 vs the unindexed node query."""
    data = work / "query-node"

    async def build() -> tuple[dict[str, float], Query]:
        store = Store(data, synchronous="normal")
        try:
            await _populate(store, count)
            # A range that holds about 100 of the documents; the page takes them all.
            low = 500_000
            high = low + 1_000_000 * 100 // count
            where = [f"age>={low}", f"age<{high}"]
            page = query.build("people", where, "age", 100, None)

            def node_path() -> str:
                # What the route does: parse, run, write the answer (query.answer).
                built = query.build("people", where, "age", 100, None)
                return query.answer(store.documents.query_rows, built, DEFAULTS.max_query_bytes)

            unindexed = _timed(node_path, max(3, repeats // 20))
            await indexes.declare(store, "people", "age", DEFAULTS.max_indexes_per_collection)
            direct = sqlite3.connect(store.path)
            try:
                times: dict[str, list[float]] = {"indexed": [], "sqlite3": []}
                for _ in range(5):  # interleaved rounds, medians of medians
                    times["indexed"].append(_timed(node_path, repeats))
                    times["sqlite3"].append(
                        _timed(lambda: direct.execute(page.sql, page.params).fetchall(), repeats)
                    )
                plan = " ".join(
                    row[3] for row in direct.execute("EXPLAIN QUERY PLAN " + page.sql, page.params)
                )
                found = len(direct.execute(page.sql, page.params).fetchall())
            finally:
                direct.close()
            return {
                "unindexed_s": unindexed,
                "indexed_s": statistics.median(times["indexed"]),
                "sqlite3_s": statistics.median(times["sqlite3"]),
                "rows": found,
                "plan": plan,  # type: ignore[dict-item]
            }, page
        finally:
            store.close()

    figures, _ = asyncio.run(build())
    # The same query over HTTP, served by a node on the same database, on one kept-alive
    # connection (as a client sends it); a GET of one document on it is the floor.
    server = node_process(data, work / "query-node.log").start()
    try:
        params = "&".join(
            f"where={w}" for w in ("age>=500000", f"age<{500_000 + 100_000_000 // count}")
        )
        path = f"/v1/docs/people?{params}&order_by=age&limit=100"
        parts = urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

        def get(target: str) -> bytes:
            conn.request("GET", target)
            answer = conn.getresponse()
            body = answer.read()
            assert answer.status == 200, body
            return body

        try:
            figures["http_documents"] = len(json.loads(get(path))["documents"])
            times: dict[str, list[float]] = {"query": [], "one": []}
            for _ in range(5):  # interleaved rounds, medians of medians
                times["query"].append(_timed(lambda: get(path), repeats))
                times["one"].append(_timed(lambda: get("/v1/docs/people/p000001"), repeats))
            figures["http_s"] = statistics.median(times["query"])
            figures["http_get_one_s"] = statistics.median(times["one"])
        finally:
            conn.close()
    finally:
        server.stop()
    figures["indexed_vs_sqlite3"] = figures["indexed_s"] / figures["sqlite3_s"]
    figures["unindexed_vs_indexed"] = figures["unindexed_s"] / figures["indexed_s"]
    return figures


def main() -> None:
    """Run both measurements and print the figures against the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--docs", type=int, default=QUERY_DOCS, help="documents to query")
    args = parser.parse_args()
    rounds, seconds, repeats = (3, 2, 50) if args.quick else (5, 5, 200)
    work = Path(tempfile.mkdtemp(prefix="edgekv-docbench-"))
    try:
        print(f"throughput: {rounds} rounds x {seconds} s, wrk -t1 -c64", flush=True)
        rates = throughput(rounds, seconds, work)
        print(f"queries over {args.docs} documents", flush=True)
        found = queries(work, repeats, args.docs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    ratios = ", ".join(f"{r:.0%}" for r in rates["ratio_per_round"])
    print(
        f"PATCH {rates['patch_rps']:.0f} req/s vs KV PUT {rates['put_rps']:.0f} req/s: "
        f"{rates['ratio']:.0%} (per round {ratios}); target >= 50%; non-2xx {rates['non_2xx']}"
    )
    indexed_ms, sqlite_ms = found["indexed_s"] * 1e3, found["sqlite3_s"] * 1e3
    print(
        f"indexed query {indexed_ms:.3f} ms vs sqlite3 {sqlite_ms:.3f} ms: "
        f"{found['indexed_vs_sqlite3']:.2f}x (target <= 2x)"
    )
    print(
        f"unindexed {found['unindexed_s'] * 1e3:.1f} ms: {found['unindexed_vs_indexed']:.0f}x "
        f"the indexed query (target >= 50x); {found['rows']} rows"
    )
    print(
        f"over HTTP (keep-alive): query {found['http_s'] * 1e3:.3f} ms "
        f"({found['http_s'] / found['sqlite3_s']:.1f}x sqlite3), "
        f"GET of one document {found['http_get_one_s'] * 1e3:.3f} ms"
    )
    print(f"plan: {found['plan']}")
    summary = {k: v for k, v in rates.items() if k != "runs"}
    print("RESULT " + json.dumps({"throughput": summary, "queries": found}))


if __name__ == "__main__":
    main()
