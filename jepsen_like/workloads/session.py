"""session: clients with bookmarks hop between PoPs; their reads must not go back.

Each process is one ``edgekv_client.Session`` that writes and reads a few
shared keys, every operation at a PoP picked at random. Versions are
``(hlc, node)`` stamps, so "newer" is exact even with skewed clocks. Checked,
per session and key:

- read-your-writes: a read sees a version at least as new as every write
  this session had acknowledged before the read began;
- monotonic reads: a read sees a version at least as new as every read this
  session had completed before it began.

A read that cannot be served in time answers ``bookmark_not_reached``: a
``fail``, never an older value.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from edgekv_client import Session
from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import (
    CLIENT_TIMEOUT,
    Process,
    Version,
    Workload,
    entries_at_every_node,
    version_of,
    write_or_read,
)

NS = "jsess"
KEYS = tuple(f"s{i}" for i in range(3))


class SessionWorkload(Workload):
    """Sessions writing and reading across PoPs."""

    name = "session"
    processes = 4

    def generate(self, process: Process) -> Op:
        node = process.rng.randrange(len(process.urls))
        key = process.rng.choice(KEYS)
        if process.rng.random() < 0.6:
            return {"f": "read", "key": key, "node": node}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        return {"f": "write", "key": key, "value": f"{process.id}-{counter}", "node": node}

    def _session(self, process: Process, node: int) -> Session:
        if "session" not in process.state:
            process.state["session"] = Session(
                process.urls[node], token=process.token, timeout=CLIENT_TIMEOUT, retries=0
            )
        session: Session = process.state["session"]
        return session if session.url == process.urls[node] else self._hop(process, node)

    def _hop(self, process: Process, node: int) -> Session:
        process.state["session"].close()
        process.state["session"] = process.state["session"].at(process.urls[node])
        session: Session = process.state["session"]
        return session

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        return write_or_read(self._session(process, op["node"]), NS, op)

    def final_reads(self, db: Db) -> dict[str, Any]:
        return entries_at_every_node(db, NS, KEYS)

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_session(ops, final)


def check_session(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """Read-your-writes and monotonic reads, per session and key."""
    # (process, key) -> list of (completion time, stamp, kind, op index)
    done: dict[tuple[int, str], list[tuple[float, Version, str, int]]] = defaultdict(list)
    completed = [(inv, c) for inv, c in pairs(ops) if c is not None and c["type"] == "ok"]
    for invocation, completion in completed:
        done[(invocation["process"], invocation["key"])].append(
            (
                completion["time"],
                version_of(completion["version"]),
                invocation["f"],
                completion["index"],
            )
        )
    violations: list[dict[str, Any]] = []
    reads = 0
    for invocation, completion in completed:
        if invocation["f"] != "read":
            continue
        reads += 1
        seen = version_of(completion["version"])
        for finished, stamp, kind, index in done[(invocation["process"], invocation["key"])]:
            if finished < invocation["time"] and stamp > seen:
                violations.append(
                    {
                        "error": "read-your-writes" if kind == "write" else "monotonic reads",
                        "read": completion["index"],
                        "node": invocation["node"],
                        "saw": completion["version"],
                        "after_op": index,
                    }
                )
                break
    refused = sum(
        1
        for inv, c in pairs(ops)
        if inv["f"] == "read" and c is not None and c.get("error") == "bookmark_not_reached"
    )
    stale = sum(1 for v in violations if v["error"] == "read-your-writes")
    nodes = list(final["nodes"].values())
    agree = all(view == nodes[0] for view in nodes)
    return {
        "valid": not violations and agree,
        "reads_checked": reads,
        "writes_acknowledged": sum(1 for inv, _ in completed if inv["f"] == "write"),
        "read_your_writes_violations": stale,
        "monotonic_read_violations": len(violations) - stale,
        "bookmark_not_reached": refused,
        "final_agree": agree,
        "violations": violations[:20],
    }
