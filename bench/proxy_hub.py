"""Many shaped TCP proxies on one event loop, in a process of their own.

``bench.scale`` needs a latency proxy on every peer link (2,256 of them for a
48-PoP full mesh). One thread per proxy in the benchmark's own process would
put their relaying under the same GIL as the probes that time propagation; so
they live here, on one loop, in their own process.

Protocol on stdin/stdout, one JSON document per line:

1. ``{"links": [[delay_ms, jitter_ms], ...]}`` -> ``{"ports": [...]}``: a
   listening proxy per link (ports are known before the nodes start);
2. ``{"targets": [port, ...]}`` -> ``{"ok": true}``: where each forwards;
3. ``{"cut": [index, ...]}`` / ``{"heal": [index, ...]}`` -> ``{"ok": true}``:
   cut links (open connections dropped, new ones refused) or heal them;
4. end of stdin: every proxy closes and the process exits.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading

from testkit.proxy import TcpProxy
from testkit.wan import LinkShape


def main() -> None:
    # A listener per link and two sockets per connection: 48 PoPs in a full mesh
    # need about 7,000 descriptors, beyond a common soft limit of 1,024.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    links = json.loads(sys.stdin.readline())["links"]
    proxies = [
        TcpProxy(shape=LinkShape(delay, jitter), seed=i, loop=loop)
        for i, (delay, jitter) in enumerate(links)
    ]
    print(json.dumps({"ports": [proxy.port for proxy in proxies]}), flush=True)
    targets = json.loads(sys.stdin.readline())["targets"]
    for proxy, target in zip(proxies, targets, strict=True):
        proxy.target = target
    print(json.dumps({"ok": True}), flush=True)
    for line in sys.stdin:  # until the benchmark closes our stdin
        order = json.loads(line)
        for index in order.get("cut", []):
            proxies[index].cut()
        for index in order.get("heal", []):
            proxies[index].heal()
        print(json.dumps({"ok": True}), flush=True)
    for proxy in proxies:
        proxy.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


if __name__ == "__main__":
    main()
