"""The console's watch reader (``static/sse.js``) in Node.js against a real node.

The console follows a watch with fetch() and the bearer header (EventSource
cannot send one) and parses the SSE lines itself; when the stream ends it opens
it again with ``Last-Event-ID``. Here the same module runs in Node.js 20 (fetch,
streams and TextDecoderStream as in a browser) through a proxy that is cut and
healed: a write made while the connection was down arrives after the
reconnect, which only a resumed watch sends (a fresh one starts at the tail).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.waiting import wait_for

STATIC = Path(__file__).resolve().parent.parent / "edgekv" / "console" / "static"

FOLLOWER = """
import { follow } from "./sse.js";
const [url, token] = process.argv.slice(2);
// The console keeps the token in sessionStorage; Node.js has none.
globalThis.sessionStorage = { getItem: (name) => (name === "edgekv.token" ? token : null) };
const stop = new AbortController();
process.stdin.on("end", () => stop.abort());
process.stdin.resume();
const say = (line) => process.stdout.write(JSON.stringify(line) + "\\n");
await follow(url, {
  signal: stop.signal,
  onEvent: (type, data) => say({ type, data }),
  onStatus: (text) => say({ status: text }),
});
"""


class Follower:
    """``follow()`` of sse.js in a Node.js process; what it reports, line by line."""

    def __init__(self, folder: Path, url: str, token: str) -> None:
        for name in ("sse.js", "api.js"):
            shutil.copy(STATIC / name, folder / name)
        # The console's files are ES modules (the browser loads them as such).
        (folder / "package.json").write_text('{"type": "module"}')
        (folder / "follow.js").write_text(FOLLOWER)
        self.lines: list[dict[str, str]] = []
        self._process = subprocess.Popen(
            ["node", "follow.js", url, token],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(json.loads(line))

    def events(self, kind: str) -> list[dict[str, object]]:
        return [json.loads(line["data"]) for line in self.lines if line.get("type") == kind]

    def statuses(self) -> list[str]:
        return [line["status"] for line in self.lines if "status" in line]

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # follow() is aborted and the process ends
        assert self._process.wait(10) == 0
        self._reader.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()


@pytest.fixture
def node(tmp_path: Path, start_node: Callable[..., NodeProcess]) -> NodeProcess:
    token = new_token()
    config = tmp_path / "tokens.toml"
    config.write_text(token_toml("admin", token, ["admin"]))
    node = start_node("n0", ["--config", str(config)])
    node.token = token
    return node


@pytest.fixture
def proxy(node: NodeProcess) -> Iterator[TcpProxy]:
    proxy = TcpProxy(node.port)
    yield proxy
    proxy.close()


def put(node: NodeProcess, key: str, value: bytes) -> str:
    answer = node.request("PUT", f"/v1/kv/feed/{key}", body=value)
    assert answer.status == 200, answer.body
    return str(answer.json()["version"])


def keys(follower: Follower) -> list[object]:
    return [event["key"] for event in follower.events("change")]


def test_a_cut_watch_resumes_from_its_last_event_id(
    tmp_path: Path, node: NodeProcess, proxy: TcpProxy
) -> None:
    assert node.token is not None
    follower = Follower(tmp_path, f"{proxy.url}/v1/kv/feed/_watch", node.token)
    try:
        # Ready: the node took the bearer header (a node with tokens refuses a watch without).
        wait_for(lambda: len(follower.events("ready")) == 1, 15, "the watch ready")
        first = put(node, "k1", b"one")
        wait_for(lambda: keys(follower) == ["k1"], 15, "k1 from the watch")
        assert follower.events("change")[0]["version"] == first
        proxy.cut()  # the stream drops; new connections are refused until healed
        wait_for(lambda: "reconnecting" in " ".join(follower.statuses()), 15, "a reconnect")
        put(node, "k2", b"two")  # while no stream is open
        proxy.heal()
        wait_for(lambda: keys(follower) == ["k1", "k2"], 15, "k2 after the reconnect")
        # Resumed at its last id: k1 not sent again, and a second ready after catching up.
        wait_for(lambda: len(follower.events("ready")) == 2, 15, "the resumed watch ready")
        put(node, "k3", b"three")
        wait_for(lambda: keys(follower) == ["k1", "k2", "k3"], 15, "k3 live again")
    finally:
        follower.close()
