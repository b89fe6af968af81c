"""The harness's checkers on hand-made histories: each bug must be caught, correct runs pass."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

from jepsen_like.history import History, pairs
from jepsen_like.linearizability import Call, check_register
from jepsen_like.nemesis import PARTITION_MODES, parse_nemeses, partition_links, plan
from jepsen_like.workloads.cas import check_cas
from jepsen_like.workloads.delete_readd import check_delete_readd
from jepsen_like.workloads.documents import check_documents
from jepsen_like.workloads.register import check_register as check_lww_register
from jepsen_like.workloads.session import check_session
from jepsen_like.workloads.set import check_set
from jepsen_like.workloads.watch import check_watch


class Builder:
    """Operations with explicit times, as a run would record them."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self._index = itertools.count()

    def op(
        self, process: int, f: str, start: float, end: float | None, kind: str = "ok", **fields: Any
    ) -> None:
        """An invocation at ``start`` and its completion at ``end`` (None: never completed)."""
        base = {"process": process, "f": f, "node": fields.pop("node", 0)}
        given: dict[str, Any] = {
            k: fields.pop(k) for k in ("key", "value", "expected", "where") if k in fields
        }
        self.ops.append({**base, **given, "type": "invoke", "time": start})
        if end is not None:
            self.ops.append({**base, **given, "type": kind, "time": end, **fields})

    def done(self) -> list[dict[str, Any]]:
        ordered = sorted(self.ops, key=lambda op: op["time"])
        for op in ordered:
            op["index"] = next(self._index)
        return ordered


def v(hlc: int, node: int = 1) -> str:
    return f"{hlc:016x}{node:016x}"


# -- set ------------------------------------------------------------------------


def test_set_passes_when_every_acknowledged_add_is_everywhere() -> None:
    b = Builder()
    b.op(0, "add", 0.0, 0.1, value=1, node=0)
    b.op(1, "add", 0.0, 0.1, value=2, node=1)
    b.op(0, "read", 0.2, 0.3, value=[1, 2], node=0)
    result = check_set(b.done(), {"nodes": {"n0": [1, 2], "n1": [1, 2]}})
    assert result["valid"] is True, result
    assert result["stale_elsewhere_count"] == 0
    assert result["lost_count"] == 0


def test_set_catches_a_lost_write() -> None:
    b = Builder()
    b.op(0, "add", 0.0, 0.1, value=1, node=0)
    b.op(1, "add", 0.0, 0.1, value=2, node=1)
    result = check_set(b.done(), {"nodes": {"n0": [1, 2], "n1": [1]}})
    assert result["valid"] is False
    assert result["lost"] == [{"element": 2, "added_at": 1, "missing_at": ["n1"]}]


def test_set_does_not_call_a_read_before_the_add_stale_when_a_slow_read_saw_it() -> None:
    b = Builder()
    b.op(1, "read", 0.9, 1.3, value=[1], node=1)  # a slow read, overlapping the add
    b.op(0, "read", 1.0, 1.1, value=[], node=0)  # before the add, at the adding PoP
    b.op(0, "add", 1.2, 1.25, value=1, node=0)
    b.op(0, "read", 1.4, 1.5, value=[], node=0)  # after it: stale at the adding PoP
    result = check_set(b.done(), {"nodes": {"n0": [1], "n1": [1]}})
    assert result["stale_same_node"] == [{"element": 1, "read": 6}], result
    assert result["valid"] is False


def test_set_does_not_count_an_unknown_add_as_lost() -> None:
    b = Builder()
    b.op(0, "add", 0.0, 3.0, "info", value=1, node=0)
    b.op(1, "add", 0.0, None, value=2, node=1)
    result = check_set(b.done(), {"nodes": {"n0": [], "n1": []}})
    assert result["valid"] is True, result
    assert result["unknown"] == 2
    assert result["never_read_count"] == 2


def test_set_catches_a_stale_read_at_the_acknowledging_node() -> None:
    b = Builder()
    b.op(0, "add", 0.0, 0.1, value=1, node=0)
    b.op(1, "read", 0.5, 0.6, value=[], node=0)
    result = check_set(b.done(), {"nodes": {"n0": [1], "n1": [1]}})
    assert result["valid"] is False
    assert result["stale_same_node_count"] == 1


