"""What the web console costs an idle node: RSS, and GET throughput, with it on and off.

``python -m bench.console_rss`` starts real nodes side by side, alternating
``--console true`` and ``--console false`` in each round (so drift in the
machine hits both), and reports medians:

- idle RSS: a fresh node, idle until its sampler has run twice (what a node
  holds when no one has the console open: the history arrays, the routes);
- RSS after a minute of the console open: the page loaded, then the history,
  status and live-feed routes polled as the page polls them;
- GET throughput: a closed loop of GETs of one key on one keep-alive
  connection, as a ratio on/off (the console adds nothing to that path).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from edgekv.console.sampler import SAMPLE_INTERVAL
from testkit.processes import NodeProcess

MIB = 1024 * 1024


def _connection(node: NodeProcess) -> http.client.HTTPConnection:
    parts = urlsplit(node.url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)


def _gets_per_second(node: NodeProcess, seconds: float) -> float:
    conn = _connection(node)
    done, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.request("GET", "/v1/kv/bench/key")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
        done += 1
    conn.close()
    return done / (time.perf_counter() - started)


def _console_open(node: NodeProcess, seconds: float) -> None:
    """Poll what an open console polls: status every 2 s, feed every 1 s, history every 5 s."""
    for path in ("/ui/", "/ui/console.js", "/ui/views.js", "/ui/charts.js", "/ui/api.js"):
        assert node.request("GET", path).status == 200
    ticks = int(seconds)
    for tick in range(ticks):
        assert node.request("GET", "/v1/admin/changes?limit=50").status == 200
        if tick % 2 == 0:
            assert node.request("GET", "/v1/cluster/status").status == 200
        if tick % 5 == 0:
            assert node.request("GET", "/v1/admin/history").status == 200
        time.sleep(1.0)  # the page's own polling period, not a synchronisation


def measure(work: Path, console: bool, round_no: int, open_seconds: float) -> dict[str, float]:
    node = NodeProcess(
        work / f"{'on' if console else 'off'}{round_no}", ["--console", str(console).lower()]
    )
    node.start()
    try:
        assert node.request("PUT", "/v1/kv/bench/key", body=b"x" * 100).status == 200
        # Idle: past two sampler periods, so a running sampler has filled its first slots.
        time.sleep(2 * SAMPLE_INTERVAL + 0.5)
        idle = node.rss_bytes()
        gets = _gets_per_second(node, 3.0)
        if console:
            _console_open(node, open_seconds)
        opened = node.rss_bytes()
        return {"idle_rss": idle, "gets_per_s": gets, "open_rss": opened}
    finally:
        node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--open-seconds", type=float, default=60.0)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_no in range(args.rounds):
            for console in (round_no % 2 == 0, round_no % 2 != 0):  # alternate which goes first
                results[console].append(
                    measure(Path(scratch), console, round_no, args.open_seconds)
                )

    for console in (True, False):
        per_round = ", ".join(
            f"{r['idle_rss'] / MIB:.2f} MiB {r['gets_per_s']:.0f} GET/s" for r in results[console]
        )
        print(f"console {'on ' if console else 'off'}: {per_round}")

    def median(console: bool, name: str) -> float:
        return statistics.median(r[name] for r in results[console])

    on_idle, off_idle = median(True, "idle_rss"), median(False, "idle_rss")
    print(f"rounds: {args.rounds} (each: a fresh node with the console on, one with it off)")
    print(f"idle RSS, console on:  {on_idle / MIB:.2f} MiB")
    print(f"idle RSS, console off: {off_idle / MIB:.2f} MiB")
    print(f"the console adds:      {(on_idle - off_idle) / MIB:+.2f} MiB idle")
    print(
        f"RSS after {args.open_seconds:.0f} s with the console open: "
        f"{median(True, 'open_rss') / MIB:.2f} MiB"
    )
    ratio = median(True, "gets_per_s") / median(False, "gets_per_s")
    print(
        f"GET/s on one connection, on/off: {median(True, 'gets_per_s'):.0f} / "
        f"{median(False, 'gets_per_s'):.0f} = {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
