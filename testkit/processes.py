"""Real ``edgekv serve`` processes on loopback, for the tests and the fault-injection harness."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testkit.responses import Response

_READY = re.compile(r"serving (https?://\S+) node=([0-9a-f]+)")


@dataclass
class NodeProcess:
    """One ``edgekv serve`` child process."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    node_id: str = ""
    output: list[str] = field(default_factory=list)
    _pump_thread: threading.Thread | None = None
    ssl_context: ssl.SSLContext | None = None
    token: str | None = None
    """A bearer token every request carries (unless it sets its own Authorization)."""

    def start(self, timeout: float = 20.0) -> NodeProcess:
        """Start the node and wait for its start-up line."""
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgekv",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        ready = threading.Event()
        self._pump_thread = threading.Thread(target=self._pump, args=(ready,), daemon=True)
        self._pump_thread.start()
        if not ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("node did not start:\n" + "".join(self.output))
        # Later restarts reuse the port so clients can keep their URL.
        self.port = urlsplit(self.url).port or 0
        return self

    def _pump(self, ready: threading.Event) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = _READY.search(line)
            if match:
                self.url, self.node_id = match.group(1), match.group(2)
                ready.set()
        ready.set()  # the process ended

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the node and wait for it to exit; return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = "".join(self.output[-40:])
            raise AssertionError(f"node did not stop in {timeout} s; its log:\n{tail}") from None
        self._release()
        return code

    def _release(self) -> None:
        """Wait for the output pump to drain, then close the pipe."""
        if self._pump_thread is not None:
            self._pump_thread.join(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL the node (no chance to clean up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._release()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Response:
        """Send one request on a new connection and return the answer."""
        parts = urlsplit(self.url)
        host = parts.hostname or "127.0.0.1"
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl_context or self.ssl_context
            conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        if json_body is not None:
            body = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=all_headers)
            answer = conn.getresponse()
            return Response(answer.status, dict(answer.getheaders()), answer.read())
        finally:
            conn.close()

    def rss_bytes(self) -> int:
        """The process's resident set size."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        return kib * 1024