def test_set_counts_a_lagging_read_elsewhere_without_failing() -> None:
    b = Builder()
    b.op(0, "add", 0.0, 0.1, value=1, node=0)
    b.op(1, "read", 0.5, 0.6, value=[], node=1)
    b.op(1, "read", 1.0, 1.1, value=[1], node=1)
    result = check_set(b.done(), {"nodes": {"n0": [1], "n1": [1]}, "time": 2.0})
    assert result["valid"] is True
    assert result["stale_elsewhere_count"] == 1
    assert result["stable_latency_s"]["max"] == 1.0


# -- register -------------------------------------------------------------------


def test_register_passes_when_the_highest_stamp_wins_everywhere() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="r", value="a", version=v(10), node=0)
    b.op(1, "write", 0.0, 0.1, key="r", value="b", version=v(20, 2), node=1)
    final = {"nodes": {"n0": {"r": ["b", v(20, 2)]}, "n1": {"r": ["b", v(20, 2)]}}}
    assert check_lww_register(b.done(), final)["valid"] is True


def test_register_catches_a_lower_stamp_winning() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="r", value="a", version=v(10), node=0)
    b.op(1, "write", 0.0, 0.1, key="r", value="b", version=v(20, 2), node=1)
    final = {"nodes": {"n0": {"r": ["a", v(10)]}, "n1": {"r": ["a", v(10)]}}}
    result = check_lww_register(b.done(), final)
    assert result["valid"] is False
    assert result["lost_writes"] == 1


def test_register_catches_disagreement_and_invented_values() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="r", value="a", version=v(10), node=0)
    b.op(0, "write", 0.0, 0.1, key="q", value="c", version=v(11), node=0)
    final = {
        "nodes": {
            "n0": {"r": ["a", v(10)], "q": ["zzz", v(99)]},
            "n1": {"r": None, "q": ["zzz", v(99)]},
        }
    }
    errors = {e["error"] for e in check_lww_register(b.done(), final)["errors"]}
    assert errors == {"nodes disagree", "final value never written"}


def test_register_catches_a_read_going_back_at_one_node() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="r", value="a", version=v(10), node=0)
    b.op(1, "write", 0.0, 0.1, key="r", value="b", version=v(20), node=0)
    b.op(2, "read", 0.5, 0.6, key="r", value="a", version=v(10), node=0)
    final = {"nodes": {"n0": {"r": ["b", v(20)]}}}
    result = check_lww_register(b.done(), final)
    assert [e["error"] for e in result["errors"]] == ["read went back in time at one PoP"]


# -- session --------------------------------------------------------------------


def test_session_catches_a_stale_read_after_its_own_write() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="s", value="x", version=v(50), node=0)
    b.op(0, "read", 0.2, 0.3, key="s", value="old", version=v(40), node=1)
    final: dict[str, Any] = {"nodes": {"n0": {}, "n1": {}}}
    result = check_session(b.done(), final)
    assert result["valid"] is False
    assert result["read_your_writes_violations"] == 1


def test_session_catches_non_monotonic_reads_but_not_other_sessions() -> None:
    b = Builder()
    b.op(0, "read", 0.0, 0.1, key="s", value="new", version=v(50), node=0)
    b.op(0, "read", 0.2, 0.3, key="s", value="old", version=v(40), node=1)
    b.op(1, "read", 0.2, 0.3, key="s", value="old", version=v(40), node=1)
    result = check_session(b.done(), {"nodes": {"n0": {}}})
    assert result["monotonic_read_violations"] == 1
    assert [x["read"] for x in result["violations"]] == [4]  # process 0's second read


def test_session_ignores_a_read_concurrent_with_the_write() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.5, key="s", value="x", version=v(50), node=0)
    b.op(0, "read", 0.2, 0.3, key="s", value=None, version=None, node=1)
    assert check_session(b.done(), {"nodes": {"n0": {}}})["valid"] is True


# -- documents ------------------------------------------------------------------


def test_documents_catch_a_missing_acknowledged_edit() -> None:
    b = Builder()
    b.op(0, "edit", 0.0, 0.1, key="d0", value="t0_1", where="top", node=0)
    b.op(1, "edit", 0.0, 0.1, key="d0", value="t1_1", where="nested", node=1)
    good = {"t0_1": 1, "nested": {"t1_1": 1}}
    bad = {"t0_1": 1, "nested": {}}
    ops = b.done()
    assert check_documents(ops, {"nodes": {"n0": {"d0": good}, "n1": {"d0": good}}})["valid"]
    result = check_documents(ops, {"nodes": {"n0": {"d0": good}, "n1": {"d0": bad}}})
    assert result["valid"] is False
    assert result["missing"] == [{"node": "n1", "doc": "d0", "token": "t1_1"}]


