"""One run: start the cluster, run the clients under the nemesis, heal, read, check, report.

Every run ends the same way: heal every fault, wait until every node serves
and every workload's final reads agree across nodes (the time this takes is
the convergence after heal), let workloads settle (tombstone collection),
read the final state everywhere, then check. Operations, faults and their
targets all come from generators seeded with ``seed``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepsen_like import report
from jepsen_like.convergence import converge_after_heal, kv_join
from jepsen_like.db import Db, DbOptions
from jepsen_like.history import History, Op, pairs
from jepsen_like.nemesis import (
    BACKBONE_TOMBSTONE_HORIZON_S,
    CLOCK_NEMESIS_MAX_OFFSET_S,
    CLOCK_NEMESIS_TOMBSTONE_HORIZON_S,
    REGION_KINDS,
    TOMBSTONE_HORIZON_S,
    Fault,
    Injector,
    plan,
    run_schedule,
)
from jepsen_like.stats import quantiles
from jepsen_like.workloads import WORKLOADS
from jepsen_like.workloads.base import Process, Workload, outcome_of_error
from testkit.pg import DSN

log = logging.getLogger("jepsen_like")


@dataclass
class RunOptions:
    """What ``python -m jepsen_like run`` was asked to do."""

    out: Path
    nodes: int = 5
    time_limit: float = 60.0
    workloads: list[str] = field(default_factory=lambda: ["set", "register"])
    nemeses: list[str] = field(default_factory=lambda: ["partition", "kill"])
    seed: int = 0
    broken_merge: bool = False
    pg_dsn: str = DSN
    """The PostgreSQL of strong workloads (``EDGEKV_TEST_PG_DSN``, as the tests)."""
    recovery_timeout: float = 90.0
    tombstone_horizon: float | None = None
    """The nodes' tombstone horizon; None: longer than any fault."""
    node_args: tuple[str, ...] = ()
    """Extra ``edgekv serve`` flags for every node."""
    secure: bool = True
    """Nodes with tokens and a cluster secret; False: the trusting loopback configuration."""
    topology: str = "mesh"
    """``mesh``, or ``regions``: regions over the WAN model joined by a NATS backbone."""
    regions: int = 2
    command: str = ""


