"""Watch benchmark: many watchers on one node, event delay, memory per watcher, PUT cost.

One node with its defaults (``synchronous=full``, ``watch_heartbeat`` 15 s;
watcher limits raised to fit). A child process (:mod:`bench.watch_reader`:
raw asyncio streams, one event loop) opens ``--watchers`` watch streams, each
on a prefix of its own (``p<i>:``), plus ``--whole`` on the whole namespace,
and notes when each event arrives; this process writes and notes
acknowledgements (one monotonic clock for both: ``perf_counter`` is
``CLOCK_MONOTONIC``). Measured, in one run:

* **Event delay**: writes paced at ``--rate`` per second (open loop) spread
  over the prefixes; for every event a watcher receives, its arrival minus the
  moment the write was acknowledged (p50, p99; target p99 <= 50 ms).
* **Memory per watcher**: the node's RSS (with its fan-out process's) with the
  watchers attached and live minus before they opened, divided by their number
  (target <= 64 KiB).
* **PUT throughput**: closed-loop PUTs (``--connections`` at once) for
  ``--duration`` seconds without watchers, then the same with them attached
  (every stream read to the end, by a thread polling the sockets every 5 ms),
  ``--rounds`` times alternating; the median of the rounds' ratios (target
  >= 80 %). Both are driven by this process, so the ratio compares like with
  like; the absolute rates are those of a Python load generator on a shared
  machine. Each run also records the node's and the reader's CPU per PUT and
  the load average: on a shared 2-core machine the CPU ratio is the steadier
  reading. And the events the node wrote while each PUT round ran, per event
  its PUTs made (``events_in_run_per_expected``): the watchers were served
  during the run (the node's fan-out process runs on spare CPU only), not
  after it.

Run: ``python -m bench.watch`` (about 90 s; ``--help``; ``--watchers 50 --whole 2
--duration 3 --rounds 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import ServerProcess, node_process
from bench.watch_reader import Readers

NS = "wbench"
TARGET_DELAY_P99_S = 0.050
TARGET_RSS_PER_WATCHER = 64 * 1024
TARGET_PUT_RATIO = 0.80


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the node's: its watch fan-out process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def node_rss_bytes(pid: int) -> int:
    """The node's resident set size with its children's (the fan-out process holds
    the watchers it serves)."""
    return rss_bytes(pid) + sum(rss_bytes(child) for child in children(pid))


async def put_throughput(
    session: aiohttp.ClientSession, url: str, connections: int, seconds: float, prefixes: int
) -> float:
    """PUTs per second, closed loop, ``connections`` at once, keys over the prefixes."""
    done = 0
    stop = time.perf_counter() + seconds
    rng = random.Random(1)

    async def worker(w: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < stop:
            key = f"p{rng.randrange(max(prefixes, 1))}:t{w}-{n}"
            async with session.put(f"{url}/v1/kv/{NS}/{key}", data=b"x" * 100) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"PUT answered {answer.status}")
                await answer.read()
            done += 1
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    return done / (time.perf_counter() - started)


async def paced_writes(
    session: aiohttp.ClientSession,
    url: str,
    acked: dict[str, float],
    rate: float,
    seconds: float,
    prefixes: int,
) -> int:
    """Writes at ``rate`` per second (open loop), each acknowledged time noted."""
    rng = random.Random(2)
    interval = 1.0 / rate
    start = time.perf_counter()
    sent = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(key: str) -> None:
        async with session.put(f"{url}/v1/kv/{NS}/{key}", data=b"v" * 100) as answer:
            await answer.read()
            acked[key] = time.perf_counter()

    while time.perf_counter() - start < seconds:
        key = f"p{rng.randrange(max(prefixes, 1))}:d{sent}"
        task = asyncio.create_task(one(key))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
    await asyncio.gather(*pending)
    await asyncio.sleep(1.0)  # the last events arrive
    return sent


def _watch_process(
    url: str,
    filters: list[str],
    measure: bool,
    live: Any,
    record: Any,
    recorded: Any,
    stop: Any,
    out: Any,
) -> None:
    """The watchers' own process (own event loop, own core share): arrivals back on ``out``."""

    async def main() -> None:
        readers = Readers(url, f"/v1/kv/{NS}/_watch", filters)
        await readers.open()
        if not measure:
            readers.drain()
        live.set()
        loop = asyncio.get_running_loop()
        if measure:
            await loop.run_in_executor(None, record.wait)
            readers.recording = True
            await loop.run_in_executor(None, recorded.wait)
            readers.recording = False
            readers.drain()  # attached during the PUT measurement, reading and dropping
            out.put(readers.arrivals)
        await loop.run_in_executor(None, stop.wait)
        readers.close()

    asyncio.run(main())