# -- delete / re-add -------------------------------------------------------------


def _delete_history() -> list[dict[str, Any]]:
    b = Builder()
    b.op(0, "put", 0.0, 0.1, key="k", value="a", version=v(10), node=0)
    b.op(1, "delete", 0.2, 0.3, key="k", version=v(20), node=1)
    return b.done()


def test_delete_readd_passes_when_the_delete_sticks() -> None:
    final = {
        "nodes": {"n0": {"k": None}, "n1": {"k": None}},
        "settled": {"after_collection": {"nodes": {"n0": {"k": None}, "n1": {"k": None}}}},
    }
    assert check_delete_readd(_delete_history(), final)["valid"] is True


def test_delete_readd_catches_a_resurrected_delete_after_collection() -> None:
    back = {"n0": {"k": ["a", v(10)]}, "n1": {"k": ["a", v(10)]}}
    final = {
        "nodes": {"n0": {"k": None}, "n1": {"k": None}},
        "settled": {"after_collection": {"nodes": back}},
    }
    result = check_delete_readd(_delete_history(), final)
    assert result["valid"] is False
    assert result["resurrected"] == 1
    assert result["errors"][0]["when"] == "after tombstone collection"


def test_delete_readd_catches_a_lost_readd() -> None:
    b = Builder()
    b.op(1, "delete", 0.0, 0.1, key="k", version=v(20), node=1)
    b.op(0, "put", 0.2, 0.3, key="k", value="a", version=v(30), node=0)
    result = check_delete_readd(b.done(), {"nodes": {"n0": {"k": None}, "n1": {"k": None}}})
    assert result["valid"] is False
    assert result["lost"] == 1


# -- cas / linearizability -------------------------------------------------------


def test_cas_catches_two_successful_creates() -> None:
    b = Builder()
    b.op(0, "cas", 0.0, 0.1, key="c", value="a", expected=None, version=v(10))
    b.op(1, "cas", 0.2, 0.3, key="c", value="b", expected=None, version=v(20))
    result = check_cas(b.done(), {"nodes": {}, "strong": {}})
    assert result["valid"] is False
    assert result["per_key"]["c"]["linearizable"] is False


def test_cas_catches_a_read_of_an_overwritten_value() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="c", value="a", version=v(10))
    b.op(1, "cas", 0.2, 0.3, key="c", value="b", expected="a", version=v(20))
    b.op(2, "read", 0.4, 0.5, key="c", value="a")
    assert check_cas(b.done(), {"nodes": {}, "strong": {}})["linearizable"] is False


def test_cas_accepts_concurrent_operations_in_some_order_and_unknown_writes() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 1.0, key="c", value="a", version=v(10))
    b.op(1, "cas", 0.1, 0.9, key="c", value="b", expected="a", version=v(20))
    b.op(2, "read", 0.2, 0.3, key="c", value=None)
    b.op(3, "write", 1.1, 5.0, "info", key="c", value="z", error="upstream_unavailable")
    b.op(2, "read", 1.2, 1.3, key="c", value="b")
    b.op(2, "read", 6.0, 6.1, key="c", value="z")
    b.op(1, "cas", 6.2, 6.3, "fail", key="c", value="q", expected="b", error="precondition_failed")
    strong = {"c": ["z", v(30)]}
    result = check_cas(b.done(), {"nodes": {"n0": strong}, "strong": strong})
    assert result["valid"] is True, result


def test_linearizability_search_stops_at_its_deadline() -> None:
    rng = random.Random(1)
    calls = [
        Call("write", i, None, rng.uniform(0, 1), rng.uniform(100, 101)) for i in range(40)
    ] + [Call("read", -1, None, 102, 103)]
    # 40 concurrent writes and a read of a value none wrote: 2**40 orders to rule out.
    assert check_register(calls, None, deadline=time.monotonic() + 0.5) is None
    assert check_register(calls[:8] + calls[-1:], None) is False


# -- history and nemesis planning -------------------------------------------------


