"""The shared client conformance scenarios (tests/conformance/client.json), via the Python client.

The JS client runs the same file (client-js/test/conformance.test.mjs), so the
two clients answer every scenario alike.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edgekv_client
from edgekv.auth import new_token, token_toml
from edgekv_client import Client
from testkit.pg import DSN, PREFIX
from testkit.processes import NodeProcess
from testkit.waiting import wait_for

SCENARIOS = json.loads(
    (Path(__file__).parent / "conformance" / "client.json").read_text(encoding="utf-8")
)["scenarios"]


class Clients:
    """An admin client, a read-only one and one without a token, all at one node."""

    def __init__(self, url: str, admin: str, reader: str) -> None:
        self.by_role = {
            "admin": Client(url, admin, retries=0),
            "reader": Client(url, reader, retries=0),
            "nobody": Client(url, None, retries=0),
        }

    def close(self) -> None:
        for client in self.by_role.values():
            client.close()


@pytest.fixture(scope="module")
def clients(
    tmp_path_factory: pytest.TempPathFactory, pg_schemas_dropped: None
) -> Iterator[Clients]:
    base = tmp_path_factory.mktemp("conformance")
    admin, reader = new_token(), new_token()
    config = base / "edgekv.toml"
    config.write_text(token_toml("admin", admin, ["admin"]) + token_toml("r", reader, ["read:*"]))
    secret = base / "secret"
    secret.write_text("conformance-secret\n")
    args = ["--config", str(config), "--cluster-secret-file", str(secret)]
    args += ["--upstream", DSN, "--upstream-schema", f"{PREFIX}conformance"]
    node = NodeProcess(base / "node", [*args, "--strong-namespaces", "bank"]).start()
    node.token = admin
    wait_for(
        lambda: node.request("GET", "/v1/cluster/status").json()["upstream"]["state"] == "up",
        what="upstream connected",
    )
    opened = Clients(node.url, admin, reader)
    yield opened
    opened.close()
    node.kill()


def expand(item: Any) -> Any:
    """The scenario's generators (``{"repeat", "count"}``) expanded, recursively."""
    if isinstance(item, dict):
        if set(item) == {"repeat", "count"}:
            return item["repeat"] * item["count"]
        if set(item) == {"names", "count"}:
            return [f"{item['names']}{i}" for i in range(item["count"])]
        return {name: expand(value) for name, value in item.items()}
    if isinstance(item, list):
        return [expand(value) for value in item]
    return item


def value_bytes(value: dict[str, str]) -> bytes:
    if "base64" in value:
        return base64.b64decode(value["base64"])
    return str(value["text"]).encode("utf-8")


def same_value(got: bytes | None, want: dict[str, str] | None) -> bool:
    return got is None if want is None else got == value_bytes(want)


