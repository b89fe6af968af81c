"""orset: an add-wins observed-remove set, added to and removed from at every PoP.

Operations on one set: ``add`` and ``remove`` of members drawn from a small
pool (so adds and removes of one member meet, across partitions too), and
``read`` of the whole set at a PoP.

Checked, against what the history allows whatever replication did:

- convergence is the runner's (every PoP's final read equal);
- phantom: a final member nobody tried to add;
- lost add: a member absent at the end although one of its acknowledged adds
  began after every remove of it that may have run had ended -- no remove
  could have seen that add, so it must win;
- lost remove: a member present at the end although an acknowledged remove
  ran after every add of it had been acknowledged at the remove's own PoP --
  that remove saw them all;
- read your add: a read at a PoP, begun after an add acknowledged there, with
  no remove of the member begun before the read ended, must hold the member.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import Process, Workload, raw_request

NS = "jorset"
KEY = "tags"
POOL = tuple(f"m{i:02d}" for i in range(12))


class OrsetWorkload(Workload):
    """Adds, removes and reads of one set."""

    name = "orset"
    processes = 5

    def generate(self, process: Process) -> Op:
        roll = process.rng.random()
        if roll < 0.2:
            return {"f": "read"}
        return {"f": "add" if roll < 0.65 else "remove", "value": process.rng.choice(POOL)}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        members = process.client(op["node"]).set(NS, KEY)
        if op["f"] == "add":
            members.add(op["value"])
        elif op["f"] == "remove":
            members.remove(op["value"])
        else:
            return "ok", {"value": members.members()}
        return "ok", {}

    def final_reads(self, db: Db) -> dict[str, Any]:
        nodes = {}
        for i, url in enumerate(db.urls):
            status, _, body = raw_request(url, "GET", f"/v1/sets/{NS}/{KEY}", token=db.token)
            if status != 200:
                raise RuntimeError(f"final read of the set at n{i}: HTTP {status}")
            nodes[f"n{i}"] = json.loads(body)["members"]
        return {"nodes": nodes}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_orset(ops, final)


Pair = tuple[Op, Op | None]


def _applied(completion: Op | None) -> bool:
    """May have taken effect: acknowledged, or of unknown outcome."""
    return completion is None or completion["type"] != "fail"


def _acknowledged(completion: Op | None) -> bool:
    return completion is not None and completion["type"] == "ok"


def check_orset(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """The add-wins analysis of a history and the final read of every node."""
    adds: dict[str, list[Pair]] = defaultdict(list)
    removes: dict[str, list[Pair]] = defaultdict(list)
    reads: list[tuple[Op, Op]] = []
    for invocation, completion in pairs(ops):
        if invocation["f"] == "add":
            adds[invocation["value"]].append((invocation, completion))
        elif invocation["f"] == "remove":
            removes[invocation["value"]].append((invocation, completion))
        elif _acknowledged(completion):
            assert completion is not None
            reads.append((invocation, completion))
    finals = {node: set(members) for node, members in final["nodes"].items()}
    present = set().union(*finals.values()) if finals else set()

    phantom = sorted(
        present - {m for m, tried in adds.items() if any(_applied(c) for _, c in tried)}
    )
    lost_adds, lost_removes = [], []
    for member in sorted(set(adds) | set(removes)):
        may_remove = [(i, c) for i, c in removes[member] if _applied(c)]
        for invocation, completion in adds[member]:
            unseen = all(c is not None and c["time"] < invocation["time"] for _, c in may_remove)
            if _acknowledged(completion) and unseen and member not in present:
                lost_adds.append({"member": member, "add": invocation["index"]})
                break
        for invocation, completion in removes[member]:
            if not _acknowledged(completion):
                continue
            saw_all = all(
                _acknowledged(c)
                and c is not None
                and i["node"] == invocation["node"]
                and c["time"] < invocation["time"]
                for i, c in adds[member]
                if _applied(c)
            )
            if saw_all and member in present:
                lost_removes.append({"member": member, "remove": invocation["index"]})
                break

    missed_own_add = []
    for read_inv, read_done in reads:
        seen = set(read_done["value"])
        for member, tried in adds.items():
            if member in seen:
                continue
            own = any(
                _acknowledged(c)
                and c is not None
                and i["node"] == read_inv["node"]
                and c["time"] < read_inv["time"]
                for i, c in tried
            )
            removed = any(i["time"] < read_done["time"] for i, c in removes[member] if _applied(c))
            if own and not removed:
                missed_own_add.append({"member": member, "read": read_inv["index"]})
    return {
        "valid": not phantom and not lost_adds and not lost_removes and not missed_own_add,
        "adds": sum(map(len, adds.values())),
        "removes": sum(map(len, removes.values())),
        "reads": len(reads),
        "final_members": sorted(present),
        "phantom": phantom,
        "lost_adds": lost_adds[:20],
        "lost_removes": lost_removes[:20],
        "missed_own_add_count": len(missed_own_add),
        "missed_own_add": missed_own_add[:20],
    }