class _WatchChild:
    """The watchers' process of one round: opened live, recording on demand, then closed."""

    def __init__(self, url: str, prefixes: int, whole: int, measure: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.live, self.record, self.recorded, self.stop = (context.Event() for _ in range(4))
        self.out = context.Queue()
        filters = [f"p{i}:" for i in range(prefixes)] + [""] * whole
        self.process = context.Process(
            target=_watch_process,
            args=(
                url, filters, measure, self.live, self.record, self.recorded, self.stop,
                self.out,
            ),
            daemon=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def open(self) -> None:
        self.process.start()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.live.wait, 120):
            raise RuntimeError("the watchers did not become live")

    async def arrivals(self) -> list[tuple[str, float]]:
        self.recorded.set()
        loop = asyncio.get_running_loop()
        found: list[tuple[str, float]] = await loop.run_in_executor(None, self.out.get, True, 120)
        return found

    async def close(self, url: str, session: aiohttp.ClientSession) -> None:
        self.stop.set()
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 30)
        # The node counts a closed stream out at its heartbeat round (a quarter of the
        # interval): the next round starts once every stream is.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with session.get(f"{url}/v1/cluster/status") as answer:
                if (await answer.json())["node"]["watch"]["watchers_open"] == 0:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError("the node still counts watchers of the last round")


