"""What every workload shares: the process a client runs as, and how errors become outcomes.

A workload is one module with one class: it generates operations for a
process, performs one against a node, reads the final state of every node,
says when those final reads agree, and checks the history. Adding one is
that file plus one line in :data:`jepsen_like.workloads.WORKLOADS`.
"""

from __future__ import annotations

import http.client
import json
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from edgekv_client import ApiError, Client, PreconditionFailed, TransportError
from edgekv_replication.versions import decode_version
from jepsen_like.db import Db
from jepsen_like.history import Op

CLIENT_TIMEOUT = 3.0
"""Seconds a client waits for a node; a paused node turns writes into ``info``."""

Version = tuple[int, int]
NO_VERSION: Version = (0, 0)


@dataclass
class Process:
    """One logical client: its id, home PoP, seeded generator and private state."""

    id: int
    node: int
    urls: list[str]
    rng: random.Random
    state: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    """The bearer token of every request (None: the nodes run without tokens)."""
    _clients: dict[int, Client] = field(default_factory=dict)

    def client(self, node: int | None = None) -> Client:
        """A client of ``node`` (default: the home PoP), never retrying by itself."""
        i = self.node if node is None else node
        if i not in self._clients:
            self._clients[i] = Client(
                self.urls[i], token=self.token, timeout=CLIENT_TIMEOUT, retries=0
            )
        return self._clients[i]

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()


class Workload:
    """Base of the workloads; subclasses fill in the hooks."""

    name: ClassVar[str] = ""
    processes: ClassVar[int] = 3
    reads: ClassVar[frozenset[str]] = frozenset({"read"})
    """Operation kinds without effect: a timeout on one is a plain ``fail``."""
    strong_namespaces: ClassVar[tuple[str, ...]] = ()
    pause_s: ClassVar[tuple[float, float]] = (0.02, 0.12)
    """Seconds a process idles between two operations."""

    def setup(self, db: Db) -> None:
        """Prepare the cluster before the clients start (default: nothing)."""

    def generate(self, process: Process) -> Op:
        """The next operation of ``process``: at least ``f``; ``node`` defaults to home."""
        raise NotImplementedError

    def invoke(self, process: Process, op: Op) -> tuple[str, dict[str, Any]]:
        """Perform ``op``; return its completion type and fields (errors may raise)."""
        raise NotImplementedError

    def final_reads(self, db: Db) -> dict[str, Any]:
        """What every node holds now (JSON), read once the faults are healed."""
        raise NotImplementedError

    def converged(self, final: dict[str, Any]) -> bool:
        """Whether every node's final read agrees."""
        views = list(final["nodes"].values())
        return all(view == views[0] for view in views)

    def settle(self, db: Db, timeout: float) -> dict[str, Any]:
        """After convergence, wait for anything else the checker needs (default: nothing)."""
        return {}

    def check(self, ops: list[Op], final: dict[str, Any]) -> dict[str, Any]:
        """Check the history and final reads; the answer has ``valid`` and counts."""
        raise NotImplementedError


def outcome_of_error(exc: Exception, is_read: bool) -> tuple[str, dict[str, Any]]:
    """Classify a failed request: ``fail`` when it surely did nothing, else ``info``."""
    if isinstance(exc, PreconditionFailed):
        return "fail", {"error": exc.code}
    if isinstance(exc, ApiError):
        # A 5xx (upstream unavailable, node stopping) may come after the commit.
        unknown = exc.status >= 500 and not is_read
        return ("info" if unknown else "fail"), {"error": exc.code}
    if isinstance(exc, TransportError | OSError | http.client.HTTPException):
        cause = exc.__cause__ if isinstance(exc, TransportError) else exc
        refused = isinstance(cause, ConnectionRefusedError)
        return ("fail" if refused or is_read else "info"), {"error": _short(exc)}
    raise exc


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:160]


def version_of(text: str | None) -> Version:
    """The ``(hlc, node)`` stamp of an entry version (``(0, 0)``: absent)."""
    return decode_version(text) if text else NO_VERSION


def entry_at(db: Db, i: int, ns: str, key: str) -> list[Any] | None:
    """``[value, version]`` of a key at node ``i`` (None: absent), for final reads."""
    status, headers, body = raw_request(
        db.urls[i], "GET", f"/v1/kv/{ns}/{quote(key, safe='')}", token=db.token
    )
    if status == 404:
        return None
    if status != 200:
        raise RuntimeError(f"final read of {ns}/{key} at n{i}: HTTP {status}")
    return [body.decode(), headers.get("etag", "").strip('"')]


def entries_at_every_node(db: Db, ns: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The final reads of ``keys`` at every node: ``{"nodes": {"n0": {key: entry_at}}}``."""
    return {
        "nodes": {
            f"n{i}": {key: entry_at(db, i, ns, key) for key in keys} for i in range(len(db.nodes))
        }
    }


def write_or_read(client: Client, ns: str, op: Op) -> tuple[str, dict[str, Any]]:
    """Perform a register-style ``write`` (unique value) or ``read`` of ``op["key"]``."""
    if op["f"] == "write":
        return "ok", {"version": client.put(ns, op["key"], op["value"].encode())["version"]}
    entry = client.get_with_metadata(ns, op["key"])
    if entry is None:
        return "ok", {"value": None, "version": None}
    return "ok", {"value": entry.value.decode(), "version": entry.version}


def raw_request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = CLIENT_TIMEOUT,
    token: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request (JSON body if given, ``token`` as bearer if given);
    ``(status, lower-case headers, body)``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=payload, headers=headers)
        answer = conn.getresponse()
        return (
            answer.status,
            {k.lower(): v for k, v in answer.getheaders()},
            answer.read(),
        )
    finally:
        conn.close()
