"""The history of a run: every operation as an invoke, then ok, fail or info.

An operation is a plain dict (JSON as it is written to ``history.jsonl``):
``process``, ``type`` (``invoke`` / ``ok`` / ``fail`` / ``info``), ``f`` (what
it does), ``key``, ``value``, ``node`` (the PoP it ran at), ``time`` (seconds
on a monotonic clock since the run began) and, on completions, whatever the
node answered (``version``, ``error``...). ``info`` means the outcome is
unknown: the write may or may not have happened, so checkers never count it
as lost nor as failed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Op = dict[str, Any]

COMPLETIONS = ("ok", "fail", "info")


class History:
    """A thread-safe, append-only history with monotonic timestamps."""

    def __init__(self, started: float | None = None) -> None:
        """Start the clock (``started``: a ``time.monotonic()`` reading)."""
        self.started = time.monotonic() if started is None else started
        self._ops: list[Op] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.started

    def invoke(self, process: int, f: str, **fields: Any) -> Op:
        """Record the start of an operation and return it."""
        return self._append({"process": process, "type": "invoke", "f": f, **fields})

    def complete(self, invocation: Op, kind: str, **fields: Any) -> Op:
        """Record how ``invocation`` ended (``ok``, ``fail`` or ``info``)."""
        assert kind in COMPLETIONS, kind
        base = {k: v for k, v in invocation.items() if k not in ("type", "time", "index")}
        return self._append({**base, "type": kind, **fields})

    def _append(self, op: Op) -> Op:
        with self._lock:
            op["time"] = round(self.now(), 6)
            op["index"] = len(self._ops)
            self._ops.append(op)
        return op

    def ops(self) -> list[Op]:
        """A snapshot of every operation so far."""
        with self._lock:
            return list(self._ops)

    def save(self, path: Path) -> None:
        """Write the history as JSON lines."""
        with path.open("w") as handle:
            for op in self.ops():
                handle.write(json.dumps(op, sort_keys=True) + "\n")


def load(path: Path) -> list[Op]:
    """Read a history written by :meth:`History.save`."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pairs(ops: Iterable[Op]) -> Iterator[tuple[Op, Op | None]]:
    """Each invocation with its completion (None: the run ended first).

    A process runs one operation at a time, so its next completion belongs
    to its pending invocation.
    """
    pending: dict[int, Op] = {}
    order: list[Op] = []
    completion: dict[int, Op] = {}
    for op in ops:
        if op["type"] == "invoke":
            pending[op["process"]] = op
            order.append(op)
        else:
            invocation = pending.pop(op["process"], None)
            if invocation is not None:
                completion[id(invocation)] = op
    for invocation in order:
        yield invocation, completion.get(id(invocation))
