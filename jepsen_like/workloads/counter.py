"""counter: increments and decrements of one PN-counter at every PoP lose nothing.

Operations: ``add`` of a small signed amount at the process's PoP (or another),
``read`` of the counter's value at a PoP. No resets: the sum must be exact.

Checked:

- final: every PoP's final value equals the sum of the acknowledged adds plus
  some subset of the adds whose outcome is unknown (``info``: a timeout, a
  killed node) -- never less, never more;
- reads: each read lies between its bounds. Lower: the positive adds
  acknowledged *at the read's PoP* before the read began (a PoP sees its own
  durable writes) plus every negative add begun before the read ended (it
  may already count). Upper: every positive add begun before the read ended
  plus the negative adds acknowledged at the read's PoP before it began.
"""

from __future__ import annotations

import json
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import Process, Workload, raw_request

NS = "jcounter"
KEY = "hits"


class CounterWorkload(Workload):
    """Adds and reads of one counter."""

    name = "counter"
    processes = 5

    def generate(self, process: Process) -> Op:
        if process.rng.random() < 0.25:
            return {"f": "read"}
        amount = process.rng.choice([-3, -2, -1, 1, 1, 2, 3, 5])
        return {"f": "add", "value": amount}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        counter = process.client(op["node"]).counter(NS, KEY)
        if op["f"] == "add":
            return "ok", {"result": counter.add(op["value"])}
        return "ok", {"value": counter.value()}

    def final_reads(self, db: Db) -> dict[str, Any]:
        nodes = {}
        for i, url in enumerate(db.urls):
            status, _, body = raw_request(url, "GET", f"/v1/counters/{NS}/{KEY}", token=db.token)
            if status != 200:
                raise RuntimeError(f"final read of the counter at n{i}: HTTP {status}")
            nodes[f"n{i}"] = int(json.loads(body)["value"])
        return {"nodes": nodes}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_counter(ops, final)


def reachable_sums(amounts: list[int]) -> set[int]:
    """Every sum of a subset of ``amounts`` (small integers: a set of partial sums)."""
    sums = {0}
    for amount in amounts:
        sums |= {s + amount for s in sums}
    return sums


def check_counter(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """The counter analysis of a history and the final value at every node."""
    adds: list[tuple[Op, Op | None]] = []
    reads: list[tuple[Op, Op]] = []
    for invocation, completion in pairs(ops):
        if invocation["f"] == "add":
            adds.append((invocation, completion))
        elif completion is not None and completion["type"] == "ok":
            reads.append((invocation, completion))
    acknowledged = [(i, c) for i, c in adds if c is not None and c["type"] == "ok"]
    unknown = [i for i, c in adds if c is None or c["type"] == "info"]
    acknowledged_sum = sum(i["value"] for i, _ in acknowledged)
    possible = {acknowledged_sum + s for s in reachable_sums([i["value"] for i in unknown])}
    wrong_final = {node: value for node, value in final["nodes"].items() if value not in possible}

    out_of_bounds: list[dict[str, Any]] = []
    for read_inv, read_done in reads:
        began, ended, node = read_inv["time"], read_done["time"], read_inv["node"]
        lower = upper = 0
        for invocation, completion in adds:
            amount = invocation["value"]
            if invocation["time"] > ended or (
                completion is not None and completion["type"] == "fail"
            ):
                continue  # not begun before the read ended, or surely not applied
            seen_here = (
                completion is not None
                and completion["type"] == "ok"
                and completion["time"] < began
                and invocation["node"] == node
            )
            if amount > 0:
                upper += amount
                lower += amount if seen_here else 0
            else:
                lower += amount
                upper += amount if seen_here else 0
        if not lower <= read_done["value"] <= upper:
            out_of_bounds.append(
                {"read": read_inv["index"], "value": read_done["value"], "bounds": [lower, upper]}
            )
    return {
        "valid": not wrong_final and not out_of_bounds,
        "attempted": len(adds),
        "acknowledged": len(acknowledged),
        "unknown": len(unknown),
        "acknowledged_sum": acknowledged_sum,
        "final": final["nodes"],
        "wrong_final": wrong_final,
        "reads": len(reads),
        "reads_out_of_bounds_count": len(out_of_bounds),
        "reads_out_of_bounds": out_of_bounds[:20],
    }
