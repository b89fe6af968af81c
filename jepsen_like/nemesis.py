"""Nemeses: faults planned from the seed, then injected into the cluster and healed.

A schedule is a list of :class:`Fault` (start, end, kind, parameters) made
by :func:`plan` from a seeded random generator alone, so a seed names the
same faults at the same times. Faults do not overlap: each is healed before
the next begins, with a quiet gap between them in which the harness measures
how long the cluster takes to converge.

Kinds:

- ``partition``: cut peer links (modes ``isolate`` one node, ``halves``,
  majorities ``ring``, ``bridge``, ``one-way``);
- ``kill``: SIGKILL nodes, restart them when the fault ends;
- ``pause``: SIGSTOP nodes, SIGCONT when it ends;
- ``clock``: ``bump`` nodes' clocks by up to ±5 minutes, or ``strobe`` a
  clock between its true time and an offset every few tens of milliseconds;
- ``upstream``: PostgreSQL unreachable from some or all nodes;
- ``region`` (``--topology regions``): one region cut from the backbone (its
  nodes' links to the NATS server), healed when the fault ends;
- ``backbone`` (``--topology regions``): the NATS server stopped, then started
  again on its port and JetStream store.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from jepsen_like.db import Db

KINDS = ("partition", "kill", "pause", "clock", "upstream", "region", "backbone")
REGION_KINDS = ("region", "backbone")
"""Kinds that need ``--topology regions`` (a backbone between regions)."""
PARTITION_MODES = ("isolate", "halves", "ring", "bridge", "one-way")
MAX_CLOCK_BUMP_MS = 5 * 60 * 1000
# Nodes accept stamps this far ahead while clocks are skewed: two opposite
# bumps apart, plus slack; otherwise changes wait (by design) until the
# clocks catch up, for longer than a run lasts.
CLOCK_NEMESIS_MAX_OFFSET_S = 2 * MAX_CLOCK_BUMP_MS / 1000 + 30
# Longer than any fault (and a restart): a member silent for longer than the
# tombstone horizon no longer holds collection back and must then re-sync in
# full, so a shorter horizon would split the cluster for good.
TOMBSTONE_HORIZON_S = 15.0
# A node whose clock jumps forward by more than the horizon sees every peer as
# silent for that long (the horizon is measured on its own clock), so with the
# clock nemesis the horizon has to exceed the largest bump.
CLOCK_NEMESIS_TOMBSTONE_HORIZON_S = MAX_CLOCK_BUMP_MS / 1000 + 30
# With a backbone, a node is out of contact with it for the fault plus the
# server's restart, JetStream's recovery of its streams and the node's
# reconnect backoff (up to 5 s): 16 s was seen after an 8 s stop on a loaded
# machine. Past the horizon the node must re-sync in full, by design.
BACKBONE_TOMBSTONE_HORIZON_S = 45.0


@dataclass
class Fault:
    """One planned fault: what, where, and from ``start`` to ``end`` (run seconds)."""

    start: float
    end: float
    kind: str
    mode: str = ""
    nodes: list[int] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)
    offsets_ms: list[int] = field(default_factory=list)
    period_ms: int = 0

    def describe(self) -> str:
        """A short label for reports."""
        where = ",".join(f"n{i}" for i in self.nodes)
        return " ".join(part for part in (self.kind, self.mode, where) if part)

    def as_json(self) -> dict[str, Any]:
        """The fault as plain JSON."""
        data = asdict(self)
        data["label"] = self.describe()
        return data


def parse_nemeses(text: str) -> list[str]:
    """The nemesis kinds named by ``--nemesis`` (comma-separated, ``all``, or ``none``)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return []
    if "all" in names:
        return list(KINDS)
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return names


def plan(
    rng: random.Random,
    kinds: list[str],
    nodes: int,
    time_limit: float,
    quiet: tuple[float, float] = (3.0, 6.0),
    active: tuple[float, float] = (3.0, 8.0),
    regions: int = 1,
) -> list[Fault]:
    """The faults of a run: alternate quiet gaps and faults until ``time_limit``.

    ``regions``: how many regions the nodes are in (the ``region`` kind cuts one).
    """
    faults: list[Fault] = []
    if not kinds:
        return faults
    t = rng.uniform(*quiet)
    # Kinds are dealt in shuffled rounds so that every kind occurs in a run.
    deck: list[str] = []
    while True:
        length = rng.uniform(*active)
        if t + length > time_limit - 1:
            return faults
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        fault = _fault(rng, deck.pop(), nodes, regions)
        fault.start, fault.end = round(t, 3), round(t + length, 3)
        faults.append(fault)
        t += length + rng.uniform(*quiet)


