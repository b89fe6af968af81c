"""documents: field edits with unique tokens, made concurrently at every PoP.

A few documents are created (each with an empty ``nested`` object) and
replicated everywhere before the clients start. Each edit is a merge patch
adding one field named by a unique token, at the top level or inside
``nested``. Checked: after the heal every node holds the same documents, and
every acknowledged edit is in them, at every node, where it was written;
no token appears that was never sent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import Process, Workload, raw_request

COLLECTION = "jdocs"
DOCS = tuple(f"d{i}" for i in range(3))


class DocumentsWorkload(Workload):
    """Merge patches of distinct fields."""

    name = "documents"
    processes = 3
    reads = frozenset({"read"})

    def setup(self, db: Db) -> None:
        for doc in DOCS:
            status, _, body = raw_request(
                db.urls[0], "PUT", f"/v1/docs/{COLLECTION}/{doc}", {"nested": {}}, token=db.token
            )
            if status != 200:
                raise RuntimeError(f"cannot create document {doc}: {status} {body[:200]!r}")
        deadline = time.monotonic() + 60
        while not all(
            raw_request(url, "GET", f"/v1/docs/{COLLECTION}/{doc}", token=db.token)[0] == 200
            for url in db.urls
            for doc in DOCS
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("documents did not replicate before the run")
            time.sleep(0.05)

    def generate(self, process: Process) -> Op:
        doc = process.rng.choice(DOCS)
        if process.rng.random() < 0.1:
            return {"f": "read", "key": doc}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        token = f"t{process.id}_{counter}"
        where = "nested" if process.rng.random() < 0.5 else "top"
        return {"f": "edit", "key": doc, "value": token, "where": where}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        url = process.urls[op["node"]]
        path = f"/v1/docs/{COLLECTION}/{op['key']}"
        if op["f"] == "read":
            status, _, body = raw_request(url, "GET", path, token=process.token)
            return ("ok", {"fields": len(body)}) if status == 200 else ("fail", {"error": status})
        token = op["value"]
        patch = {"nested": {token: 1}} if op["where"] == "nested" else {token: 1}
        status, _, body = raw_request(url, "PATCH", path, patch, token=process.token)
        if status == 200:
            return "ok", {}
        # A 5xx may come after the commit; a 4xx surely wrote nothing.
        return ("info" if status >= 500 else "fail"), {"error": status}

    def final_reads(self, db: Db) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for i, url in enumerate(db.urls):
            view = {}
            for doc in DOCS:
                status, _, body = raw_request(
                    url, "GET", f"/v1/docs/{COLLECTION}/{doc}", token=db.token
                )
                if status != 200:
                    raise RuntimeError(f"final read of {doc} at n{i}: HTTP {status}")
                view[doc] = json.loads(body)["doc"]
            nodes[f"n{i}"] = view
        return {"nodes": nodes}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_documents(ops, final)


def check_documents(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """Every acknowledged token present at every node; nothing invented."""
    acknowledged: list[Op] = []
    sent: set[tuple[str, str]] = set()
    for invocation, completion in pairs(ops):
        if invocation["f"] != "edit":
            continue
        sent.add((invocation["key"], invocation["value"]))
        if completion is not None and completion["type"] == "ok":
            acknowledged.append(invocation)
    missing: list[dict[str, Any]] = []
    invented: list[dict[str, Any]] = []
    for node, view in final["nodes"].items():
        for op in acknowledged:
            doc = view.get(op["key"]) or {}
            place = doc.get("nested") or {} if op["where"] == "nested" else doc
            if place.get(op["value"]) != 1:
                missing.append({"node": node, "doc": op["key"], "token": op["value"]})
        for doc_id, doc in view.items():
            tokens = [k for k in doc if k != "nested"] + list(doc.get("nested") or {})
            invented += [
                {"node": node, "doc": doc_id, "token": t} for t in tokens if (doc_id, t) not in sent
            ]
    views = list(final["nodes"].values())
    agree = all(view == views[0] for view in views)
    return {
        "valid": not missing and not invented and agree,
        "edits_attempted": len(sent),
        "edits_acknowledged": len(acknowledged),
        "missing_count": len(missing),
        "missing": missing[:20],
        "invented": invented[:20],
        "final_agree": agree,
    }
