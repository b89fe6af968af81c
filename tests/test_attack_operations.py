"""Defects found by attacking the operator's kit as a hostile client and a hostile peer.

Runtime tokens live in the reserved namespace ``_edgekv.tokens`` and replicate
like data, so any peer holding the cluster secret (or a node of another
version) can hand a node token records of its own making. These tests start
real ``edgekv serve`` processes with tokens and a cluster secret: a "hostile
peer" whose database holds crafted records, and a victim that pulls from it.
Every test here failed on main when it was written.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv.auth import TokenSpec, hash_token, new_token, parse_tokens
from edgekv.ratelimit import MAX_RETRY_AFTER, RateLimiter
from edgekv.runtime_tokens import TOKENS_NAMESPACE
from edgekv.store.kv import Write
from edgekv.store.store import Store
from testkit.cluster import Cluster
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for

KEPT = new_token()
"""A well-formed runtime token the hostile peer also sends (read:a)."""
EXPIRED = new_token()
"""An admin record carrying an expiration in the past: hidden from the listing."""
EXPIRING = new_token()
"""An admin record carrying an expiration far ahead."""
NAN_RATE = new_token()
"""An admin record whose rate_limit is NaN (JSON that Python's json module accepts)."""
HUGE = new_token()
"""An admin record of 1 MiB: parsed on every request presenting it, were it a token."""


def _record(name: str, scopes: list[str], created: object = 1, rate: str = "null") -> bytes:
    return (
        f'{{"name":{json.dumps(name)},"scopes":{json.dumps(scopes)},'
        f'"rate_limit":{rate},"created_ms":{json.dumps(created)}}}'
    ).encode()


def _key(token: str) -> bytes:
    return hash_token(token).encode("ascii")


PLANTED: list[Write] = [
    Write(_key(EXPIRED), _record("expired", ["admin"]), expiration=1000),
    Write(_key(EXPIRING), _record("expiring", ["admin"]), expiration=4_000_000_000),
    Write(_key(NAN_RATE), _record("nan", ["admin"], rate="NaN")),
    Write(_key(new_token()), _record("late", ["admin"], created="soon")),
    Write(_key(new_token()), _record("huge", ["admin"], created=10**400)),
    Write(_key(new_token()), b"[" * 100_000),
    Write(_key(HUGE), _record("huge-record", ["admin"])[:-1] + b',"pad":"' + b"x" * 2**20 + b'"}'),
    Write(_key(new_token()), b"[1]"),
    Write(_key(new_token()), b"\xff\xfe not utf-8"),
    Write("sha256:é".encode(), _record("odd-key", ["admin"])),
    Write(_key(KEPT), _record("kept", ["read:a"])),  # last: its arrival means all arrived
]


def _plant(data_dir: Path, writes: list[Write]) -> None:
    """Write ``writes`` into ``_edgekv.tokens`` of a fresh node's database, as a peer may."""

    async def write() -> None:
        store = Store(data_dir, allow_new_node=True)
        try:
            for planted in writes:  # one write each: one bad row must not hide the others
                await store.write(TOKENS_NAMESPACE, [planted])
        finally:
            store.close()

    asyncio.run(write())


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that pulls from a hostile peer holding the crafted token records."""
    base = tmp_path_factory.mktemp("attack-operations")
    security = Security(base / "security")
    _plant(base / "peer", PLANTED)
    args = [*security.node_args(), "--peer-discovery", "false"]
    peer = security.apply(NodeProcess(base / "peer", args).start())
    node = security.apply(
        NodeProcess(base / "victim", [*args, f"--peer=http://127.0.0.1:{peer.port}"]).start()
    )
    try:
        wait_for(lambda: _status(node, KEPT, "GET", "/v1/kv/a/k") == 404, timeout=30)
        yield node
    finally:
        node.kill()
        peer.kill()


def _status(node: NodeProcess, token: str, method: str, path: str) -> int:
    return node.request(method, path, headers={"Authorization": f"Bearer {token}"}).status


# -- 1. One malformed record from a peer wedges token listing and revocation ---------


def test_malformed_token_records_leave_listing_and_revoke_working(victim: NodeProcess) -> None:
    listed = victim.request("GET", "/v1/admin/tokens")
    assert listed.status == 200, listed.body
    names = sorted(token["name"] for token in listed.json()["tokens"])
    # Only records the node would itself have written are tokens; the rest are ignored.
    assert names == ["kept", "test-admin"]
    revoked = victim.request("DELETE", "/v1/admin/tokens/kept")
    assert revoked.status == 200, revoked.body
    assert [token["name"] for token in revoked.json()["revoked"]] == ["kept"]
    wait_for(lambda: _status(victim, KEPT, "GET", "/v1/kv/a/k") == 401)


# -- 2. A record with an expiration authenticates yet can be neither listed nor revoked -


@pytest.mark.parametrize("token", [EXPIRED, EXPIRING], ids=["expired", "expiring"])
def test_token_record_with_an_expiration_grants_nothing(victim: NodeProcess, token: str) -> None:
    # The listing hides an expired record (and would hide an expiring one once it
    # expires) while the lookup read past expiration: an admin nobody could revoke.
    assert _status(victim, token, "GET", "/v1/cluster/status") == 401


@pytest.mark.parametrize("token", [NAN_RATE, HUGE], ids=["nan-rate", "huge"])
def test_token_record_with_a_nan_rate_or_of_a_megabyte_grants_nothing(
    victim: NodeProcess, token: str
) -> None:
    assert _status(victim, token, "GET", "/v1/cluster/status") == 401


# -- 3. A tiny rate limit turns every request after the first into a 500 -------------


@pytest.mark.parametrize("rate", [1e-320, 1e-300])
def test_tiny_rate_limit_answers_429_with_a_bounded_retry_after(
    victim: NodeProcess, rate: float
) -> None:
    created = victim.request(
        "POST",
        "/v1/admin/tokens",
        json_body={"name": f"slow-{rate}", "scopes": ["read:a"], "rate_limit": rate},
    )
    assert created.status == 200, created.body
    token = created.json()["token"]
    assert _status(victim, token, "GET", "/v1/kv/a/k") == 404  # the one request it has
    again = victim.request("GET", "/v1/kv/a/k", headers={"Authorization": f"Bearer {token}"})
    assert again.status == 429, again.body
    assert again.json()["error"]["code"] == "rate_limited"
    assert again.headers["Retry-After"] == str(MAX_RETRY_AFTER)


def test_rate_limit_buckets_of_tokens_gone_idle_are_dropped() -> None:
    # Runtime tokens come and go (a token per deploy or per CI job): the buckets of
    # revoked and idle ones must not be kept for the life of the process.
    clock = [0.0]
    limiter = RateLimiter(10.0, clock=lambda: clock[0])
    for i in range(50_000):
        assert limiter.retry_after(TokenSpec(f"t{i}", f"sha256:{i}", ("admin",))) is None
    clock[0] += 10.0  # every bucket is full again after a second
    busy = TokenSpec("busy", "sha256:busy", ("admin",), 0.001)
    assert limiter.retry_after(busy) is None
    assert limiter.retry_after(busy) == 1000  # a bucket still short of full is kept
    for i in range(20_000):  # new tokens: past twice what was kept, the full ones go
        limiter.retry_after(TokenSpec(f"n{i}", f"sha256:n{i}", ("admin",)))
    assert limiter.tracked() == 20_000 + 1  # the new ones and busy; none of the 50,000
    assert limiter.retry_after(busy) == 1000


@pytest.mark.parametrize("rate", [float("nan"), float("inf")])
def test_config_token_with_a_non_finite_rate_limit_is_refused(rate: float) -> None:
    # TOML spells them nan and inf; NaN compared as no limit at all.
    entry = {"name": "t", "hash": hash_token(new_token()), "scopes": ["read:a"], "rate_limit": rate}
    with pytest.raises(ValueError, match="rate_limit"):
        parse_tokens([entry])


def test_retry_after_is_at_most_a_day_whatever_the_rate() -> None:
    limiter = RateLimiter(0.0, clock=lambda: 0.0)
    for rate in (5e-324, 1e-300, 1e-6, 1 / 86_401):
        spec = TokenSpec(f"r{rate}", f"sha256:{rate}", ("admin",), rate)
        assert limiter.retry_after(spec) is None
        assert limiter.retry_after(spec) == MAX_RETRY_AFTER
    spec = TokenSpec("hourly", "sha256:hourly", ("admin",), 1 / 3600)
    assert limiter.retry_after(spec) is None
    assert limiter.retry_after(spec) == 3600


# -- 4. Backups and exports a client abandons ------------------------------------------


def _load(data_dir: Path, megabytes: int = 40) -> None:
    """A database of ``megabytes`` MiB: a backup of it outlasts the socket buffers."""

    async def write() -> None:
        store = Store(data_dir, allow_new_node=True)
        try:
            for i in range(megabytes):
                await store.write("big", [Write(f"k{i}".encode(), bytes([i]) * 1024 * 1024)])
        finally:
            store.close()

    asyncio.run(write())


def _unread(node: NodeProcess, token: str, path: str) -> socket.socket:
    """A request whose answer its client never reads (a stalled or vanished downloader)."""
    conn = socket.create_connection(("127.0.0.1", node.port))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return conn


def _scratch(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.iterdir() if ".backup-" in path.name)


def _answered(node: NodeProcess, route: str) -> set[str]:
    """The statuses /metrics counts for GET ``route``."""
    text = node.request("GET", "/metrics").body.decode()
    return {
        line.split('status="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("edgekv_http_requests_total{")
        and f'route="{route}"' in line
        and 'method="GET"' in line
    }


@pytest.mark.slow
def test_restart_removes_the_snapshot_a_killed_backup_left(tmp_path: Path) -> None:
    security = Security(tmp_path / "security")
    data = tmp_path / "node"
    _load(data)
    args = [*security.node_args(), "--peer-discovery", "false"]
    node = security.apply(NodeProcess(data, args).start())
    stalled = _unread(node, security.token, "/v1/admin/backup")
    try:
        wait_for(lambda: bool(_scratch(data)), timeout=30)
        node.kill()  # mid-backup: no finally runs
    finally:
        stalled.close()
    assert _scratch(data), "the kill left the database-sized scratch copy"
    restarted = security.apply(NodeProcess(data, args).start())
    try:
        assert _scratch(data) == []
        assert restarted.request("GET", "/v1/kv/big/k1").body == b"\x01" * 1024 * 1024
    finally:
        restarted.kill()


@pytest.mark.slow
def test_abandoned_backup_and_export_downloads_are_not_server_errors(tmp_path: Path) -> None:
    security = Security(tmp_path / "security")
    data = tmp_path / "node"
    _load(data)
    node = security.apply(
        NodeProcess(data, [*security.node_args(), "--peer-discovery", "false"]).start()
    )
    try:
        for route in ("/v1/admin/export", "/v1/admin/backup"):
            abandoned = _unread(node, security.token, route)
            abandoned.recv(4096)  # the headers: the answer is under way
            abandoned.close()
            wait_for(lambda route=route: bool(_answered(node, route)), timeout=30)  # type: ignore[misc]
            # Counted as answered, not as a 500 with a logged traceback.
            assert _answered(node, route) == {"200"}, route
        assert not any("unhandled error" in line for line in node.output)
        wait_for(lambda: _scratch(data) == [])
        assert node.request("GET", "/v1/admin/backup").status == 200
    finally:
        node.kill()


@pytest.mark.slow
def test_a_stalled_backup_download_holds_back_no_other_backup(tmp_path: Path) -> None:
    security = Security(tmp_path / "security")
    data = tmp_path / "node"
    _load(data)
    node = security.apply(
        NodeProcess(data, [*security.node_args(), "--peer-discovery", "false"]).start()
    )
    stalled = _unread(node, security.token, "/v1/admin/backup")
    try:
        stalled.recv(4096)  # its snapshot is taken and its download under way, then stalls
        second = node.request("GET", "/v1/admin/backup", timeout=60)
        assert second.status == 200
        assert len(second.body) > 40 * 1024 * 1024
    finally:
        stalled.close()
        node.kill()


# -- 5. A node restored from a backup takes the tokens revoked since -----------------


def _edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_restored_node_takes_no_runtime_token_until_it_has_rejoined(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2, args=["--tombstone-gc-interval", "0.2"])
    try:
        a, b = cluster.nodes
        made = {
            name: a.request(
                "POST", "/v1/admin/tokens", json_body={"name": name, "scopes": ["read:a"]}
            )
            for name in ("leaked", "kept")
        }
        leaked, kept = (made[name].json()["token"] for name in ("leaked", "kept"))
        wait_for(lambda: _status(b, leaked, "GET", "/v1/kv/a/k") == 404)
        out = tmp_path / "a.ekvbackup"
        assert cluster.token is not None
        done = _edgekv("backup", "--url", a.url, "--token", cluster.token, "--out", str(out))
        assert done.returncode == 0, done.stderr
        # After the backup the token leaks and is revoked; every PoP refuses it.
        assert b.request("DELETE", "/v1/admin/tokens/leaked").status == 200
        wait_for(lambda: _status(a, leaked, "GET", "/v1/kv/a/k") == 401)
        a.stop()
        shutil.move(a.data_dir, tmp_path / "lost-disk")
        restored = _edgekv("restore", str(out), "--data-dir", str(a.data_dir))
        assert restored.returncode == 0, restored.stderr
        cluster.isolate(0)  # the revoke cannot reach the restored node yet
        a.start()
        assert _status(a, leaked, "GET", "/v1/kv/a/k") == 401, "a revoked token came back"
        assert _status(a, kept, "GET", "/v1/kv/a/k") == 401  # fail closed: any runtime token
        assert a.request("GET", "/v1/cluster/status").status == 200  # config tokens work
        cluster.heal()
        wait_for(lambda: not (a.data_dir / "edgekv.restored").exists(), what="rejoin")
        assert _status(a, kept, "GET", "/v1/kv/a/k") == 404
        assert _status(a, leaked, "GET", "/v1/kv/a/k") == 401
    finally:
        cluster.close()


# -- 6. A backup on a disk without room for its copy fails the node's writes ---------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 24 MiB filesystem (tmpfs), unmounted afterwards (as tests/test_data_dir.py)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.slow
def test_backup_without_room_for_its_copy_is_refused_before_copying(
    small_disk: Path, tmp_path: Path
) -> None:
    security = Security(tmp_path / "security")
    data = small_disk / "node"
    _load(data, megabytes=13)  # the copy cannot fit in what is left
    node = security.apply(
        NodeProcess(data, [*security.node_args(), "--peer-discovery", "false"]).start()
    )
    try:
        statuses: list[int] = []
        backup: list[int] = []

        def write_meanwhile() -> None:
            while not backup:
                put = node.request("PUT", f"/v1/kv/small/k{len(statuses)}", body=b"v" * 20_000)
                statuses.append(put.status)

        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        try:
            wait_for(lambda: len(statuses) >= 5)
            answer = node.request("GET", "/v1/admin/backup")
            backup.append(answer.status)
        finally:
            backup.append(0)
            writer.join(30)
        assert answer.status == 507, answer.body
        assert answer.json()["error"]["code"] == "storage_full"
        assert "no room for the backup's copy" in answer.json()["error"]["message"]
        # The copy never started: no write was refused for it, and no scratch file is left.
        assert set(statuses) == {200}, statuses
        assert not any("disk is full" in line for line in node.output)
        assert _scratch(data) == []
    finally:
        node.kill()
