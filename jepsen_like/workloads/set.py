"""set: every add writes one unique key; reads list the namespace (as Jepsen's set-full).

Checked:

- lost: an element whose add was acknowledged (or that some read saw) is
  missing from a node's final read;
- stale (same node): a read at the PoP that acknowledged an add, begun after
  the acknowledgement, without the element -- a PoP always sees its own
  durable writes, so this is an error;
- stale (elsewhere): a read at another PoP that missed an element already
  known -- expected while replication catches up, counted, not an error;
- never read: added (ok or info) but in no read at all; for an info add it
  only means the write did not happen;
- stable latency: from an add's invocation until every later read has it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.stats import quantiles
from jepsen_like.workloads.base import Process, Workload

NS = "jset"


class SetWorkload(Workload):
    """Unique adds, whole-set reads."""

    name = "set"
    processes = 5

    def generate(self, process: Process) -> Op:
        if process.rng.random() < 0.1:
            return {"f": "read"}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        return {"f": "add", "value": process.id * 1_000_000 + counter}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        client = process.client(op["node"])
        if op["f"] == "add":
            client.put(NS, str(op["value"]), b"1")
            return "ok", {}
        return "ok", {"value": sorted(int(item["name"]) for item in client.list(NS))}

    def final_reads(self, db: Db) -> dict[str, Any]:
        nodes = {}
        for i in range(len(db.nodes)):
            rows = db.read_db(i, "SELECT key FROM kv WHERE ns = ? AND value IS NOT NULL", (NS,))
            nodes[f"n{i}"] = sorted(int(row[0]) for row in rows)
        return {"nodes": nodes}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_set(ops, final)


def check_set(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """The set-full analysis of a history and the final reads of every node."""
    adds: dict[int, tuple[Op, Op | None]] = {}
    reads: list[tuple[Op, Op]] = []
    for invocation, completion in pairs(ops):
        if invocation["f"] == "add":
            adds[invocation["value"]] = (invocation, completion)
        elif completion is not None and completion["type"] == "ok":
            reads.append((invocation, completion))
    reads.sort(key=lambda pair: pair[0]["time"])
    seen_in: dict[int, list[int]] = defaultdict(list)  # element -> indexes into reads
    read_sets = [set(completion["value"]) for _, completion in reads]
    for r, elements in enumerate(read_sets):
        for element in elements:
            seen_in[element].append(r)
    final_sets = {node: set(elements) for node, elements in final["nodes"].items()}
    written = set(adds)
    acknowledged = {e for e, (_, c) in adds.items() if c is not None and c["type"] == "ok"}
    unknown = {e for e, (_, c) in adds.items() if c is None or c["type"] == "info"}
    in_final = set().union(*final_sets.values()) if final_sets else set()

    lost: list[dict[str, Any]] = []
    stale_same_node: list[dict[str, Any]] = []
    stale_elsewhere = 0
    stable_latencies: list[float] = []
    for element, (invocation, completion) in sorted(adds.items()):
        # A read that saw the element proves it only once it completed: begun
        # earlier, it may have overlapped the add (or preceded it at its own PoP).
        known = _known_time(completion, [reads[r][1]["time"] for r in seen_in[element]])
        if known is None:
            continue
        missing_at = sorted(n for n, elements in final_sets.items() if element not in elements)
        if missing_at:
            lost.append(
                {"element": element, "added_at": invocation["node"], "missing_at": missing_at}
            )
        last_miss = None
        for r, (read_inv, _) in enumerate(reads):
            if read_inv["time"] <= known or element in read_sets[r]:
                continue
            last_miss = r
            if (
                completion is not None
                and completion["type"] == "ok"
                and read_inv["node"] == invocation["node"]
            ):
                stale_same_node.append({"element": element, "read": read_inv["index"]})
            else:
                stale_elsewhere += 1
        if not missing_at:
            stable = _stable_time(reads, read_sets, element, last_miss, final.get("time"))
            if stable is not None:
                stable_latencies.append(max(0.0, stable - invocation["time"]))
    phantom = sorted(in_final - written)
    never_read = sorted(e for e in acknowledged | unknown if not seen_in[e] and e not in in_final)
    return {
        "valid": not lost and not stale_same_node and not phantom,
        "attempted": len(adds),
        "acknowledged": len(acknowledged),
        "unknown": len(unknown),
        "lost_count": len(lost),
        "lost": lost[:20],
        "stale_same_node_count": len(stale_same_node),
        "stale_same_node": stale_same_node[:20],
        "stale_elsewhere_count": stale_elsewhere,
        "never_read_count": len(never_read),
        "never_read_acknowledged": sorted(set(never_read) & acknowledged)[:20],
        "phantom": phantom[:20],
        "reads": len(reads),
        "stable_latency_s": quantiles(stable_latencies),
    }


def _known_time(completion: Op | None, seen_times: list[float]) -> float | None:
    """When an element became known: its add acknowledged, or a read that saw it completed."""
    times = list(seen_times)
    if completion is not None and completion["type"] == "ok":
        times.append(completion["time"])
    return min(times) if times else None


def _stable_time(
    reads: list[tuple[Op, Op]],
    read_sets: list[set[int]],
    element: int,
    last_miss: int | None,
    final_time: float | None,
) -> float | None:
    """When the element was in every read from then on: the first read after the last miss."""
    start = 0 if last_miss is None else last_miss + 1
    for r in range(start, len(reads)):
        if element in read_sets[r]:
            return float(reads[r][0]["time"])
    return final_time
