"""watch: clients follow the change feed while others write, through every fault.

Writers put (unique values) and delete a small set of keys at their home
PoPs. Watchers, started at random PoPs before the load, follow the namespace
with ``client.watch`` (snapshot first); every few seconds each one leaves its
PoP and resumes at another, chosen at random, with its last token -- during
partitions too, when the new PoP may lag behind the old one -- and a killed
or paused PoP makes it fail over by itself.

Checked, for every watcher, once the cluster has converged:

- final: its view (the newest state it was given per key) is the cluster's
  final state -- every acknowledged write's key reached it at its final
  version, deletes included;
- backwards: no key's version ever went back, and no state came twice, in
  what the watch yielded since its last relist (after one, the snapshot sends
  every key afresh);
- relists are counted (a relist is legal when tombstones were collected past
  a token; the view is rebuilt from the snapshot that follows).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from edgekv_client import Client, WatchEvent
from edgekv_replication.versions import encode_version
from jepsen_like.db import Db
from jepsen_like.history import Op, pairs
from jepsen_like.workloads.base import Process, Workload

NS = "jwatch"
KEYS = tuple(f"k{i}" for i in range(12))
WATCHERS = 4
MOVE_EVERY_S = (2.0, 6.0)
"""Seconds a watcher stays at a PoP before it moves to another with its token."""
TRACED_EVENTS = 6
"""Events kept per key and watcher, reported with a key the watcher ends wrong on."""
TRACED_STREAMS = 200
READ_TIMEOUT_S = 20.0
"""Longer than a node's heartbeat (15 s): a silent stream means the PoP is gone."""


