"""Strong namespaces: linearizable conditional writes, transactions and reads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from edgekv_client import AsyncClient, Client, InvalidRequest, PreconditionFailed, _core
from testkit.pg import DSN, PREFIX, query, via
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.responses import Response, assert_error
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


def strong_node(start_node: StartNode, name: str, schema: str, declare: bool = True) -> NodeProcess:
    # Generous: a slow, loaded CI machine must not turn writes into unknown outcomes.
    args = ["--upstream", DSN, "--upstream-schema", schema, "--upstream-timeout", "10"]
    if declare:
        args += ["--strong-namespaces", "bank"]
    node = start_node(name, args)
    wait_for(lambda: _upstream_state(node) == "up", what="upstream connected")
    return node


def assert_conflict(answer: Response) -> None:
    """409 precondition_failed: the error shape plus the keys' current versions."""
    assert (answer.status, answer.error_code) == (409, "precondition_failed"), answer.body
    assert set(answer.json()["error"]) == {"code", "message", "version", "failed"}


def _upstream_state(node: NodeProcess) -> str:
    return str(node.request("GET", "/v1/cluster/status").json()["upstream"]["state"])


@pytest.mark.slow
def test_concurrent_compare_and_set_increments_lose_no_update(
    start_node: StartNode, pg_schema: str
) -> None:
    pops = [strong_node(start_node, "a", pg_schema), strong_node(start_node, "b", pg_schema)]
    assert pops[0].request("PUT", "/v1/kv/bank/counter", body=b"0").status == 200
    per_worker = 12
    successes: list[int] = []
    errors: list[str] = []

    def worker(node: NodeProcess) -> None:
        done = 0
        while done < per_worker:
            current = node.request("GET", "/v1/kv/bank/counter?consistency=strong")
            if current.status != 200:
                errors.append(f"read {current.status}")
                return
            answer = node.request(
                "PUT",
                "/v1/kv/bank/counter",
                body=str(int(current.body) + 1),
                headers={"If-Match": current.headers["ETag"]},
            )
            if answer.status == 200:
                done += 1
            elif answer.error_code != "precondition_failed":
                errors.append(f"write {answer.status} {answer.body!r}")
                return
        successes.append(done)

    threads = [threading.Thread(target=worker, args=(pop,)) for pop in pops for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    total = sum(successes)
    assert total == 16 * per_worker
    final = pops[1].request("GET", "/v1/kv/bank/counter?consistency=strong")
    assert int(final.body) == total
    # Both PoPs' local copies converge on it too.
    for pop in pops:

        def converged(pop: NodeProcess = pop) -> bool:
            return pop.request("GET", "/v1/kv/bank/counter").body == final.body

        wait_for(converged)


def test_create_only_succeeds_once(start_node: StartNode, pg_schema: str) -> None:
    pops = [strong_node(start_node, "a", pg_schema), strong_node(start_node, "b", pg_schema)]
    results: list[int] = []

    def create(node: NodeProcess, value: str) -> None:
        answer = node.request(
            "PUT", "/v1/kv/bank/owner", body=value, headers={"If-None-Match": "*"}
        )
        results.append(answer.status)

    threads = [
        threading.Thread(target=create, args=(pop, f"{i}")) for i in range(6) for pop in pops
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [200] + [409] * 11


def test_failed_condition_answers_the_current_version(
    start_node: StartNode, pg_schema: str
) -> None:
    node = strong_node(start_node, "a", pg_schema)
    written = node.request("PUT", "/v1/kv/bank/k", body=b"1").json()
    stale = "0" * 32
    answer = node.request("PUT", "/v1/kv/bank/k", body=b"2", headers={"If-Match": f'"{stale}"'})
    assert_conflict(answer)
    assert answer.json()["error"]["version"] == written["version"]
    answer = node.request("DELETE", "/v1/kv/bank/k", headers={"If-None-Match": "*"})
    assert_conflict(answer)
    answer = node.request("DELETE", "/v1/kv/bank/k", headers={"If-Match": written["version"]})
    assert answer.status == 200
    answer = node.request("PUT", "/v1/kv/bank/k", body=b"3", headers={"If-Match": "*"})
    assert_conflict(answer)
    assert answer.json()["error"]["version"] is None
    assert node.request("GET", "/v1/kv/bank/k?consistency=strong").status == 404


def test_transaction_applies_all_or_nothing(start_node: StartNode, pg_schema: str) -> None:
    a = strong_node(start_node, "a", pg_schema)
    b = strong_node(start_node, "b", pg_schema, declare=False)  # learns "bank" from PostgreSQL
    wait_for(
        lambda: (
            "bank" in b.request("GET", "/v1/cluster/status").json()["upstream"]["strong_namespaces"]
        ),
        what="b learns the declaration",
    )
    alice = a.request("PUT", "/v1/kv/bank/alice", body=b"100").json()["version"]
    bob = a.request("PUT", "/v1/kv/bank/bob", body=b"0").json()["version"]
    transfer = {
        "conditions": [{"key": "alice", "version": alice}, {"key": "bob", "version": bob}],
        "operations": [
            {"op": "put", "key": "alice", "value": "NzA="},  # "70"
            {"op": "put", "key": "bob", "value": "MzA="},  # "30"
            {"op": "put", "key": "log", "value": "MQ=="},
        ],
    }
    assert b.request("POST", "/v1/kv/bank/_txn", json_body=transfer).status == 200
    # The same transfer again: its conditions no longer hold, so nothing changes.
    again = b.request("POST", "/v1/kv/bank/_txn", json_body=transfer)
    assert_conflict(again)
    assert {f["key"] for f in again.json()["error"]["failed"]} == {"alice", "bob"}
    create = {
        "conditions": [{"key": "carol", "exists": False}, {"key": "alice", "exists": True}],
        "operations": [
            {"op": "put", "key": "carol", "value": "MA=="},
            {"op": "delete", "key": "log"},
        ],
    }
    assert a.request("POST", "/v1/kv/bank/_txn", json_body=create).status == 200
    for key, value in (("alice", b"70"), ("bob", b"30"), ("carol", b"0")):
        assert a.request("GET", f"/v1/kv/bank/{key}?consistency=strong").body == value
    assert a.request("GET", "/v1/kv/bank/log?consistency=strong").status == 404
    wait_for(lambda: b.request("GET", "/v1/kv/bank/carol").body == b"0", what="replicated to b")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "code"),
    [
        ("PUT", "/v1/kv/app/k", {"If-Match": "*"}, b"x", "strong_namespace_required"),
        ("PUT", "/v1/kv/app/k", {"If-None-Match": "*"}, b"x", "strong_namespace_required"),
        ("DELETE", "/v1/kv/app/k", {"If-Match": "*"}, None, "strong_namespace_required"),
        ("GET", "/v1/kv/app/k?consistency=strong", {}, None, "strong_namespace_required"),
        ("POST", "/v1/kv/app/_txn", {}, b"{}", "strong_namespace_required"),
        ("GET", "/v1/kv/bank/k?consistency=linear", {}, None, "invalid_parameter"),
        ("PUT", "/v1/kv/bank/k", {"If-Match": '"nope"'}, b"x", "invalid_request"),
        ("PUT", "/v1/kv/bank/k", {"If-None-Match": '"abc"'}, b"x", "invalid_request"),
        ("PUT", "/v1/kv/bank/k", {"If-Match": "*", "If-None-Match": "*"}, b"x", "invalid_request"),
        ("POST", "/v1/kv/bank/_txn", {}, b"[", "invalid_json"),
        ("POST", "/v1/kv/bank/_txn", {}, b'{"operations": []}', "invalid_json"),
        ("POST", "/v1/kv/bank/_txn", {}, b'{"operations": [{"op": "put"}]}', "invalid_key"),
        (
            "POST",
            "/v1/kv/bank/_txn",
            {},
            b'{"conditions": [{"key": "a"}], "operations": [{"op": "delete", "key": "a"}]}',
            "invalid_json",
        ),
        (
            "POST",
            "/v1/kv/bank/_txn",
            {},
            b'{"conditions": [{"key": "a", "version": "zz"}],'
            b' "operations": [{"op": "delete", "key": "a"}]}',
            "invalid_request",
        ),
        ("POST", "/v1/kv/bank/_txn", {}, b'{"operations": [], "extra": 1}', "invalid_json"),
    ],
)
def test_bad_strong_requests_are_refused_whole(
    shared_strong_node: NodeProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    code: str,
) -> None:
    answer = shared_strong_node.request(method, path, body=body, headers=headers)
    assert_error(answer, code)
    assert shared_strong_node.request("GET", "/v1/kv/bank/k").status == 404
    assert shared_strong_node.request("GET", "/v1/kv/app/k").status == 404


