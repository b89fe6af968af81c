"""Driving load from a separate process: wrk by default, a Python client as fallback.

The load generator must never be the bottleneck, or every ratio the benchmark
reports would drift towards 1. wrk (C, epoll, one thread) needs a third of a
core or less to saturate a single-threaded aiohttp process on the reference
machine, and a second wrk thread adds nothing; the Python generator
(:mod:`bench.pyload`) needs about twice wrk's CPU per request, so on a 2-core
machine it competes with the server. Both report the same fields, and the CPU
time the generator used is recorded next to every result so a reader can check
the claim (``docs/performance.md`` has the comparison).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["get", "put"]

WRK_INSTALL_COMMAND = "sudo apt-get install -y wrk"
WRK_SCRIPT = Path(__file__).with_name("wrk_script.lua")
RESULT_MARKER = "BENCH-RESULT "


class LoadgenError(RuntimeError):
    """The load generator failed or printed no result."""


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """What load to apply: how long, how many connections, over which keys."""

    duration: float
    connections: int
    keys: int
    value_size: int
    namespace: str
    seed: int
    threads: int = 1


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run of the load generator against one server."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_2xx: int
    status_4xx: int
    status_5xx: int
    status_other: int
    socket_errors: int
    loadgen_cpu_s: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        """Answers that were not 2xx."""
        return self.status_4xx + self.status_5xx + self.status_other

    def as_dict(self) -> dict[str, float | int]:
        """The result with its derived figures, for the JSON report."""
        return {**asdict(self), "rps": self.rps, "non_2xx": self.non_2xx}


def wrk_path() -> str | None:
    """Return the wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """Return wrk's version line (wrk prints it with its usage text)."""
    path = wrk_path()
    if path is None:
        return "absent"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def run_load(kind: str, url: str, mode: Mode, settings: LoadSettings) -> LoadResult:
    """Apply load with ``kind`` ("wrk" or "python") and return what it measured."""
    if kind == "wrk":
        path = wrk_path()
        if path is None:
            raise LoadgenError(f"wrk is not installed; install it with: {WRK_INSTALL_COMMAND}")
        command = [
            path,
            f"-t{settings.threads}",
            f"-c{settings.connections}",
            f"-d{max(1, round(settings.duration))}s",
            "--timeout", "10s",
            "-s", str(WRK_SCRIPT),
            url,
            "--",
            mode,
            settings.namespace,
            str(settings.keys),
            str(settings.value_size),
            str(settings.seed),
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "bench.pyload",
            "--url", url,
            "--mode", mode,
            "--duration", str(settings.duration),
            "--connections", str(settings.connections),
            "--keys", str(settings.keys),
            "--value-size", str(settings.value_size),
            "--namespace", settings.namespace,
            "--seed", str(settings.seed),
        ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=settings.duration + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return _parse(json.loads(line[len(RESULT_MARKER) :]), cpu)
    raise LoadgenError(
        f"{kind} exited {done.returncode} without a result:\n{done.stdout}\n{done.stderr}"
    )


def _parse(raw: dict[str, float], cpu: float) -> LoadResult:
    return LoadResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        status_2xx=int(raw["status_2xx"]),
        status_4xx=int(raw["status_4xx"]),
        status_5xx=int(raw["status_5xx"]),
        status_other=int(raw["status_other"]),
        socket_errors=int(
            raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
        ),
        loadgen_cpu_s=cpu,
    )
