"""The two servers under load, each in its own process, and what they cost.

The node is started exactly as an operator would (``python -m edgekv serve``
with default settings: ``synchronous=full``, no tokens, loopback), and the
bare aiohttp baseline the same way (``python -m bench.bare_server``). Both
print a ``serving http://...`` line when ready; the URL is read from it, so
ephemeral ports work. CPU time is read from ``/proc`` around each load run:
a server below ~90% of a core under a closed-loop load is waiting on
something other than its own work.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from bench.workload import NAMESPACE, get_key, value_for

REPO_ROOT = Path(__file__).resolve().parent.parent
_NODE_READY = re.compile(r"serving (http://\S+) node=([0-9a-f]+)")
_BARE_READY = re.compile(r"serving (http://\S+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# The node's default max_bulk_operations (edgekv.config): one request loads 10,000 keys.
BULK_CHUNK = 10_000


class ServerError(RuntimeError):
    """A server did not start, or answered wrongly."""


class ServerProcess:
    """A server child process whose output goes to a log file."""

    def __init__(self, name: str, command: list[str], ready: re.Pattern[str], log: Path) -> None:
        """Describe the server; :meth:`start` runs it."""
        self.name = name
        self.command = command
        self._ready = ready
        self.log = log
        self.url = ""
        self.ready_line = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the process and wait for its ``serving`` line."""
        self._log_file = self.log.open("wb")
        self._proc = subprocess.Popen(
            self.command, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                match = self._ready.search(line)
                if match:
                    self.url, self.ready_line = match.group(1), line.strip()
                    return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.name} did not start:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads) so far."""
        try:
            text = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = text[text.rfind(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop gracefully with SIGTERM (SIGKILL after ``timeout``); return the exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
            try:
                code = self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def logged_errors(self) -> int:
        """Lines of the server's log at level ERROR or above, or tracebacks."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        )


def node_process(data_dir: Path, log: Path, loop: str = "auto") -> ServerProcess:
    """The EdgeKV node, with its defaults, on an ephemeral loopback port.

    ``loop``: its ``event_loop`` setting (auto: uvloop if installed).
    """
    command = [
        sys.executable, "-m", "edgekv", "serve", "--data-dir", str(data_dir), "--port", "0",
        "--event-loop", loop,
    ]  # fmt: skip
    return ServerProcess("node", command, _NODE_READY, log)


def bare_process(keys: int, value_size: int, log: Path, loop: str = "auto") -> ServerProcess:
    """The bare aiohttp baseline serving the same key set, on the same choice of loop."""
    command = [
        sys.executable, "-m", "bench.bare_server", "--port", "0",
        "--keys", str(keys), "--value-size", str(value_size), "--loop", loop,
    ]  # fmt: skip
    return ServerProcess("bare aiohttp", command, _BARE_READY, log)


def _request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def populate_node(url: str, keys: int, value_size: int) -> None:
    """Write the benchmark's keys to the node with bulk requests."""
    for start in range(0, keys, BULK_CHUNK):
        operations = [
            {
                "op": "put",
                "key": get_key(i),
                "value": base64.b64encode(value_for(i, value_size)).decode("ascii"),
            }
            for i in range(start, min(keys, start + BULK_CHUNK))
        ]
        body = json.dumps({"operations": operations}).encode()
        status, answer = _request(url, "POST", f"/v1/kv/{NAMESPACE}/_bulk", body)
        if status != 200:
            raise ServerError(f"populating the node failed: {status} {answer[:200]!r}")


def check_same_bytes(urls: list[str], keys: int, value_size: int) -> None:
    """Check that every server answers a few keys with the expected value bytes."""
    for index in sorted({0, keys // 2, keys - 1}):
        expected = value_for(index, value_size)
        for url in urls:
            status, body = _request(url, "GET", f"/v1/kv/{NAMESPACE}/{get_key(index)}")
            if status != 200 or body != expected:
                raise ServerError(f"{url} answered {status} {body[:60]!r} for key {index}")


def steal_ticks() -> tuple[int, int]:
    """Return (steal, total) CPU ticks of the machine so far, from ``/proc/stat``.

    On a virtual machine the hypervisor may run other guests on "our" cores;
    that time is *steal*. A run with high steal measured a slower machine,
    which is why every run records it.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    # guest and guest_nice (fields 8, 9) are already counted in user and nice.
    return steal, sum(fields[:8])
