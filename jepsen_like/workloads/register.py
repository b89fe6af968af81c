"""register: last-writer-wins registers written and read at every PoP.

Every write puts a value no one else writes, and its answer carries the
version (the ``(hlc, node)`` stamp). Checked, per key:

- every node's final read is the same value with the same version;
- that value was written (by an ok or info write): never an invented one;
- the winner is the highest ``(hlc, node)`` among ok and info writes: no
  acknowledged write has a higher stamp than the final value (else it was lost);
- a PoP never goes back: a read there sees at least the version of every
  earlier read and acknowledged write at that PoP.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import (
    Process,
    Version,
    Workload,
    entries_at_every_node,
    version_of,
    write_or_read,
)

NS = "jreg"
KEYS = tuple(f"r{i}" for i in range(5))


class RegisterWorkload(Workload):
    """Unique-value writes and reads of a few keys."""

    name = "register"
    processes = 5

    def generate(self, process: Process) -> Op:
        key = process.rng.choice(KEYS)
        if process.rng.random() < 0.5:
            return {"f": "read", "key": key}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        return {"f": "write", "key": key, "value": f"{process.id}-{counter}"}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        return write_or_read(process.client(op["node"]), NS, op)

    def final_reads(self, db: Db) -> dict[str, Any]:
        return entries_at_every_node(db, NS, KEYS)

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_register(ops, final)


def check_register(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """Check final agreement, the LWW winner, and per-PoP monotonicity."""
    writes: dict[str, dict[str, tuple[str, Version | None]]] = defaultdict(dict)
    errors: list[dict[str, Any]] = []
    # Per (node, key): the highest version a completed op there has shown.
    floor: dict[tuple[int, str], tuple[Version, float, int]] = {}
    events = []
    for invocation, completion in pairs(ops):
        if completion is None or completion["type"] == "fail":
            if invocation["f"] == "write" and completion is None:
                writes[invocation["key"]][invocation["value"]] = ("info", None)
            continue
        if invocation["f"] == "write":
            if completion["type"] == "ok":
                stamp = version_of(completion["version"])
                writes[invocation["key"]][invocation["value"]] = ("ok", stamp)
                events.append((invocation, completion, stamp))
            else:
                writes[invocation["key"]][invocation["value"]] = ("info", None)
        elif completion["type"] == "ok":
            events.append((invocation, completion, version_of(completion["version"])))
    reads_checked = 0
    for invocation, completion, stamp in events:
        slot = (invocation["node"], invocation["key"])
        if invocation["f"] == "read":
            reads_checked += 1
            value = completion["value"]
            if value is not None and value not in writes[invocation["key"]]:
                errors.append({"error": "read a value never written", "op": completion["index"]})
            earlier = floor.get(slot)
            if earlier is not None and earlier[1] < invocation["time"] and stamp < earlier[0]:
                errors.append(
                    {
                        "error": "read went back in time at one PoP",
                        "op": completion["index"],
                        "after_op": earlier[2],
                    }
                )
        current = floor.get(slot)
        if current is None or stamp > current[0]:
            floor[slot] = (stamp, completion["time"], completion["index"])

    nodes = final["nodes"]
    keys = sorted({key for view in nodes.values() for key in view})
    lost = 0
    for key in keys:
        values = {node: view.get(key) for node, view in nodes.items()}
        distinct = {tuple(v) if v else None for v in values.values()}
        if len(distinct) != 1:
            errors.append({"error": "nodes disagree", "key": key, "final": values})
            continue
        entry = next(iter(distinct))
        written = writes.get(key, {})
        ok_stamps = [s for kind, s in written.values() if kind == "ok" and s is not None]
        if entry is None:
            if ok_stamps:
                lost += len(ok_stamps)
                errors.append({"error": "acknowledged writes gone", "key": key})
            continue
        value, version = entry[0], version_of(entry[1])
        if value not in written:
            errors.append({"error": "final value never written", "key": key, "value": value})
            continue
        kind, written_stamp = written[value]
        if kind == "ok" and written_stamp != version:
            errors.append({"error": "final version differs from the write's", "key": key})
        higher = [s for s in ok_stamps if s > version]
        if higher:
            lost += len(higher)
            errors.append(
                {
                    "error": "an acknowledged write with a higher stamp lost",
                    "key": key,
                    "final": entry,
                    "highest_acknowledged": list(max(higher)),
                }
            )
    acknowledged = sum(1 for w in writes.values() for kind, _ in w.values() if kind == "ok")
    return {
        "valid": not errors,
        "keys": len(keys),
        "acknowledged_writes": acknowledged,
        "unknown_writes": sum(
            1 for w in writes.values() for kind, _ in w.values() if kind == "info"
        ),
        "lost_writes": lost,
        "reads_checked": reads_checked,
        "error_count": len(errors),
        "errors": errors[:20],
    }
