"""delete-readd: keys put, deleted and put again; nothing deleted comes back.

The nodes run with a short ``tombstone_horizon`` so that tombstones are
collected during and after the run. Every put writes a unique value; puts
and deletes answer with the version (stamp) they were given. Checked per
key, on the final reads taken after the heal and again after every
tombstone of the namespace has been collected:

- every node agrees;
- resurrection: the final value is older than an acknowledged delete;
- lost: the key is absent though an acknowledged put is newer than every
  delete (and no delete with an unknown outcome could be newer);
- the final value was written, with the version its put was given.
"""

from __future__ import annotations

import time
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
)

NS = "jdel"
KEYS = tuple(f"k{i}" for i in range(5))


class DeleteReaddWorkload(Workload):
    """Puts and deletes of a few keys, with tombstones collected quickly."""

    name = "delete-readd"
    processes = 3

    def generate(self, process: Process) -> Op:
        key = process.rng.choice(KEYS)
        roll = process.rng.random()
        if roll < 0.2:
            return {"f": "read", "key": key}
        if roll < 0.5:
            return {"f": "delete", "key": key}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        return {"f": "put", "key": key, "value": f"{process.id}-{counter}"}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        client = process.client(op["node"])
        if op["f"] == "put":
            return "ok", {"version": client.put(NS, op["key"], op["value"].encode())["version"]}
        if op["f"] == "delete":
            return "ok", {"version": client.delete(NS, op["key"])["version"]}
        entry = client.get_with_metadata(NS, op["key"])
        return "ok", {"value": None if entry is None else entry.value.decode()}

    def final_reads(self, db: Db) -> dict[str, Any]:
        return entries_at_every_node(db, NS, KEYS)

    def settle(self, db: Db, timeout: float) -> dict[str, Any]:
        """Wait until no node holds a tombstone of the namespace, then read again."""
        deadline = time.monotonic() + timeout
        sql = "SELECT count(*) FROM kv WHERE ns = ? AND value IS NULL"
        while True:
            left = [db.read_db(i, sql, (NS,))[0][0] for i in range(len(db.nodes))]
            if not any(left) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return {"tombstones_left": left, "after_collection": self.final_reads(db)}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_delete_readd(ops, final)


def check_delete_readd(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """No resurrection, no lost put, agreement; on both final reads."""
    puts: dict[str, dict[str, tuple[str, Version | None]]] = defaultdict(dict)
    deletes_ok: dict[str, list[Version]] = defaultdict(list)
    deletes_unknown: dict[str, int] = defaultdict(int)
    for invocation, completion in pairs(ops):
        kind = None if completion is None else completion["type"]
        if invocation["f"] == "put" and kind != "fail":
            stamp = version_of(completion["version"]) if kind == "ok" and completion else None
            puts[invocation["key"]][invocation["value"]] = ("ok" if stamp else "info", stamp)
        elif invocation["f"] == "delete" and kind != "fail":
            if kind == "ok" and completion is not None:
                deletes_ok[invocation["key"]].append(version_of(completion["version"]))
            else:
                deletes_unknown[invocation["key"]] += 1
    errors: list[dict[str, Any]] = []
    views = [("after heal", final)]
    settled = final.get("settled", {})
    if "after_collection" in settled:
        views.append(("after tombstone collection", settled["after_collection"]))
    resurrected = lost = 0
    for label, reads in views:
        nodes = reads["nodes"]
        for key in sorted({k for view in nodes.values() for k in view}):
            values = {node: view.get(key) for node, view in nodes.items()}
            distinct = {tuple(v) if v else None for v in values.values()}
            if len(distinct) != 1:
                errors.append(
                    {"error": "nodes disagree", "when": label, "key": key, "final": values}
                )
                continue
            entry = next(iter(distinct))
            newest_delete = max(deletes_ok[key], default=None)
            ok_puts = [s for kind, s in puts[key].values() if kind == "ok" and s is not None]
            if entry is None:
                newest_put = max(ok_puts, default=None)
                # A delete with an unknown outcome may carry any stamp: then absence is fine.
                put_wins = newest_put is not None and (
                    newest_delete is None or newest_put > newest_delete
                )
                if put_wins and not deletes_unknown[key]:
                    lost += 1
                    errors.append({"error": "acknowledged put lost", "when": label, "key": key})
                continue
            value, version = entry[0], version_of(entry[1])
            if newest_delete is not None and version < newest_delete:
                resurrected += 1
                errors.append(
                    {
                        "error": "deleted value came back",
                        "when": label,
                        "key": key,
                        "final": list(entry),
                        "newest_acknowledged_delete": list(newest_delete),
                    }
                )
            if value not in puts[key]:
                errors.append({"error": "final value never written", "when": label, "key": key})
            elif puts[key][value][0] == "ok" and puts[key][value][1] != version:
                errors.append({"error": "final version differs from the put's", "key": key})
            elif any(s > version for s in ok_puts):
                lost += 1
                errors.append({"error": "newer acknowledged put lost", "when": label, "key": key})
    return {
        "valid": not errors,
        "puts_acknowledged": sum(
            1 for p in puts.values() for kind, _ in p.values() if kind == "ok"
        ),
        "deletes_acknowledged": sum(len(d) for d in deletes_ok.values()),
        "resurrected": resurrected,
        "lost": lost,
        "tombstones_left": settled.get("tombstones_left"),
        "error_count": len(errors),
        "errors": errors[:20],
    }
