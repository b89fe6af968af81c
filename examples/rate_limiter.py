"""A rate limiter shared by every PoP: at most LIMIT requests per client id per window.

Each request adds 1 to a counter named after the client and the current
window (``ratelimit/{client}:{window}``, expiring a window after it ends) at
the PoP that serves it, and is let through when the count that PoP then sees
is within the limit. The add never waits for another PoP: a PoP counts its
own requests at once and the other PoPs' as they replicate, and no
concurrent add is ever lost (the counter is a PN-counter, not a
last-writer-wins value).

How far over the limit can a window go? A PoP refuses once the count it sees
passes the limit, and it sees every request admitted anywhere more than one
replication lag ``L`` ago. So once the limit is reached, only the requests
that reach *other* PoPs within ``L`` can still get through: a window admits
at most ``limit + (requests arriving at the other PoPs during L)``, and never
more than ``PoPs x limit`` (a partition longer than the window: each side
counts alone). docs/api.md gives the figure measured with ``--measure``.

``sliding=True`` weighs the previous window's count by how much of it still
overlaps the last ``window`` seconds (the usual sliding-window approximation;
one more read per request).

Run against ``edgekv demo`` (or any node)::

    python examples/rate_limiter.py --url http://127.0.0.1:8787
    python examples/rate_limiter.py --measure --url URL1 --url URL2 --url URL3
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time

from edgekv_client import Client

NAMESPACE = "ratelimit"


class RateLimiter:
    """At most ``limit`` requests per client id per ``window`` seconds, at every PoP."""

    def __init__(self, kv: Client, limit: int, window: int = 60, sliding: bool = False) -> None:
        """Count through ``kv`` (the PoP's node)."""
        self.kv, self.limit, self.window, self.sliding = kv, limit, window, sliding

    def allow(self, client_id: str, now: float | None = None) -> tuple[bool, int]:
        """Count one request of ``client_id``; whether it may pass, and the count seen."""
        at = time.time() if now is None else now
        index = int(at // self.window)
        current = self.kv.counter(NAMESPACE, f"{client_id}:{index}")
        # Kept one more window (the sliding estimate reads it), then collected.
        count = current.add(1, ttl=2 * self.window)
        if count is None:  # the node answers the value only to a token that may read
            raise PermissionError(f"the token must read and write namespace {NAMESPACE!r}")
        if self.sliding:
            previous = self.kv.counter(NAMESPACE, f"{client_id}:{index - 1}").value()
            overlap = 1 - (at - index * self.window) / self.window
            count += math.floor(previous * overlap)
        return count <= self.limit, count


def measure(urls: list[str], token: str | None, limit: int, rate: float) -> dict[str, object]:
    """Send ``rate`` requests/s of one client id to each PoP until all refuse; count them.

    Returns how many were let through in one window against the limit, and
    the replication lag seen (how long after the last admitted request every
    PoP counted it).
    """
    window = 60
    if time.time() % window > window - 15:  # not across a window's end
        time.sleep(window - time.time() % window + 0.1)
    client_id = f"measure-{time.time_ns()}"
    key = f"{client_id}:{int(time.time() // window)}"
    admitted = [0] * len(urls)
    sent = [0] * len(urls)

    def pop(i: int) -> None:
        with Client(urls[i], token=token) as kv:
            limiter = RateLimiter(kv, limit, window)
            refusals = 0
            while refusals < 3 * rate:  # until this PoP has refused for about 3 s
                started = time.monotonic()
                allowed, _ = limiter.allow(client_id)
                sent[i] += 1
                admitted[i] += allowed
                refusals = 0 if allowed else refusals + 1
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))

    threads = [threading.Thread(target=pop, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every request counted, at every PoP, once replication has caught up.
    finals: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finals = []
        for url in urls:
            with Client(url, token=token) as kv:
                finals.append(kv.counter(NAMESPACE, key).value())
        if finals == [sum(sent)] * len(urls):
            break
        time.sleep(0.1)
    return {
        "sent": sum(sent),
        "final_count_per_pop": finals,
        "pops": len(urls),
        "limit_per_minute": limit,
        "rate_per_pop": rate,
        "admitted": sum(admitted),
        "admitted_per_pop": admitted,
        "overshoot": sum(admitted) - limit,
        "bound_partitioned": len(urls) * limit,
    }


def main() -> None:
    """Let a burst through the limiter, or measure the overshoot across PoPs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", default=[])
    parser.add_argument("--token", default=None)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per PoP")
    parser.add_argument("--measure", action="store_true")
    args = parser.parse_args()
    urls = args.url or ["http://127.0.0.1:8787"]
    if args.measure:
        print(json.dumps(measure(urls, args.token, args.limit, args.rate)))
        return
    with Client(urls[0], token=args.token) as kv:
        limiter = RateLimiter(kv, limit=5, window=60, sliding=True)
        client_id = f"demo-{time.time_ns()}"
        for n in range(7):
            allowed, count = limiter.allow(client_id)
            print(f"request {n + 1}: {'allowed' if allowed else 'refused'} (count {count})")


if __name__ == "__main__":
    main()
