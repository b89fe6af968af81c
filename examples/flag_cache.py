"""A per-PoP in-memory cache of feature flags, kept fresh by a watch.

Request handlers read flags from a dict (nanoseconds, no I/O); a background
thread follows ``client.watch("flags", snapshot=True)``: the snapshot fills
the cache, each change updates it, a ``relist`` empties it (the snapshot of
the restarted watch refills it). If this PoP goes away the watch moves on to
``--other`` with its token, missing nothing. Each flag keeps the version it
was last set from, and a change older than that is ignored (the client drops
those already; a cache of its own keeps the rule anyway).

Run against two PoPs (``edgekv demo`` starts them)::

    python examples/flag_cache.py --url http://127.0.0.1:8787 --other http://127.0.0.1:8788
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from edgekv_client import Client, WatchEvent

NAMESPACE = "flags"


class FlagCache:
    """Flags by name, with the version each was set from; thread-safe reads."""

    def __init__(self) -> None:
        self._flags: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()
        self.live = threading.Event()
        """Set once the snapshot is in: reads are then as fresh as the watch."""

    def get(self, name: str) -> Any:
        """The flag's value (decoded JSON), or None."""
        with self._lock:
            found = self._flags.get(name)
        return found[1] if found else None

    def apply(self, event: WatchEvent) -> None:
        """Take one watch event into the cache."""
        with self._lock:
            if event.type == "relist":
                self._flags.clear()
                self.live.clear()
            elif event.type == "ready":
                self.live.set()
            elif event.type == "change":
                current = self._flags.get(event.key)
                if current is not None and current[0] >= event.version:
                    return  # an older state than the one held
                if event.op == "put" and event.value is not None:
                    self._flags[event.key] = (event.version, json.loads(event.value))
                else:
                    self._flags.pop(event.key, None)


def follow(client: Client, cache: FlagCache, failover: list[str], stop: threading.Event) -> None:
    """Keep ``cache`` fresh until ``stop`` is set (the watch reconnects by itself)."""
    for event in client.watch(NAMESPACE, snapshot=True, failover=failover, read_timeout=30):
        cache.apply(event)
        if stop.is_set():
            return


def main() -> None:
    """Fill the cache, flip a flag, and see the cache follow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--other", action="append", default=[], help="another PoP (failover)")
    args = parser.parse_args()
    with Client(args.url) as kv:
        kv.put_json(NAMESPACE, "dark-mode", {"on": False})
        cache, stop = FlagCache(), threading.Event()
        watcher = threading.Thread(target=follow, args=(kv, cache, args.other, stop), daemon=True)
        watcher.start()
        cache.live.wait(10)
        print("before:", cache.get("dark-mode"))
        kv.put_json(NAMESPACE, "dark-mode", {"on": True})
        deadline = time.monotonic() + 10
        while cache.get("dark-mode") != {"on": True} and time.monotonic() < deadline:
            time.sleep(0.01)
        print("after:", cache.get("dark-mode"))
        stop.set()
        kv.put_json(NAMESPACE, "dark-mode", {"on": True})  # one more event lets the thread end
        watcher.join(5)


if __name__ == "__main__":
    main()
