"""cas: compare-and-set registers in a strong namespace must be linearizable.

Operations on a few keys of a strong namespace, at every PoP: strong reads
(``consistency=strong``), unconditional writes and compare-and-set. Every
value is written once, so a version names a value: a CAS from value ``a``
to ``b`` is a PUT of ``b`` with ``If-Match`` the version ``a`` was seen
with (``If-None-Match: *`` when the key was seen absent). A failed condition
(409) did nothing (``fail``); ``upstream_unavailable`` and timeouts on writes
are ``info``. The history of each key is checked on its own with the
Wing-Gong/Lowe search (:mod:`jepsen_like.linearizability`), within a time
bound. After the heal every PoP's local copy must equal the strong value.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.linearizability import Call, check_register
from jepsen_like.workloads.base import Process, Workload, entry_at, raw_request

NS = "jcas"
KEYS = tuple(f"c{i}" for i in range(3))
CHECK_SECONDS_PER_KEY = 20.0


class CasWorkload(Workload):
    """Strong reads, writes and compare-and-set."""

    name = "cas"
    processes = 3
    strong_namespaces = (NS,)
    pause_s = (0.05, 0.2)

    def generate(self, process: Process) -> Op:
        key = process.rng.choice(KEYS)
        roll = process.rng.random()
        seen: tuple[str | None, str | None] | None = process.state.get(key)
        if roll < 0.4 or (seen is None and roll >= 0.6):
            return {"f": "read", "key": key}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        value = f"{process.id}-{counter}"
        if roll < 0.6 or seen is None:
            return {"f": "write", "key": key, "value": value}
        expected, version = seen
        return {"f": "cas", "key": key, "value": value, "expected": expected, "if": version}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        client = process.client(op["node"])
        key = op["key"]
        if op["f"] == "read":
            entry = client.get_with_metadata(NS, key, consistency="strong")
            seen = None if entry is None else (entry.value.decode(), entry.version)
            process.state[key] = (None, None) if seen is None else seen
            return "ok", {"value": None if seen is None else seen[0]}
        if op["f"] == "write":
            answer = client.put(NS, key, op["value"].encode())
        elif op["if"] is None:
            answer = client.put(NS, key, op["value"].encode(), if_none_match=True)
        else:
            answer = client.put(NS, key, op["value"].encode(), if_match=op["if"])
        process.state[key] = (op["value"], answer["version"])
        return "ok", {"version": answer["version"]}

    def final_reads(self, db: Db) -> dict[str, Any]:
        strong = {}
        for key in KEYS:
            status, headers, body = raw_request(
                db.urls[0], "GET", f"/v1/kv/{NS}/{key}?consistency=strong", token=db.token
            )
            strong[key] = (
                [body.decode(), headers.get("etag", "").strip('"')] if status == 200 else None
            )
            if status not in (200, 404):
                raise RuntimeError(f"strong read of {key}: HTTP {status}")
        nodes = {
            f"n{i}": {key: entry_at(db, i, NS, key) for key in KEYS} for i in range(len(db.nodes))
        }
        return {"nodes": nodes, "strong": strong}

    def converged(self, final: dict[str, Any]) -> bool:
        return all(view == final["strong"] for view in final["nodes"].values())

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_cas(ops, final)


def calls_per_key(ops: list[Op]) -> dict[str, list[Call]]:
    """The calls of each key for the linearizability search.

    Failed calls did nothing and are left out. So are writes with an unknown
    outcome whose value nobody ever observed: such a write may be taken to
    have never happened (nothing depends on it), and each one left in would
    multiply the orders to search.
    """
    observed = {
        (invocation["key"], value)
        for invocation, completion in pairs(ops)
        if completion is not None and completion["type"] == "ok"
        for value in (completion.get("value"), invocation.get("expected"))
        if invocation["f"] in ("read", "cas") and value is not None
    }
    calls: dict[str, list[Call]] = defaultdict(list)
    for invocation, completion in pairs(ops):
        kind = "info" if completion is None else completion["type"]
        if kind == "fail" or (kind == "info" and invocation["f"] == "read"):
            continue
        if kind == "info" and (invocation["key"], invocation.get("value")) not in observed:
            continue
        returned = completion["time"] if completion is not None and kind == "ok" else float("inf")
        value = (
            completion.get("value")
            if invocation["f"] == "read" and completion
            else invocation.get("value")
        )
        calls[invocation["key"]].append(
            Call(
                invocation["f"],
                value,
                invocation.get("expected"),
                invocation["time"],
                returned,
                invocation["index"],
            )
        )
    return calls


def check_cas(
    ops: list[Op], final: dict[str, Any], seconds_per_key: float = CHECK_SECONDS_PER_KEY
) -> dict[str, Any]:
    """Linearizability per key, then agreement of every PoP with the strong value."""
    results: dict[str, Any] = {}
    for key, calls in sorted(calls_per_key(ops).items()):
        started = time.monotonic()
        verdict = check_register(calls, None, started + seconds_per_key)
        results[key] = {
            "linearizable": verdict,
            "calls": len(calls),
            "seconds": round(time.monotonic() - started, 3),
        }
    counts: dict[str, int] = defaultdict(int)
    for invocation, completion in pairs(ops):
        counts[f"{invocation['f']}_{'info' if completion is None else completion['type']}"] += 1
    strong = final.get("strong", {})
    disagree = [
        {"node": node, "key": key, "local": view.get(key), "strong": strong.get(key)}
        for node, view in final.get("nodes", {}).items()
        for key in strong
        if view.get(key) != strong.get(key)
    ]
    verdicts = [r["linearizable"] for r in results.values()]
    valid: bool | str = all(v is True for v in verdicts) and not disagree
    if not any(v is False for v in verdicts) and any(v is None for v in verdicts) and not disagree:
        valid = "unknown"
    return {
        "valid": valid,
        "linearizable": (
            True
            if all(v is True for v in verdicts)
            else (False if False in verdicts else "unknown")
        ),
        "per_key": results,
        "counts": dict(sorted(counts.items())),
        "local_copies_disagree": disagree[:20],
    }
