"""A NATS server with JetStream of the test's own: started, stopped and started again.

The machine's NATS (127.0.0.1:4222) is shared by every engineer's tests; a
test that partitions the backbone needs one it may stop. This one keeps its
JetStream store in a directory of the test, on a port free when it started,
and comes back on the same port and store after :meth:`stop`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from testkit.waiting import wait_for

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """``nats-server -js`` on loopback, its store under ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        """Start it and wait until it accepts connections."""
        with (self.directory / "nats.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    NATS_SERVER,
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: _accepting(self.port), 10, "nats-server accepting")
        return self

    def stop(self) -> None:
        """Stop it (the backbone is down until :meth:`start`)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
