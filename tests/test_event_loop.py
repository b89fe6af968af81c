"""The node runs on uvloop where it is installed, on asyncio's loop when told or without it.

A stand-in ``uvloop`` module on the node's path plays the installed package
(and one that fails to import plays its absence), so these hold whether or
not the real uvloop is installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgekv_client import Client
from testkit.processes import NodeProcess

STAND_IN = """
import asyncio

def new_event_loop():
    print("stand-in uvloop made the loop", flush=True)
    return asyncio.new_event_loop()
"""


def _path_with(directory: Path, source: str) -> dict[str, str]:
    (directory / "uvloop.py").write_text(source)
    return {"PYTHONPATH": os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])}


def test_node_takes_uvloop_when_installed_unless_told_not_to(tmp_path: Path) -> None:
    env = _path_with(tmp_path, STAND_IN)
    for args, expected in (([], "uvloop"), (["--event-loop", "asyncio"], "asyncio")):
        node = NodeProcess(tmp_path / "data", args=args, env=env).start()
        try:
            with Client(node.url) as client:
                client.put("ns", "k", b"v")
                assert client.get("ns", "k") == b"v"
        finally:
            node.stop()
        output = "".join(node.output)
        assert f"event loop: {expected}" in output
        assert ("stand-in uvloop made the loop" in output) == (expected == "uvloop")


def test_serve_refuses_uvloop_when_it_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, **_path_with(tmp_path, "raise ImportError('not here')\n")}
    command = [sys.executable, "-m", "edgekv", "serve", "--data-dir", str(tmp_path / "data")]
    result = subprocess.run([*command, "--event-loop", "uvloop"], capture_output=True, env=env)
    assert result.returncode == 2
    assert b'pip install "edgekv[fast]"' in result.stderr
    assert b"Traceback" not in result.stderr
