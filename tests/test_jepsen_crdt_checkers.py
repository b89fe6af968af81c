"""The counter and orset checkers on hand-made histories: each bug is caught, correct runs pass."""

from __future__ import annotations

from jepsen_like.workloads.counter import check_counter, reachable_sums
from jepsen_like.workloads.orset import check_orset
from tests.test_jepsen_checkers import Builder


def test_reachable_sums_are_every_subset_sum() -> None:
    assert reachable_sums([1, -2, 5]) == {0, 1, -2, 5, -1, 6, 3, 4}


def _counter_history() -> Builder:
    h = Builder()
    h.op(0, "add", 0.0, 0.1, value=5, node=0)
    h.op(1, "add", 0.0, 0.1, value=-2, node=1)
    h.op(2, "add", 0.2, None, kind="info", value=3, node=2)  # outcome unknown
    h.op(0, "read", 0.3, 0.4, value=5, node=0)  # its own add, not yet the other
    h.op(1, "read", 0.3, 0.4, value=3, node=1)
    return h


def test_a_correct_counter_history_passes_with_or_without_the_unknown_add() -> None:
    ops = _counter_history().done()
    for final in (3, 6):
        result = check_counter(ops, {"nodes": {"n0": final, "n1": final}})
        assert result["valid"], result


def test_a_lost_acknowledged_add_is_caught() -> None:
    result = check_counter(_counter_history().done(), {"nodes": {"n0": -2, "n1": -2}})
    assert not result["valid"]
    assert result["wrong_final"] == {"n0": -2, "n1": -2}


def test_a_read_missing_its_own_pops_acknowledged_add_is_caught() -> None:
    h = _counter_history()
    h.op(3, "read", 0.5, 0.6, value=-2, node=0)  # n0 acknowledged +5 before this read
    result = check_counter(h.done(), {"nodes": {"n0": 3, "n1": 3}})
    assert result["reads_out_of_bounds_count"] == 1


def test_a_read_counting_an_add_never_attempted_is_caught() -> None:
    h = _counter_history()
    h.op(3, "read", 0.05, 0.06, value=100, node=2)
    assert not check_counter(h.done(), {"nodes": {"n0": 3, "n1": 3}})["valid"]


def test_a_correct_orset_history_passes() -> None:
    h = Builder()
    h.op(0, "add", 0.0, 0.1, value="a", node=0)
    h.op(1, "remove", 0.05, 0.15, value="a", node=1)  # concurrent: the add may win
    h.op(2, "add", 0.2, 0.3, value="b", node=2)
    h.op(2, "remove", 0.4, 0.5, value="b", node=2)  # saw its own add: b goes
    h.op(0, "read", 0.2, 0.25, value=["a"], node=0)
    result = check_orset(h.done(), {"nodes": {"n0": ["a"], "n1": ["a"]}})
    assert result["valid"], result


def test_an_add_no_remove_could_see_must_win() -> None:
    h = Builder()
    h.op(1, "remove", 0.0, 0.1, value="a", node=1)
    h.op(0, "add", 0.2, 0.3, value="a", node=0)
    result = check_orset(h.done(), {"nodes": {"n0": [], "n1": []}})
    assert result["lost_adds"]


def test_a_remove_that_saw_every_add_must_remove() -> None:
    h = Builder()
    h.op(0, "add", 0.0, 0.1, value="a", node=0)
    h.op(0, "remove", 0.2, 0.3, value="a", node=0)
    result = check_orset(h.done(), {"nodes": {"n0": ["a"], "n1": ["a"]}})
    assert result["lost_removes"]


def test_a_phantom_and_a_missed_own_add_are_caught() -> None:
    h = Builder()
    h.op(0, "add", 0.0, 0.1, value="a", node=0)
    h.op(1, "read", 0.2, 0.3, value=[], node=0)
    result = check_orset(h.done(), {"nodes": {"n0": ["a", "z"]}})
    assert result["phantom"] == ["z"]
    assert result["missed_own_add_count"] == 1