def _fault(rng: random.Random, kind: str, n: int, regions: int = 1) -> Fault:
    everyone = list(range(n))
    if kind == "region":
        return Fault(0, 0, kind, f"r{rng.randrange(regions):02d}")
    if kind == "backbone":
        return Fault(0, 0, kind, "stop")
    if kind == "partition":
        mode = rng.choice(PARTITION_MODES)
        cut = partition_links(rng, mode, n)
        return Fault(0, 0, kind, mode, links=sorted(cut))
    if kind in ("kill", "pause"):
        return Fault(0, 0, kind, nodes=sorted(rng.sample(everyone, rng.randint(1, max(1, n // 2)))))
    if kind == "clock":
        mode = rng.choice(("bump", "strobe"))
        chosen = sorted(rng.sample(everyone, rng.randint(1, max(1, n // 2))))
        offsets = [rng.randint(-MAX_CLOCK_BUMP_MS, MAX_CLOCK_BUMP_MS) for _ in chosen]
        period = rng.randint(20, 200) if mode == "strobe" else 0
        return Fault(0, 0, kind, mode, nodes=chosen, offsets_ms=offsets, period_ms=period)
    if kind == "upstream":
        chosen = everyone if rng.random() < 0.5 else sorted(rng.sample(everyone, 1))
        return Fault(0, 0, kind, "all" if chosen == everyone else "one", nodes=chosen)
    raise ValueError(kind)


def partition_links(rng: random.Random, mode: str, n: int) -> set[tuple[int, int]]:
    """Pull links ``(puller, server)`` to cut for one partition mode.

    Data flows from server to puller, so cutting ``(i, j)`` means ``i``
    no longer hears from ``j``.
    """
    order = list(range(n))
    rng.shuffle(order)
    if mode == "isolate":
        k = order[0]
        return {(i, j) for i in range(n) for j in range(n) if i != j and k in (i, j)}
    if mode == "halves":
        a = set(order[: n // 2])
        return {(i, j) for i in range(n) for j in range(n) if (i in a) != (j in a)}
    if mode == "ring":
        # Each node hears from a majority (itself and its nearest neighbours),
        # but no two adjacent nodes see the same majority.
        reach = max(1, (n // 2 + 1) // 2)
        position = {node: p for p, node in enumerate(order)}

        def distance(i: int, j: int) -> int:
            d = abs(position[i] - position[j])
            return min(d, n - d)

        return {(i, j) for i in range(n) for j in range(n) if i != j and distance(i, j) > reach}
    if mode == "bridge":
        half = (n - 1) // 2
        a, b = set(order[:half]), set(order[half + 1 :])
        return {
            (i, j) for i in range(n) for j in range(n) if (i in a and j in b) or (i in b and j in a)
        }
    if mode == "one-way":
        a = set(order[: n // 2])
        # The nodes outside ``a`` stop hearing from ``a``; ``a`` still hears from them.
        return {(i, j) for i in range(n) for j in range(n) if i not in a and j in a}
    raise ValueError(mode)


class Injector:
    """Applies faults to the cluster and undoes them."""

    def __init__(self, db: Db) -> None:
        """Inject into ``db``."""
        self.db = db
        self._strobe_stop = threading.Event()
        self._strobe: threading.Thread | None = None

    def start(self, fault: Fault) -> None:
        """Begin ``fault``."""
        db = self.db
        if fault.kind == "partition":
            db.cut(fault.links)
        elif fault.kind == "kill":
            for i in fault.nodes:
                db.kill(i)
        elif fault.kind == "pause":
            for i in fault.nodes:
                db.pause(i)
        elif fault.kind == "clock":
            if fault.mode == "bump":
                for i, offset in zip(fault.nodes, fault.offsets_ms, strict=True):
                    db.set_clock_offset(i, offset)
            else:
                self._strobe_stop.clear()
                self._strobe = threading.Thread(target=self._strobe_clocks, args=(fault,))
                self._strobe.start()
        elif fault.kind == "upstream":
            db.cut_upstream(fault.nodes)
        elif fault.kind == "region":
            db.cut_region(fault.mode)
        elif fault.kind == "backbone":
            db.stop_backbone()

    def _strobe_clocks(self, fault: Fault) -> None:
        flip = False
        while not self._strobe_stop.wait(fault.period_ms / 1000):
            flip = not flip
            for i, offset in zip(fault.nodes, fault.offsets_ms, strict=True):
                self.db.set_clock_offset(i, offset if flip else 0)

    def stop(self, fault: Fault) -> None:
        """End ``fault``: heal what it broke."""
        db = self.db
        if fault.kind == "partition":
            db.heal_network()
        elif fault.kind == "kill":
            for i in fault.nodes:
                db.restart(i)
        elif fault.kind == "pause":
            for i in fault.nodes:
                db.resume(i)
        elif fault.kind == "clock":
            self._strobe_stop.set()
            if self._strobe is not None:
                self._strobe.join()
                self._strobe = None
            for i in fault.nodes:
                db.set_clock_offset(i, 0)
        elif fault.kind == "upstream":
            db.heal_upstream()
        elif fault.kind in REGION_KINDS:
            db.heal_backbone()


def run_schedule(
    faults: list[Fault],
    injector: Injector,
    now: Callable[[], float],
    stop: threading.Event,
    on_heal: Callable[[Fault, float], None],
) -> list[dict[str, Any]]:
    """Inject ``faults`` at their times; return what actually happened, with run times.

    ``on_heal(fault, next_start)`` runs after each heal, until the next fault
    is due (the harness measures convergence there).
    """
    done: list[dict[str, Any]] = []
    for index, fault in enumerate(faults):
        if stop.wait(max(0.0, fault.start - now())):
            break
        began = now()
        injector.start(fault)
        stopped = stop.wait(max(0.0, fault.end - now()))
        injector.stop(fault)
        healed = now()
        done.append({**fault.as_json(), "began": round(began, 3), "healed": round(healed, 3)})
        if stopped:
            break
        next_start = faults[index + 1].start if index + 1 < len(faults) else float("inf")
        on_heal(fault, next_start)
    return done