async def events_sent(session: aiohttp.ClientSession, url: str) -> int:
    """The node's count of watch events written so far."""
    async with session.get(f"{url}/v1/cluster/status") as answer:
        count: int = (await answer.json())["node"]["watch"]["events_sent"]
        return count


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_puts(
    session: aiohttp.ClientSession, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, float]:
    """A closed-loop PUT run: its rate, and each process's CPU per PUT (µs) while it ran."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sent_before = await events_sent(session, args.url)
    rate = await put_throughput(session, args.url, args.connections, args.duration, args.watchers)
    puts = rate * args.duration
    run = {"put_per_s": rate}
    # Events written meanwhile, per event the PUTs made (each: its prefix's watcher and
    # every whole-namespace one): the watchers were served during the run, not after it.
    sent = await events_sent(session, args.url) - sent_before
    run["events_in_run"] = sent / (puts * (1 + args.whole))
    for name, pid in pids.items():
        run[f"{name}_cpu_us_per_put"] = (cpu_seconds(pid) - before[name]) / puts * 1e6
    return run


async def measure(args: argparse.Namespace, node: ServerProcess) -> dict[str, Any]:
    url = args.url = node.url
    total = args.watchers + args.whole
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    without: list[dict[str, float]] = []
    with_watchers: list[dict[str, float]] = []
    loads = [os.getloadavg()[0]]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await put_throughput(session, url, args.connections, 1.0, args.watchers)  # warm-up
        rss_before = rss_with = 0
        acked: dict[str, float] = {}
        arrivals: list[tuple[str, float]] = []
        sent = 0
        status: dict[str, Any] = {}
        for round_ in range(args.rounds):
            without.append(await timed_puts(session, args, {"node": node.pid}))
            child = _WatchChild(url, args.watchers, args.whole, measure=round_ == 0)
            if round_ == 0:
                rss_before = node_rss_bytes(node.pid)
            await child.open()
            if round_ == 0:
                await asyncio.sleep(1.0)
                rss_with = node_rss_bytes(node.pid)
                child.record.set()
                sent = await paced_writes(
                    session, url, acked, args.rate, args.duration, args.watchers
                )
                arrivals = await child.arrivals()
            with_watchers.append(
                await timed_puts(session, args, {"node": node.pid, "reader": child.pid})
            )
            async with session.get(f"{url}/v1/cluster/status") as answer:
                status = (await answer.json())["node"]["watch"]
            await child.close(url, session)
            loads.append(os.getloadavg()[0])
    # 0 when an event came before the writer saw its acknowledgement.
    delays = [max(0.0, at - acked[key]) for key, at in arrivals if key in acked]
    expected = sent * (1 + args.whole)  # each write: its prefix's watcher and every whole one
    ratios = [
        w["put_per_s"] / wo["put_per_s"] for w, wo in zip(with_watchers, without, strict=True)
    ]
    cpu_ratios = [
        wo["node_cpu_us_per_put"] / w["node_cpu_us_per_put"]
        for w, wo in zip(with_watchers, without, strict=True)
    ]

    def column(runs: list[dict[str, float]], name: str) -> list[float]:
        return [round(run[name], 1) for run in runs]

    return {
        "watchers": args.watchers,
        "whole_namespace_watchers": args.whole,
        "rate_per_s": args.rate,
        "writes_paced": sent,
        "events_expected": expected,
        "events_measured": len(delays),
        "delay_p50_ms": round(quantile(delays, 0.50) * 1000, 2),
        "delay_p99_ms": round(quantile(delays, 0.99) * 1000, 2),
        "rss_before_bytes": rss_before,
        "rss_with_watchers_bytes": rss_with,
        "rss_per_watcher_bytes": round((rss_with - rss_before) / total),
        "put_per_s_without": column(without, "put_per_s"),
        "put_per_s_with": column(with_watchers, "put_per_s"),
        "put_ratios": [round(r, 3) for r in ratios],
        "put_ratio": round(statistics.median(ratios), 3),
        "node_cpu_us_per_put_without": column(without, "node_cpu_us_per_put"),
        "node_cpu_us_per_put_with": column(with_watchers, "node_cpu_us_per_put"),
        "reader_cpu_us_per_put": column(with_watchers, "reader_cpu_us_per_put"),
        "events_in_run_per_expected": [round(w["events_in_run"], 3) for w in with_watchers],
        "put_ratio_by_node_cpu": round(statistics.median(cpu_ratios), 3),
        "load_average_1min": [round(x, 2) for x in loads],
        "node_watch_status_last_round": status,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000, help="one prefix each")
    parser.add_argument("--whole", type=int, default=10, help="watchers of the whole namespace")
    parser.add_argument("--rate", type=float, default=200.0, help="paced writes per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop PUT clients")
    parser.add_argument(
        "--rounds", type=int, default=3, help="PUT rounds, without and with watchers, alternating"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=15.0,
        help="the node's watch_heartbeat (its default; 1 makes every quiet stream cost a write "
        "per second)",
    )
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgekv-bench-watch-") as work:
        node = node_process(Path(work) / "data", Path(work) / "node.log")
        limit = str(args.watchers + args.whole + 10)
        node.command += ["--max-watchers", limit, "--max-watchers-per-token", limit]
        node.command += ["--watch-heartbeat", str(args.heartbeat)]
        node.start()
        try:
            result = asyncio.run(measure(args, node))
        finally:
            node.stop()
    result["heartbeat_s"] = args.heartbeat
    result["targets"] = {
        "delay_p99_ms <= 50": result["delay_p99_ms"] <= TARGET_DELAY_P99_S * 1000,
        "rss_per_watcher <= 64 KiB": result["rss_per_watcher_bytes"] <= TARGET_RSS_PER_WATCHER,
        "put_ratio >= 0.80": result["put_ratio"] >= TARGET_PUT_RATIO,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
