"""Measure peak RSS and event-loop stall of large requests against a real node.

Run from the checkout to measure (the node runs the code of the current directory):
    python -m bench.measure_bounds [scenario ...]
Peak RSS is VmHWM (reset through /proc/PID/clear_refs before each scenario);
the stall is the longest a small GET from another client waited meanwhile.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from testkit.processes import NodeProcess

MIB = 1024 * 1024


def hwm(node: NodeProcess) -> int:
    assert node.proc is not None
    text = Path(f"/proc/{node.proc.pid}/status").read_text()
    line = next(x for x in text.splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def reset_hwm(node: NodeProcess) -> None:
    assert node.proc is not None
    Path(f"/proc/{node.proc.pid}/clear_refs").write_text("5")


_PROBE = """
import http.client, sys, time, select
host, port = sys.argv[1], int(sys.argv[2])
worst = 0.0
while not select.select([sys.stdin], [], [], 0.005)[0]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("GET", "/v1/kv/probe/small")
    conn.getresponse().read()
    conn.close()
    worst = max(worst, time.perf_counter() - started)
print(worst)
"""


class Prober:
    """Small GETs in a loop from another process (not slowed by this one's GIL)."""

    def __init__(self, node: NodeProcess) -> None:
        parts = urlsplit(node.url)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(parts.hostname), str(parts.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.worst = 0.0

    def finish(self) -> None:
        out, _ = self.proc.communicate("stop\n")
        self.worst = float(out)


def scenario(node: NodeProcess, name: str, send: Callable[[], list[int]]) -> None:
    time.sleep(0.5)
    reset_hwm(node)
    base = node.rss_bytes()
    prober = Prober(node)
    time.sleep(0.3)
    started = time.perf_counter()
    statuses = send()
    took = time.perf_counter() - started
    prober.finish()
    print(
        f"{name}: statuses={statuses} took={took:.2f}s rss_before={base / MIB:.0f}MiB "
        f"peak={hwm(node) / MIB:.0f}MiB worst_small_get={prober.worst * 1000:.0f}ms",
        flush=True,
    )


def main() -> None:
    wanted = set(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "n").start()
        node.request("PUT", "/v1/kv/probe/small", body=b"x")
        value = bytes(range(256)) * (25 * MIB // 256)
        for i in range(4):
            assert node.request("PUT", f"/v1/kv/m/big{i}", body=value).status == 200

        def get_many_100() -> list[int]:
            names = [f"big{i % 4}" for i in range(100)]
            return [
                node.request("POST", "/v1/kv/m/_get", json_body={"keys": names}, timeout=300).status
            ]

        def get_many_4() -> list[int]:
            names = [f"big{i}" for i in range(4)]
            return [
                node.request("POST", "/v1/kv/m/_get", json_body={"keys": names}, timeout=300).status
            ]

        def get_one() -> list[int]:
            return [node.request("GET", "/v1/kv/m/big0").status]

        doc = json.dumps({f"field{i:07d}": "v" * 90 for i in range(860_000)}).encode()

        def put_doc() -> list[int]:
            return [node.request("PUT", "/v1/docs/c/d", body=doc, timeout=300).status]

        junk = json.dumps({"keys": ["big0"], "junk": "j" * (86 * MIB)}).encode()

        def junk_get_many() -> list[int]:
            return [node.request("POST", "/v1/kv/m/_get", body=junk, timeout=300).status]

        def concurrent_puts() -> list[int]:
            answers: list[int] = []
            threads = [
                threading.Thread(
                    target=lambda i=i: answers.append(
                        node.request("PUT", f"/v1/kv/c/p{i}", body=value, timeout=300).status
                    )
                )
                for i in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return answers

        ops = [
            {"op": "put", "key": f"b{i}", "value": base64.b64encode(b"b" * 7 * MIB).decode()}
            for i in range(10)
        ]
        bulk_body = json.dumps({"operations": ops}).encode()

        def bulk_93() -> list[int]:
            return [node.request("POST", "/v1/kv/b/_bulk", body=bulk_body, timeout=300).status]

        for name, send in [
            ("get_one_25MiB", get_one),
            ("get_many_4x25MiB", get_many_4),
            ("get_many_100_names", get_many_100),
            ("doc_put_86MiB", put_doc),
            ("get_many_86MiB_junk", junk_get_many),
            ("concurrent_4x25MiB_puts", concurrent_puts),
            ("bulk_93MiB", bulk_93),
        ]:
            if not wanted or name in wanted:
                scenario(node, name, send)
        node.kill()


if __name__ == "__main__":
    main()