@pytest.fixture(scope="module")
def shared_strong_node(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas_dropped: None
) -> Iterator[NodeProcess]:
    """One node with strong namespace ``bank`` for the bad-input cases."""
    schema = f"{PREFIX}strong"
    query(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    node = NodeProcess(
        tmp_path_factory.mktemp("strong"),
        ["--upstream", DSN, "--upstream-schema", schema, "--strong-namespaces", "bank"],
    ).start()
    wait_for(lambda: _upstream_state(node) == "up", what="upstream connected")
    yield node
    node.kill()


def test_a_learned_strong_namespace_stays_strong_while_postgres_is_away(
    start_node: StartNode, pg_schema: str, pg_proxy: TcpProxy
) -> None:
    strong_node(start_node, "a", pg_schema)  # declares "bank"
    b = start_node("b", ["--upstream", via(pg_proxy), "--upstream-schema", pg_schema])
    wait_for(
        lambda: (
            "bank" in b.request("GET", "/v1/cluster/status").json()["upstream"]["strong_namespaces"]
        ),
        what="b learns the declaration",
    )
    b.stop()
    pg_proxy.cut()
    b.start()
    answer = b.request("PUT", "/v1/kv/bank/k", body=b"local?")
    assert (answer.status, answer.error_code) == (503, "upstream_unavailable")
    assert b.request("PUT", "/v1/kv/app/k", body=b"eventual").status == 200


def test_clients_speak_conditions_transactions_and_strong_reads(
    shared_strong_node: NodeProcess,
) -> None:
    with Client(shared_strong_node.url) as client:
        created = client.put("bank", "c1", "10", if_none_match=True)
        with pytest.raises(PreconditionFailed) as failed:
            client.put("bank", "c1", "11", if_none_match=True)
        assert failed.value.current_version == created["version"]
        updated = client.put("bank", "c1", "11", if_match=created["version"])
        assert client.get("bank", "c1", consistency="strong") == b"11"
        with pytest.raises(PreconditionFailed):
            client.delete("bank", "c1", if_match=created["version"])
        client.transaction(
            "bank",
            [{"op": "put", "key": "c2", "value": b"1"}, {"op": "delete", "key": "c1"}],
            [{"key": "c1", "version": updated["version"]}, {"key": "c2", "exists": False}],
        )
        assert client.get("bank", "c1", consistency="strong") is None
        with pytest.raises(InvalidRequest):
            client.put("app", "c1", "x", if_match="*")

    async def run() -> None:
        async with AsyncClient(shared_strong_node.url) as client:
            answer = await client.put("bank", "c3", "1", if_none_match=True)
            await client.put("bank", "c3", "2", if_match=answer["version"])
            assert await client.get("bank", "c3", consistency="strong") == b"2"
            with pytest.raises(PreconditionFailed):
                await client.transaction(
                    "bank", [{"op": "delete", "key": "c3"}], [{"key": "c3", "exists": False}]
                )
            await client.delete("bank", "c3", if_match="*")

    asyncio.run(run())


def test_conditional_writes_are_never_retried() -> None:
    plain = _core.put_request("bank", "k", b"v", None)
    conditional = _core.put_request("bank", "k", b"v", None, if_match="0" * 32)
    assert plain.idempotent
    assert not conditional.idempotent
    assert conditional.headers["If-Match"] == f'"{"0" * 32}"'
    assert not _core.delete_request("bank", "k", None, if_match="*").idempotent


def test_cluster_status_shows_the_upstream(shared_strong_node: NodeProcess) -> None:
    table = subprocess.run(
        [sys.executable, "-m", "edgekv", "cluster", "status", "--url", shared_strong_node.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("upstream"))
    assert " up " in f"{row} "
    assert "postgresql://" in row
