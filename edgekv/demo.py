"""``edgekv demo``: three replicating PoPs in one process, for a first look."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time

from rich.console import Console

from edgekv.config import Config
from edgekv.http.cluster_routes import cluster_status
from edgekv.server import RunningNode, running_node
from edgekv.status_view import status_renderable

NAMES = ("pop-a", "pop-b", "pop-c")


async def _demo(base_port: int, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with tempfile.TemporaryDirectory(prefix="edgekv-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            pops: list[RunningNode] = []
            for index, name in enumerate(NAMES):
                port = base_port + index if base_port else 0
                seeds = (pops[0].url,) if pops else ()
                config = Config(data_dir=f"{tmp}/{name}", port=port, node_name=name, peer=seeds)
                pops.append(await stack.enter_async_context(running_node(config)))
            for pop in pops:
                console.print(f"[bold]{pop.node.config.node_name}[/] {pop.url}")
            await _wait_linked(pops)
            first = pops[0]
            written = time.perf_counter()
            result = await first.node.store.write_value("demo", b"greeting", b"hello, edge")
            console.print(f"\nPUT demo/greeting at {NAMES[0]} (seq {result.seq})")
            for pop in pops[1:]:
                feed = pop.node.replicator.feed
                while pop.node.store.get("demo", b"greeting") is None:
                    await feed.wait_beyond(feed.seq, 1.0)
                elapsed = (time.perf_counter() - written) * 1000
                console.print(f"  arrived at {pop.node.config.node_name} after {elapsed:.1f} ms")
            console.print()
            console.print(status_renderable(cluster_status(first.node, first.node.replicator)))
            console.print(
                f"\nTry: curl {pops[1].url}/v1/kv/demo/greeting    "
                f"(edgekv cluster status --url {first.url})\nCtrl-C stops the demo."
            )
            await stop.wait()
    console.print("demo stopped")


async def _wait_linked(pops: list[RunningNode]) -> None:
    """Wait until every PoP has a live stream from every other."""
    want = len(pops) - 1
    while True:
        links = [
            sum(link.state == "up" for link in pop.node.replicator.membership.links.values())
            for pop in pops
        ]
        if links and all(count >= want for count in links):
            return
        await asyncio.sleep(0.02)


def run_demo(base_port: int) -> None:
    """Run the demo until SIGINT or SIGTERM."""
    asyncio.run(_demo(base_port, Console()))