def test_history_pairs_completions_with_their_invocations() -> None:
    history = History()
    first = history.invoke(0, "write", key="a")
    second = history.invoke(1, "read", key="a")
    history.complete(second, "ok", value=None)
    history.complete(first, "info", error="timeout")
    history.invoke(0, "read", key="a")
    kinds = [(inv["f"], c["type"] if c else None) for inv, c in pairs(history.ops())]
    assert kinds == [("write", "info"), ("read", "ok"), ("read", None)]
    times = [op["time"] for op in history.ops()]
    assert times == sorted(times)


def test_the_same_seed_plans_the_same_faults() -> None:
    kinds = parse_nemeses("all")
    first = plan(random.Random("7:nemesis"), kinds, 5, 300)
    again = plan(random.Random("7:nemesis"), kinds, 5, 300)
    other = plan(random.Random("8:nemesis"), kinds, 5, 300)
    assert [f.as_json() for f in first] == [f.as_json() for f in again]
    assert [f.as_json() for f in first] != [f.as_json() for f in other]
    assert {f.kind for f in first} == set(kinds)
    assert all(a.end < b.start for a, b in itertools.pairwise(first))


def test_partition_modes_cut_what_they_say() -> None:
    rng = random.Random(3)
    n = 5
    for mode in PARTITION_MODES:
        cut = partition_links(rng, mode, n)
        hears = {i: {j for j in range(n) if j != i and (i, j) not in cut} for i in range(n)}
        if mode == "isolate":
            assert sorted(len(h) for h in hears.values()) == [0, 3, 3, 3, 3]
        elif mode == "ring":
            # Everyone hears from a majority (with itself), no one from everyone.
            assert all(len(h) + 1 == 3 for h in hears.values())
        elif mode == "bridge":
            assert sorted(len(h) for h in hears.values()) == [2, 2, 2, 2, 4]
        elif mode == "one-way":
            assert any((j, i) not in cut for i, j in cut)
        elif mode == "halves":
            assert all((j, i) in cut for i, j in cut)


def test_cas_drops_unknown_writes_nobody_observed() -> None:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="c", value="a", version=v(10))
    b.op(1, "write", 0.2, 9.0, "info", key="c", value="lost", error="upstream_unavailable")
    b.op(2, "read", 0.3, 0.4, key="c", value="a")
    b.op(2, "read", 9.5, 9.6, key="c", value="a")
    result = check_cas(b.done(), {"nodes": {}, "strong": {}})
    assert result["valid"] is True
    assert result["per_key"]["c"]["calls"] == 3


def _watch_final(views: list[dict[str, list[str]]], backwards: int = 0) -> dict[str, Any]:
    final = {"k1": ["0002", "put"], "k2": ["0003", "delete"]}
    watchers = [
        {"view": view, "backwards": [], "backwards_count": backwards, "events": 3, "moves": 1,
         "relists": 0, "pops": [0]}
        for view in views
    ]  # fmt: skip
    return {"settled": {"final": final, "watchers": watchers}}


def _watch_ops() -> list[dict[str, Any]]:
    b = Builder()
    b.op(0, "write", 0.0, 0.1, key="k1", value="0.1")
    b.op(1, "delete", 0.0, 0.1, key="k2")
    return b.done()


def test_watch_passes_when_every_watcher_ends_at_the_final_state() -> None:
    agreeing = {"k1": ["0002", "put"], "k2": ["0003", "delete"]}
    never_saw_the_deleted_key = {"k1": ["0002", "put"]}
    result = check_watch(_watch_ops(), _watch_final([agreeing, never_saw_the_deleted_key]))
    assert result["valid"] is True
    assert result["wrong_count"] == 0


def test_watch_catches_a_missed_final_version_and_a_missed_delete() -> None:
    stale = {"k1": ["0001", "put"], "k2": ["0003", "delete"]}
    missed_delete = {"k1": ["0002", "put"], "k2": ["0001", "put"]}
    result = check_watch(_watch_ops(), _watch_final([stale, missed_delete]))
    assert result["valid"] is False
    assert {(w["watcher"], w["key"]) for w in result["wrong"]} == {(0, "k1"), (1, "k2")}


def test_watch_catches_a_version_going_back() -> None:
    agreeing = {"k1": ["0002", "put"], "k2": ["0003", "delete"]}
    result = check_watch(_watch_ops(), _watch_final([agreeing], backwards=1))
    assert result["valid"] is False
    assert result["backwards_count"] == 1
