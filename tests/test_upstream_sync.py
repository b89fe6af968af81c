"""The upstream as system of record and hub: real nodes, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from edgekv.store.pg.schema import migrate
from edgekv.store.pg.statements import Statements
from testkit.cluster import stored_state, wait_converged
from testkit.pg import DSN, query, via
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.security import Security
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


def upstream_args(schema: str, dsn: str = DSN, *extra: str) -> list[str]:
    return ["--upstream", dsn, "--upstream-schema", schema, *extra]


def live_rows(schema: str) -> dict[tuple[str, bytes], bytes | None]:
    rows = query(f"SELECT ns, key, value FROM {schema}.kv")
    return {(r["ns"], bytes(r["key"])): r["value"] and bytes(r["value"]) for r in rows}


def test_pops_without_a_peer_link_converge_through_postgres(
    start_node: StartNode, pg_schema: str, tmp_path: Path
) -> None:
    # As PoPs on different hosts run: tokens, a cluster secret, TLS.
    start_node = Security(tmp_path / "security", tls=True).starter(start_node)
    a = start_node("a", upstream_args(pg_schema))
    b = start_node("b", upstream_args(pg_schema))
    for i in range(50):
        assert a.request("PUT", f"/v1/kv/app/a{i}", body=f"from a {i}").status == 200
        assert b.request("PUT", f"/v1/kv/app/b{i}", body=f"from b {i}").status == 200
    # Concurrent writes of the same keys, and deletes, at both.
    for i in range(10):
        assert a.request("PUT", f"/v1/kv/app/both{i}", body="a").status == 200
        assert b.request("PUT", f"/v1/kv/app/both{i}", body="b").status == 200
    assert a.request("DELETE", "/v1/kv/app/b3").status == 200
    assert b.request("DELETE", "/v1/kv/app/a7").status == 200
    state = wait_converged([a, b])
    keys = {(ns, key) for ns, key, value, *_ in state if value is not None}
    assert len(keys) == 50 + 50 + 10 - 2
    assert ("app", b"b3") not in keys
    assert ("app", b"a7") not in keys
    # PostgreSQL holds the same, tombstones included: it is the system of record.
    wait_for(lambda: len(live_rows(pg_schema)) == len(state), what="upstream complete")
    assert live_rows(pg_schema) == {(ns, key): value for ns, key, value, *_ in state}

    c = start_node("c", upstream_args(pg_schema))  # joins later, knows nobody
    assert wait_converged([a, b, c]) == state


def test_cursor_never_skips_a_row_committed_out_of_sequence_order(
    start_node: StartNode, pg_schema: str
) -> None:
    node = start_node("a", upstream_args(pg_schema))
    wait_for(lambda: _schema_exists(pg_schema), what="schema created")
    sql = Statements(pg_schema)

    def row(key: bytes, value: bytes, hlc: int) -> list[object]:
        # As a strong transaction at another PoP writes it (numbered later).
        return [["app"], [key], [value], [None], [None], [hlc << 16], 12345]

    async def reverse_commits() -> None:
        first = await asyncpg.connect(DSN)
        second = await asyncpg.connect(DSN)
        try:
            early = first.transaction()
            await early.start()
            await first.execute(sql.strong_upsert, *row(b"early", b"1", 1_000))  # begun first
            late = second.transaction()
            await late.start()
            await second.execute(sql.strong_upsert, *row(b"late", b"2", 2_000))
            await late.commit()  # ... but committed first
            await asyncio.to_thread(
                wait_for, lambda: _has(node, "late"), 30.0, "the later commit pulled"
            )
            await early.commit()
        finally:
            await first.close()
            await second.close()

    asyncio.run(reverse_commits())
    wait_for(lambda: _has(node, "early"), what="the earlier-begun row, committed last")


def test_push_and_sequencer_statements_take_the_lock_and_number_after_its_holder(
    pg_schema: str,
) -> None:
    # Each is one statement that locks, numbers and commits (no round trip
    # under the lock): it must still wait for a transaction holding the lock,
    # and number only after it, or a puller could skip the holder's rows.
    sql = Statements(pg_schema)
    constant, arguments = [False] * 7, [["app"], [b"pushed"], [b"v"], [None], [None], [7], [9]]

    async def numbered(conn: asyncpg.Connection, key: bytes) -> int:
        return int(await conn.fetchval(f"SELECT seq FROM {pg_schema}.kv WHERE key = $1", key))

    async def run() -> None:
        holder, other, watcher = [await asyncpg.connect(DSN) for _ in range(3)]
        try:
            await migrate(holder, pg_schema)
            await holder.execute(
                sql.strong_upsert, ["app"], [b"unnumbered"], [b"s"], [None], [None], [5], 9
            )
            for statement, args, key in (
                (sql.push(constant), arguments, b"pushed"),
                (sql.sequence, [], b"unnumbered"),
            ):
                held = holder.transaction()
                await held.start()
                await holder.execute(sql.lock_sequencer)
                holder_seq = await holder.fetchval(f"SELECT nextval('{pg_schema}.change_seq')")
                waiting = asyncio.ensure_future(other.execute(statement, *args))

                async def blocked(pid: int = other.get_server_pid()) -> bool:
                    wait = await watcher.fetchval(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
                    )
                    return bool(wait == "Lock")

                for _ in range(3000):
                    if await blocked():
                        break
                    await asyncio.sleep(0.01)
                assert await blocked()
                assert not waiting.done()
                await held.commit()
                await waiting
                assert await numbered(watcher, key) > holder_seq
        finally:
            for conn in (holder, other, watcher):
                await conn.close()

    asyncio.run(run())


def test_connecting_to_a_current_schema_takes_no_lock(pg_schema: str) -> None:
    # Every connector migrates when it (re)connects; on a schema already at
    # this version that is one read, so PoPs reconnecting together do not
    # take turns at the meta row's lock (48 PoPs queued there under load).
    async def run() -> None:
        holder, other = await asyncpg.connect(DSN), await asyncpg.connect(DSN)
        try:
            upstream_id = await migrate(holder, pg_schema)
            held = holder.transaction()
            await held.start()
            await holder.execute(f"SELECT 1 FROM {pg_schema}.meta WHERE id = 1 FOR UPDATE")
            # A guard against hanging, not a speed limit: the lock is held until after.
            async with asyncio.timeout(30):
                assert await migrate(other, pg_schema) == upstream_id
            await held.rollback()
        finally:
            await holder.close()
            await other.close()

    asyncio.run(run())


def test_pushed_rows_equal_the_node_s_whichever_columns_vary(
    start_node: StartNode, pg_schema: str
) -> None:
    # A long batch interval gathers all of it into one or two pushes.
    node = start_node("a", upstream_args(pg_schema, DSN, "--upstream-batch-interval", "0.5"))
    plain = [{"op": "put", "key": f"same{i}", "value": "dg=="} for i in range(100)]
    mixed = [
        {"op": "put", "key": f"k{i}", "value": "dg==", "metadata": {"i": i}, "ttl": 3600 + i}
        for i in range(20)
    ] + [{"op": "delete", "key": f"k{i}"} for i in range(0, 20, 3)]
    for ns, operations in (("one", plain), ("mixed", mixed)):
        answer = node.request("POST", f"/v1/kv/{ns}/_bulk", json_body={"operations": operations})
        assert answer.status == 200
    for i in range(5):
        assert node.request("PUT", f"/v1/kv/other{i}/k", body=f"{i}").status == 200
    expected = sorted(stored_state(node))

    def pushed() -> list[tuple[object, ...]]:
        rows = query(
            f"SELECT ns, key, value, metadata, expiration, hlc, node FROM {pg_schema}.kv"
            " ORDER BY ns, key"
        )
        return [
            (r["ns"], bytes(r["key"]), r["value"] and bytes(r["value"]), *list(r.values())[3:])
            for r in rows
        ]

    wait_for(lambda: _schema_exists(pg_schema), what="schema created")
    wait_for(lambda: len(pushed()) == len(expected), what="every row pushed")
    assert pushed() == expected


def _has(node: NodeProcess, key: str) -> bool:
    return node.request("GET", f"/v1/kv/app/{key}").status == 200


def _schema_exists(schema: str) -> bool:
    return bool(query("SELECT 1 FROM information_schema.tables WHERE table_schema = $1", schema))


def test_a_wiped_upstream_is_filled_again(start_node: StartNode, pg_schema: str) -> None:
    a = start_node("a", upstream_args(pg_schema))
    b = start_node("b", upstream_args(pg_schema))
    for i in range(20):
        assert a.request("PUT", f"/v1/kv/app/a{i}", body=b"v").status == 200
        assert b.request("PUT", f"/v1/kv/app/b{i}", body=b"v").status == 200
    wait_for(lambda: all(_has(a, f"b{i}") for i in range(20)), what="a has b's writes")
    b.kill()
    for attempt in range(5):  # a running node's statements may deadlock with the drop
        try:
            query(f"DROP SCHEMA {pg_schema} CASCADE")
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
    # A new upstream id: a pushes its whole log again, b's writes it pulled included.
    wait_for(
        lambda: _schema_exists(pg_schema) and len(_rows_or_none(pg_schema) or {}) == 40,
        what="refill",
    )


def _rows_or_none(schema: str) -> dict[tuple[str, bytes], bytes | None] | None:
    try:
        return live_rows(schema)
    except asyncpg.UndefinedTableError:  # between the drop and the re-creation
        return None


@pytest.mark.slow
def test_outage_in_the_middle_of_a_write_load_loses_nothing(
    start_node: StartNode, pg_schema: str, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    start_node = Security(tmp_path / "security").starter(start_node)  # tokens, cluster secret
    args = upstream_args(pg_schema, via(pg_proxy), "--strong-namespaces", "bank")
    a = start_node("a", [*args, "--upstream-timeout", "0.5"])
    b = start_node("b", upstream_args(pg_schema, DSN, "--strong-namespaces", "bank"))
    assert a.request("PUT", "/v1/kv/bank/acct", body=b"1").status == 200
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            key = f"w{worker}-{i}"
            if a.request("PUT", f"/v1/kv/app/{key}", body=key).status == 200:
                acknowledged.append(key)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 100, what="load running")
    pg_proxy.cut()
    wait_for(lambda: _upstream(a)["state"] == "down", what="status shows the upstream down")
    during = len(acknowledged)
    started = time.monotonic()
    answer = a.request("PUT", "/v1/kv/bank/acct", body=b"2", headers={"If-Match": "*"})
    failed_after = time.monotonic() - started
    assert (answer.status, answer.error_code) == (503, "upstream_unavailable")
    assert failed_after < 5  # upstream_timeout is 0.5 s: the bound is its contract, not speed
    answer = a.request("GET", "/v1/kv/bank/acct?consistency=strong")
    assert answer.error_code == "upstream_unavailable"
    wait_for(lambda: len(acknowledged) >= during + 100, what="eventual writes go on")
    assert _upstream(a)["lag_changes"] > 0
    assert _upstream(a)["last_error"]
    pg_proxy.heal()
    wait_for(lambda: len(acknowledged) >= during + 300, what="writes after the heal")
    stop.set()
    for thread in threads:
        thread.join(30)
    wait_for(
        lambda: {("app", k.encode()) for k in acknowledged} <= set(live_rows(pg_schema)),
        what="backlog drained into PostgreSQL",
    )
    wait_for(lambda: all(_has(b, k) for k in acknowledged[-20:]), what="b has the writes")
    assert {k for k in acknowledged if not _has(b, k)} == set()
    answer = a.request("PUT", "/v1/kv/bank/acct", body=b"3", headers={"If-Match": "*"})
    assert answer.status == 200


def _upstream(node: NodeProcess) -> dict[str, Any]:
    return dict(node.request("GET", "/v1/cluster/status").json()["upstream"])


@pytest.mark.slow
def test_documents_merge_through_postgres(
    start_node: StartNode, pg_schema: str, tmp_path: Path
) -> None:
    start_node = Security(tmp_path / "security").starter(start_node)  # tokens, cluster secret
    a = start_node("a", upstream_args(pg_schema))
    b = start_node("b", upstream_args(pg_schema))
    initial = {"name": "Ada", "prefs": {}}
    assert a.request("PUT", "/v1/docs/users/u1", json_body=initial).status == 200
    wait_for(lambda: b.request("GET", "/v1/docs/users/u1").status == 200, what="doc at b")
    # Concurrent patches of different fields, and of different fields of one
    # nested object, at PoPs that share nothing but PostgreSQL.
    patches_a = [{"email": "ada@example.com"}, {"prefs": {"theme": "dark"}}]
    patches_b = [{"age": 36}, {"prefs": {"lang": "en"}}]
    for patch_a, patch_b in zip(patches_a, patches_b, strict=True):
        assert a.request("PATCH", "/v1/docs/users/u1", json_body=patch_a).status == 200
        assert b.request("PATCH", "/v1/docs/users/u1", json_body=patch_b).status == 200
    expected = {
        "name": "Ada",
        "email": "ada@example.com",
        "age": 36,
        "prefs": {"theme": "dark", "lang": "en"},
    }

    def document(node: NodeProcess) -> object:
        answer = node.request("GET", "/v1/docs/users/u1")
        return answer.json()["doc"] if answer.status == 200 else None

    wait_for(lambda: document(a) == expected == document(b), what="documents merged")
    c = start_node("c", upstream_args(pg_schema))
    wait_for(lambda: document(c) == expected, what="late PoP has the merged document")