class Runner:
    """Runs one scenario's steps, remembering saved versions and cursors."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.saved: dict[str, Any] = {}

    def ref(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            return self.saved[value[1:]]
        return value

    def operations(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**op, "value": value_bytes(op["value"])} if "value" in op else op for op in ops]

    def call(self, step: dict[str, Any]) -> Any:
        kv: Any = self.clients.by_role[step.get("as", "admin")]
        name = step["call"]
        if name.startswith("doc_"):
            return self.doc_call(kv.docs(step["collection"]), name, step)
        if name.startswith(("counter_", "set_")):
            return self.crdt_call(kv, name, step)
        ns, key = step["ns"], step.get("key")
        if name == "put":
            return kv.put(
                ns,
                key,
                value_bytes(step["value"]),
                ttl=step.get("ttl"),
                expiration=step.get("expiration"),
                metadata=step.get("metadata"),
                if_match=self.ref(step.get("if_match")),
                if_none_match=step.get("if_none_match", False),
            )
        if name == "get":
            return kv.get(ns, key, consistency=step.get("consistency"))
        if name == "get_with_metadata":
            return kv.get_with_metadata(ns, key)
        if name == "delete":
            return kv.delete(ns, key, if_match=self.ref(step.get("if_match")))
        if name == "list":
            return kv.list_page(
                ns, step.get("prefix", ""), step.get("limit"), self.ref(step.get("cursor"))
            )
        if name == "get_many":
            return kv.get_many(ns, step["keys"])
        if name == "bulk":
            return kv.bulk(ns, self.operations(step["operations"]))
        if name == "transaction":
            conditions = [
                {**c, "version": self.ref(c["version"])} if "version" in c else c
                for c in step.get("conditions", [])
            ]
            return kv.transaction(ns, self.operations(step["operations"]), conditions)
        raise AssertionError(f"unknown call {name}")

    def doc_call(self, docs: Any, name: str, step: dict[str, Any]) -> Any:
        if name == "doc_put":
            return docs.put(step["id"], step["doc"])
        if name == "doc_patch":
            return docs.patch(step["id"], step["patch"])
        if name == "doc_delete":
            return docs.delete(step["id"])
        if name == "doc_get":
            return docs.get(step["id"])
        if name == "doc_query":
            where = step.get("where", ())
            if isinstance(where, list):
                where = [tuple(item) if isinstance(item, list) else item for item in where]
            return docs.query_page(
                where, step.get("order_by"), step.get("limit"), self.ref(step.get("cursor"))
            )
        if name == "doc_create_index":
            return docs.create_index(step["field"])
        if name == "doc_indexes":
            return docs.indexes()
        raise AssertionError(f"unknown call {name}")

    def crdt_call(self, kv: Any, name: str, step: dict[str, Any]) -> Any:
        counter, members = kv.counter(step["ns"], step["key"]), kv.set(step["ns"], step["key"])
        if name == "counter_add":
            return counter.add(
                int(step["add"]),  # a string past 2^53 (see the README)
                ttl=step.get("ttl"),
                expiration=step.get("expiration"),
                minimum=step.get("min"),
                maximum=step.get("max"),
            )
        if name == "counter_value":
            return counter.value()
        if name == "counter_reset":
            return counter.reset()
        if name == "set_add":
            return members.add(*step["members"])
        if name == "set_remove":
            return members.remove(*step["members"])
        if name == "set_clear":
            return members.clear()
        if name == "set_members":
            return members.page(step.get("prefix"), step.get("limit"), self.ref(step.get("cursor")))
        raise AssertionError(f"unknown call {name}")

    def run(self, step: dict[str, Any]) -> None:
        expect = step["expect"]
        error: edgekv_client.ApiError | None = None
        try:
            result = self.call(step)
        except edgekv_client.ApiError as exc:
            result, error = None, exc
        if error is not None:
            self.check_error(expect, error)
            return
        assert "error" not in expect, f"expected {expect['error']}, got {result!r}"
        self.check(step, expect, result)

    def check_error(self, expect: dict[str, Any], error: edgekv_client.ApiError) -> None:
        assert "error" in expect, f"unexpected {error!r}"
        assert error.code == expect["error"]
        assert isinstance(error, getattr(edgekv_client, expect["family"]))
        if "current_version" in expect:
            assert isinstance(error, edgekv_client.PreconditionFailed)
            assert error.current_version == self.ref(expect["current_version"])
        if "failed_keys" in expect:
            assert [item["key"] for item in error.details["failed"]] == expect["failed_keys"]
        for field, want in expect.get("details", {}).items():
            assert error.details[field] == want, error.details

    def check(self, step: dict[str, Any], expect: dict[str, Any], result: Any) -> None:
        if "save_version" in step:
            self.saved[step["save_version"]] = result["version"]
        if "save_cursor" in step:
            self.saved[step["save_cursor"]] = result.cursor
        if "ok" in expect:
            assert isinstance(result, dict)
            assert "bookmark" in result
        if "value" in expect:
            assert same_value(result, expect["value"]), result
        if "entry" in expect:
            self.check_entry(result, expect["entry"])
        if "names" in expect:
            assert [item["name"] for item in result.keys] == expect["names"]
        if "list_complete" in expect:
            assert result.list_complete == expect["list_complete"]
        if "entries" in expect:
            assert set(result) == set(expect["entries"])
            for name, want in expect["entries"].items():
                assert same_value(result[name].value if result[name] else None, want)
        if "doc" in expect:
            assert (result.doc if result else None) == expect["doc"]
        if "ids" in expect:
            assert [d.id for d in result.documents] == expect["ids"]
        if "index" in expect:
            assert result["field"] == expect["index"]
        if "fields" in expect:
            assert [index["field"] for index in result] == expect["fields"]
        if "counter_value" in expect:
            assert result == expect["counter_value"]
        if "members" in expect:
            assert result.members == expect["members"]

    @staticmethod
    def check_entry(entry: Any, want: dict[str, Any] | None) -> None:
        if want is None:
            assert entry is None
            return
        assert same_value(entry.value, want["value"])
        assert entry.metadata == want["metadata"]
        for field in ("expiration", "version"):
            got = getattr(entry, field)
            assert got is not None if want[field] == "set" else got == want[field]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_conformance_scenario(clients: Clients, scenario: dict[str, Any]) -> None:
    runner = Runner(clients)
    for index, step in enumerate(expand(scenario["steps"])):
        try:
            runner.run(step)
        except AssertionError as exc:
            raise AssertionError(f"step {index} ({step['call']}): {exc}") from exc


def test_every_scenario_name_is_unique() -> None:
    names = [s["name"] for s in SCENARIOS]
    assert len(names) == len(set(names))
    assert time.time() < 4102444800, "the scenarios' absolute expiration must lie in the future"