class _Watcher:
    """One watching client in a thread: its view, and what went wrong in what it was given."""

    def __init__(self, index: int, urls: list[str], token: str | None, rng: random.Random) -> None:
        self.index = index
        self._urls = urls
        self._token = token
        self._rng = rng
        self.view: dict[str, tuple[str, str]] = {}
        """key -> (version, op) of the newest state given."""
        self.backwards: list[dict[str, Any]] = []
        self.events = 0
        self.moves = 0
        self.relists = 0
        self.pops: list[int] = []
        self._last: dict[str, str] = {}
        self.traces: dict[str, deque[dict[str, Any]]] = {}
        """key -> its last few events, with the stream they came on (to explain a wrong key)."""
        self.streams: deque[dict[str, Any]] = deque(maxlen=TRACED_STREAMS)
        """The last streams opened: PoP, token, time."""
        self._started = time.monotonic()
        self._versions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"watcher{index}")

    def _run(self) -> None:
        token: str | None = None
        while not self.stop.is_set():
            home = self._rng.randrange(len(self._urls))
            others = [u for i, u in enumerate(self._urls) if i != home]
            self._rng.shuffle(others)
            self.pops.append(home)
            leave_at = time.monotonic() + self._rng.uniform(*MOVE_EVERY_S)
            self.streams.append({"t": self._elapsed(), "pop": home, "after": token})
            client = Client(self._urls[home], token=self._token, timeout=3.0)
            try:
                for event in client.watch(
                    NS,
                    snapshot=True,
                    after=token,
                    failover=others,
                    max_backoff=1.0,
                    read_timeout=READ_TIMEOUT_S,
                    versions=self._versions,
                ):
                    token = event.token or token
                    if event.type == "relist":
                        token = None
                    self._take(event)
                    if self.stop.is_set() or time.monotonic() > leave_at:
                        break
            finally:
                client.close()
            self.moves += 1

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def _take(self, event: WatchEvent) -> None:
        with self._lock:
            if event.type == "relist":
                # A fresh start, as for the client: the snapshot that follows sends
                # every key again, and its versions are checked from there on.
                self.relists += 1
                self.view.clear()
                self._last.clear()
                return
            if event.type != "change":
                return
            self.events += 1
            trace = self.traces.setdefault(event.key, deque(maxlen=TRACED_EVENTS))
            trace.append(
                {
                    "t": self._elapsed(),
                    "version": event.version,
                    "op": event.op,
                    "token": event.token,
                    "stream": len(self.streams) - 1,
                }
            )
            last = self._last.get(event.key)
            if last is not None and event.version <= last:
                self.backwards.append({"key": event.key, "after": last, "got": event.version})
            self._last[event.key] = event.version
            self.view[event.key] = (event.version, event.op)

    def snapshot(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            return dict(self.view)


class WatchWorkload(Workload):
    """Writers at every PoP, watchers moving between PoPs."""

    name = "watch"
    processes = 3

    def __init__(self) -> None:
        self._watchers: list[_Watcher] = []

    def setup(self, db: Db) -> None:
        rng = random.Random(f"watch:{len(db.urls)}")
        self._watchers = [
            _Watcher(i, db.urls, db.token, random.Random(rng.random())) for i in range(WATCHERS)
        ]
        for watcher in self._watchers:
            watcher.thread.start()

    def generate(self, process: Process) -> Op:
        key = process.rng.choice(KEYS)
        if process.rng.random() < 0.2:
            return {"f": "delete", "key": key}
        counter = process.state["next"] = process.state.get("next", 0) + 1
        return {"f": "write", "key": key, "value": f"{process.id}.{counter}"}

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        client = process.client(op["node"])
        if op["f"] == "delete":
            client.delete(NS, op["key"])
            return "ok", {}
        return "ok", {"version": client.put(NS, op["key"], op["value"].encode())["version"]}

    def final_reads(self, db: Db) -> dict[str, Any]:
        nodes = {}
        for i in range(len(db.nodes)):
            rows = db.read_db(
                i, "SELECT key, hlc, node, value IS NULL FROM kv WHERE ns = ? ORDER BY key", (NS,)
            )
            nodes[f"n{i}"] = {
                bytes(key).decode(): [encode_version(hlc, node), "delete" if gone else "put"]
                for key, hlc, node, gone in rows
            }
        return {"nodes": nodes}

    def settle(self, db: Db, timeout: float) -> dict[str, Any]:
        """Wait until every watcher's view is the final state (or 60 s), then stop them."""
        final = self.final_reads(db)
        wanted: dict[str, list[str]] = next(iter(final["nodes"].values()), {})
        deadline = time.monotonic() + max(timeout, 60.0)
        while time.monotonic() < deadline:
            if all(_agrees(w.snapshot(), wanted) for w in self._watchers):
                break
            time.sleep(0.2)
        for watcher in self._watchers:
            watcher.stop.set()
        return {
            "final": wanted,
            "watchers": [
                {
                    "view": {k: list(v) for k, v in watcher.snapshot().items()},
                    "backwards": watcher.backwards[:20],
                    "backwards_count": len(watcher.backwards),
                    "events": watcher.events,
                    "moves": watcher.moves,
                    "relists": watcher.relists,
                    "pops": watcher.pops[:50],
                    "traces": {k: list(v) for k, v in watcher.traces.items()},
                    "streams": list(watcher.streams),
                }
                for watcher in self._watchers
            ],
        }

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        return check_watch(ops, final)


def _agrees(view: dict[str, tuple[str, str]], final: dict[str, list[str]]) -> bool:
    """A watcher's view holds the final state: each live key at its version; a deleted
    key (or one whose tombstone was collected) deleted or never seen."""
    for key in set(view) | set(final):
        got = view.get(key)
        want = final.get(key)
        if want is None or want[1] == "delete":
            if got is not None and got[1] == "put":
                return False
            if got is not None and want is not None and got[0] != want[0]:
                return False
        elif got is None or list(got) != want:
            return False
    return True


def check_watch(ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
    """Every watcher ends at the final state and never went back."""
    settled = final.get("settled") or {}
    wanted = settled.get("final", {})
    watchers = settled.get("watchers", [])
    acknowledged_keys = {
        invocation["key"]
        for invocation, completion in pairs(ops)
        if completion is not None and completion["type"] == "ok"
    }
    wrong: list[dict[str, Any]] = []
    for i, watcher in enumerate(watchers):
        view = {k: tuple(v) for k, v in watcher["view"].items()}
        for key in sorted(set(view) | set(wanted)):
            if not _agrees(
                {key: view[key]} if key in view else {}, {key: wanted[key]} if key in wanted else {}
            ):
                streams = watcher.get("streams", [])
                wrong.append(
                    {
                        "watcher": i,
                        "key": key,
                        "view": view.get(key),
                        "final": wanted.get(key),
                        "seen": watcher.get("traces", {}).get(key, []),
                        "last_streams": streams[-5:],
                    }
                )
    missing_keys = sorted(k for k in acknowledged_keys if k not in wanted)
    backwards = sum(w["backwards_count"] for w in watchers)
    return {
        "valid": bool(watchers) and not wrong and backwards == 0,
        "watchers": len(watchers),
        "events": sum(w["events"] for w in watchers),
        "moves": sum(w["moves"] for w in watchers),
        "relists": sum(w["relists"] for w in watchers),
        "keys_written": len(acknowledged_keys),
        "keys_collected": len(missing_keys),
        "wrong_count": len(wrong),
        "wrong": wrong[:20],
        "backwards_count": backwards,
        "backwards": [b for w in watchers for b in w["backwards"]][:20],
    }