def run(options: RunOptions) -> dict[str, Any]:
    """Run once; write ``history.jsonl``, ``results.json`` and ``report.html`` to ``out``."""
    options.out.mkdir(parents=True, exist_ok=True)
    workloads = [WORKLOADS[name]() for name in options.workloads]
    strong = tuple(ns for w in workloads for ns in w.strong_namespaces)
    nemeses = [k for k in options.nemeses if k != "upstream" or strong]
    regions = options.regions if options.topology == "regions" else 1
    if options.topology != "regions":  # nothing to cut or stop between regions
        nemeses = [k for k in nemeses if k not in REGION_KINDS]
    schedule = plan(
        random.Random(f"{options.seed}:nemesis"),
        nemeses,
        options.nodes,
        options.time_limit,
        regions=regions,
    )
    schema = f"jepsen_{options.seed}_{os.getpid()}_{int(time.time())}"
    db = Db(
        options.out / "nodes",
        DbOptions(
            nodes=options.nodes,
            upstream_dsn=options.pg_dsn if strong else None,
            upstream_schema=schema,
            strong_namespaces=strong,
            max_clock_offset=CLOCK_NEMESIS_MAX_OFFSET_S if "clock" in nemeses else 0.5,
            tombstone_horizon=options.tombstone_horizon or _horizon(nemeses, options.topology),
            broken_merge=options.broken_merge,
            extra_args=options.node_args,
            secure=options.secure,
            topology=options.topology,
            regions=regions,
        ),
    )
    started = time.monotonic()
    try:
        db.start()
        for workload in workloads:
            workload.setup(db)
        history = History()
        faults, heal_samples = _run_clients(options, db, workloads, schedule, history)
        db.heal_all()
        final_heal = history.now()
        kv_final = converge_after_heal(
            db, kv_join(db), final_heal, history.now, final_heal + options.recovery_timeout
        )
        heal_samples.append({"fault": "final heal", "healed": final_heal, "seconds": kv_final})
        db.wait_serving()
        finals, converge_s = _final_reads(
            db, workloads, history, options.recovery_timeout, final_heal
        )
    finally:
        db.close()
        if strong:
            _drop_schema(options.pg_dsn, schema)
    ops = history.ops()
    history.save(options.out / "history.jsonl")
    (options.out / "final.json").write_text(json.dumps(finals, indent=1, sort_keys=True))
    results = summarize(options, workloads, ops, finals, converge_s, faults, heal_samples, schedule)
    results["final_heal_kv_converged_s"] = kv_final
    results["tokens_and_cluster_secret"] = options.secure
    results["duration_s"] = round(time.monotonic() - started, 1)
    (options.out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (options.out / "report.html").write_text(report.html(results, ops))
    return results


def _run_clients(
    options: RunOptions,
    db: Db,
    workloads: list[Workload],
    schedule: list[Fault],
    history: History,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every process and the nemesis for ``time_limit`` seconds."""
    stop = threading.Event()
    threads = []
    next_id = 0
    for workload in workloads:
        for index in range(workload.processes):
            process = Process(
                next_id,
                index % options.nodes,
                db.urls,
                random.Random(f"{options.seed}:{workload.name}:{index}"),
                token=db.token,
            )
            next_id += 1
            threads.append(
                threading.Thread(target=_client_loop, args=(workload, process, history, stop))
            )
    heal_samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []

    def on_heal(fault: Fault, next_start: float) -> None:
        healed = history.now()
        seconds = converge_after_heal(db, kv_join(db), healed, history.now, next_start)
        heal_samples.append(
            {"fault": fault.describe(), "healed": round(healed, 3), "seconds": seconds}
        )

    def nemesis() -> None:
        faults.extend(run_schedule(schedule, Injector(db), history.now, stop, on_heal))

    nemesis_thread = threading.Thread(target=nemesis)
    for thread in [*threads, nemesis_thread]:
        thread.start()
    stop.wait(options.time_limit)
    stop.set()
    for thread in [*threads, nemesis_thread]:
        thread.join()
    return faults, heal_samples


def _client_loop(
    workload: Workload, process: Process, history: History, stop: threading.Event
) -> None:
    """Invoke operations one at a time until the run ends."""
    try:
        while not stop.is_set():
            op = workload.generate(process)
            op.setdefault("node", process.node)
            invocation = history.invoke(process.id, workload=workload.name, **op)
            try:
                kind, fields = workload.invoke(process, op)
            except Exception as exc:
                try:
                    kind, fields = outcome_of_error(exc, op["f"] in workload.reads)
                except Exception:
                    kind, fields = (
                        "info",
                        {"error": f"unexpected {type(exc).__name__}: {exc}"[:200]},
                    )
            history.complete(invocation, kind, **fields)
            stop.wait(process.rng.uniform(*workload.pause_s))
    finally:
        process.close()


def _final_reads(
    db: Db,
    workloads: list[Workload],
    history: History,
    timeout: float,
    healed_at: float | None = None,
) -> tuple[dict[str, Any], dict[str, float | None]]:
    """Wait for each workload's final reads to agree; settle; read again everywhere."""
    healed = history.now() if healed_at is None else healed_at
    deadline = time.monotonic() + timeout
    finals: dict[str, Any] = {}
    converge_s: dict[str, float | None] = {}
    for workload in workloads:
        final: dict[str, Any] = {}
        converged = False
        while True:
            try:
                final = workload.final_reads(db)
                converged = workload.converged(final)
            except (OSError, RuntimeError) as exc:
                log.info("final read of %s: %s", workload.name, exc)
            if converged or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        converge_s[workload.name] = round(history.now() - healed, 3) if converged else None
        finals[workload.name] = final
    # Waiting for tombstone collection makes sense only when the horizon is short.
    horizon = db.options.tombstone_horizon
    settle_s = min(horizon + 10, max(5.0, deadline - time.monotonic())) if horizon < 60 else 0.0
    for workload in workloads:
        settled = workload.settle(db, settle_s)
        finals[workload.name]["time"] = history.now()
        if settled:
            finals[workload.name]["settled"] = settled
    return finals, converge_s


def _horizon(nemeses: list[str], topology: str) -> float:
    """The nodes' tombstone horizon: longer than any fault can keep a node out of contact."""
    if "clock" in nemeses:
        return CLOCK_NEMESIS_TOMBSTONE_HORIZON_S
    if topology == "regions":
        return BACKBONE_TOMBSTONE_HORIZON_S
    return TOMBSTONE_HORIZON_S


def summarize(
    options: RunOptions,
    workloads: list[Workload],
    ops: list[Op],
    finals: dict[str, Any],
    converge_s: dict[str, float | None],
    faults: list[dict[str, Any]],
    heal_samples: list[dict[str, Any]],
    schedule: list[Fault],
) -> dict[str, Any]:
    """Check every workload and gather the results document."""
    checkers: dict[str, Any] = {}
    for workload in workloads:
        mine = [op for op in ops if op.get("workload") == workload.name]
        result = workload.check(mine, finals.get(workload.name, {"nodes": {}}))
        result["ops"] = _outcome_counts(mine)
        result["latency_s"] = _latencies(mine)
        result["converged_after_heal_s"] = converge_s.get(workload.name)
        if converge_s.get(workload.name) is None:
            result["valid"] = False
            result["not_converged"] = True
        checkers[workload.name] = result
    measured = [s["seconds"] for s in heal_samples if s["seconds"] is not None]
    return {
        "command": options.command,
        "seed": options.seed,
        "nodes": options.nodes,
        "time_limit": options.time_limit,
        "workloads": options.workloads,
        "nemeses": options.nemeses,
        "broken_merge": options.broken_merge,
        "valid": all(c["valid"] is True for c in checkers.values()),
        "checkers": checkers,
        "faults": faults,
        "planned_faults": [f.as_json() for f in schedule],
        "convergence_after_heal": {
            "samples": heal_samples,
            "seconds": quantiles(measured),
            "not_converged_before_next_fault": len(heal_samples) - len(measured),
        },
    }


def _outcome_counts(ops: list[Op]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for invocation, completion in pairs(ops):
        kind = f"{invocation['f']}_{'pending' if completion is None else completion['type']}"
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _latencies(ops: list[Op]) -> dict[str, Any]:
    by_f: dict[str, list[float]] = {}
    for invocation, completion in pairs(ops):
        if completion is not None and completion["type"] == "ok":
            by_f.setdefault(invocation["f"], []).append(completion["time"] - invocation["time"])
    return {f: quantiles(values) for f, values in sorted(by_f.items())}


def _drop_schema(dsn: str, schema: str) -> None:
    """Remove the run's upstream schema (the nodes are gone by now)."""
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    try:
        asyncio.run(drop())
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("could not drop schema %s: %s", schema, exc)


def command_line() -> str:
    """This process's command line, to print in reports."""
    return "python -m jepsen_like " + shlex.join(sys.argv[1:])
