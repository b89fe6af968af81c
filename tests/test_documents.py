"""Documents without a network: JSON <-> Y, merge patches, limits, merge laws, the store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.store.store import Store
from edgekv_replication import documents as ydoc
from edgekv_replication.documents import DocumentError
from edgekv_replication.session import PeerCursor

# -- JSON <-> Y -----------------------------------------------------------------------


def _doc_with(value: dict[str, Any], client: int = 1) -> ydoc.YDoc:
    doc = ydoc.new_doc(client)
    ydoc.replace(doc, None, ydoc.normalize(value))
    return doc


def test_json_round_trips_with_exact_integers() -> None:
    value = {
        "small": 1,
        "float": 1.5,
        "integral_float": 2.0,
        "beyond_2_53": 2**53 + 1,
        "max": 2**63 - 2,
        "min": -(2**63),
        "nested": {"list": [1, {"deep": [True, None, "s"]}]},
    }
    read = ydoc.read_json(_doc_with(value))
    assert read == {**value, "integral_float": 2}
    assert type(read and read["small"]) is int
    assert type(read and read["beyond_2_53"]) is int


def test_nested_objects_are_y_maps_and_arrays_never_opaque() -> None:
    doc = _doc_with({"a": {"b": {"c": 1}}, "l": [{"x": 1}]})
    content = ydoc.content_of(doc)
    assert type(content["a"]).__name__ == "Map"
    assert type(content["a"]["b"]).__name__ == "Map"
    assert type(content["l"]).__name__ == "Array"
    assert type(content["l"][0]).__name__ == "Map"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({"n": 2**63 - 1}, "number_out_of_range"),
        ({"n": -(2**63) - 1}, "number_out_of_range"),
        ({"n": float("inf")}, "number_out_of_range"),
        ({"n": float("nan")}, "number_out_of_range"),
    ],
)
def test_numbers_out_of_range_are_refused(value: dict[str, Any], code: str) -> None:
    with pytest.raises(DocumentError) as caught:
        ydoc.normalize(value)
    assert caught.value.code == code


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def test_depth_limit_is_32_levels() -> None:
    ydoc.normalize(_nested(32))
    with pytest.raises(DocumentError) as caught:
        ydoc.normalize(_nested(33))
    assert caught.value.code == "document_too_deep"


def test_size_limit_is_one_mebibyte_of_utf8() -> None:
    ydoc.check_size("x" * ydoc.MAX_DOCUMENT_BYTES)
    with pytest.raises(DocumentError) as caught:
        ydoc.check_size("é" * (ydoc.MAX_DOCUMENT_BYTES // 2 + 1))
    assert caught.value.code == "document_too_large"


def test_merge_patch_follows_rfc_7386() -> None:
    # The examples of RFC 7386, section 3, that apply to objects.
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert ydoc.merge_patch(target, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert ydoc.merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert ydoc.merge_patch({"a": "foo"}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}, "the target is left as it was"


def test_patch_as_y_operations_matches_the_plain_merge_patch() -> None:
    doc = _doc_with({"a": 1, "o": {"x": 1, "y": {"z": 2}}, "l": [1, 2]})
    current = ydoc.read_json(doc)
    assert current is not None
    merge = {"a": None, "o": {"y": {"w": 3}, "x": "s"}, "l": [3], "new": {"k": None, "v": 1}}
    ydoc.patch(doc, current, merge)
    assert ydoc.read_json(doc) == ydoc.merge_patch(current, merge)


@pytest.mark.parametrize("raw", [True, False], ids=["binding-maps", "public-api"])
def test_patch_edits_the_same_through_the_binding_and_the_public_api(
    raw: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not raw:
        monkeypatch.setattr(ydoc, "_RAW_MAP", None)
    else:
        assert ydoc._RAW_MAP is not None, "this pycrdt takes the fast path"
    start = {"a": 1, "big": 2**60, "o": {"x": 1, "y": {"z": 2}}, "l": [1], "t": "s"}
    doc = _doc_with(start)
    editor = ydoc.Editor(doc)
    current: Any = ydoc.read_json(doc)
    patches: list[dict[str, Any]] = [
        {"a": 2, "big": 2**62 + 1, "o": {"y": {"w": 3.5, "z": None}, "x": "s"}},
        {"l": [{"k": [1, 2]}], "new": {"k": None, "v": {"deep": True}}, "t": None},
        {"o": None, "a": 2},  # a value equal to the current one is not written
        {},
    ]
    replica = ydoc.new_doc(7, doc.get_update())
    for merge in patches:
        update = editor.patch(current, merge)
        current = ydoc.merge_patch(current, merge)
        assert ydoc.read_json(doc) == current
        # Another replica gets the same document from the captured update alone.
        ydoc.apply(replica, update)
        assert ydoc.read_json(replica) == current
        assert (update == ydoc.EMPTY_UPDATE) == (merge == {})
    editor.close()


def test_concurrent_patches_of_nested_fields_both_survive() -> None:
    a = _doc_with({"profile": {"name": "ann", "address": {"city": "Oslo"}}}, client=1)
    b = ydoc.new_doc(2, a.get_update())
    ja, jb = ydoc.read_json(a), ydoc.read_json(b)
    assert ja is not None
    assert jb is not None
    ua = ydoc.patch(a, ja, {"profile": {"address": {"zip": "0150"}}})
    ub = ydoc.patch(b, jb, {"profile": {"name": "Ann", "address": {"street": "Main"}}})
    ydoc.apply(a, ub)
    ydoc.apply(b, ua)
    expected = {
        "profile": {"name": "Ann", "address": {"city": "Oslo", "zip": "0150", "street": "Main"}}
    }
    assert ydoc.read_json(a) == ydoc.read_json(b) == expected


def test_delete_wins_over_a_concurrent_patch_and_a_later_replace_revives() -> None:
    a = _doc_with({"n": 1}, client=1)
    b = ydoc.new_doc(2, a.get_update())
    deleted = ydoc.delete(a)
    current = ydoc.read_json(b)
    assert current is not None
    patched = ydoc.patch(b, current, {"m": 2})
    ydoc.apply(a, patched)
    ydoc.apply(b, deleted)
    assert ydoc.read_json(a) is None
    assert ydoc.read_json(b) is None
    revived = ydoc.replace(b, None, {"fresh": True})
    ydoc.apply(a, revived)
    assert ydoc.read_json(a) == ydoc.read_json(b) == {"fresh": True}


def test_a_duplicate_update_changes_nothing() -> None:
    a = _doc_with({"n": 1})
    b = ydoc.new_doc(2)
    update = a.get_update()
    assert ydoc.apply(b, update) != ydoc.EMPTY_UPDATE
    assert ydoc.apply(b, update) == ydoc.EMPTY_UPDATE


def test_client_updates_are_validated_on_a_copy() -> None:
    doc = _doc_with({"n": 1})
    before = doc.get_update()
    with pytest.raises(DocumentError) as caught:
        ydoc.validate_update(doc, b"\x01\x02garbage", 7)
    assert caught.value.code == "invalid_yupdate"
    # An update that depends on changes the node lacks.
    other = _doc_with({"x": 1}, client=9)
    state = other.get_state()
    current = ydoc.read_json(other)
    assert current is not None
    ydoc.patch(other, current, {"x": 2})
    with pytest.raises(DocumentError) as caught:
        ydoc.validate_update(doc, other.get_update(state), 7)
    assert caught.value.code == "invalid_yupdate"
    assert doc.get_update() == before


def test_change_encoding_is_recognised_and_merges_as_a_join() -> None:
    a = _doc_with({"n": 1}, client=1)
    b = _doc_with({"m": 2}, client=2)
    ca = ydoc.document_change("users", "u1", a.get_update(), 10, 1)
    cb = ydoc.document_change("users", "u1", b.get_update(), 20, 2)
    assert ydoc.is_document(ca)
    assert ydoc.collection_of(ca) == "users"

    def state(change: Any) -> Any:
        return ydoc.read_json(ydoc.new_doc(5, change.value))

    ab, ba = ydoc.merge_document_changes(ca, cb), ydoc.merge_document_changes(cb, ca)
    assert state(ab) == state(ba) == {"n": 1, "m": 2}
    assert state(ydoc.merge_document_changes(ab, ab)) == state(ab)
    assert ydoc.version_of(ab) == ydoc.version_of(ba) == (20, 2)


# -- the convergence property -----------------------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("xyz"), inner, max_size=2)
    ),
    max_leaves=4,
)
_objects = st.dictionaries(st.sampled_from("abcd"), _values, max_size=3)
_step: st.SearchStrategy[tuple[str, int, Any]] = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 2), _objects),
    st.tuples(st.just("patch"), st.integers(0, 2), _objects),
    st.tuples(st.just("delete"), st.integers(0, 2), st.just({})),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 1000)),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=25), final_order=st.randoms(use_true_random=False))
def test_any_interleaving_with_duplicates_converges(steps: list[Any], final_order: Any) -> None:
    """Replaces, patches and deletes at three replicas, delivered in any order, twice over."""
    replicas = [ydoc.DocumentReplica(client) for client in (11, 22, 33)]
    sent: list[bytes] = []
    for kind, at, payload in steps:
        replica = replicas[at]
        current = ydoc.read_json(replica.doc)
        if kind == "replace":
            update = ydoc.replace(replica.doc, current, ydoc.normalize(payload))
        elif kind == "patch":
            if current is None:
                continue  # a node answers 404: nothing happens
            update = ydoc.patch(replica.doc, current, ydoc.normalize(payload))
        elif kind == "delete":
            update = ydoc.delete(replica.doc)
        else:
            if sent:
                replica.receive(sent[payload % len(sent)])  # any message, maybe again
            continue
        replica.edited(update)
        sent.append(update)
    for replica in replicas:
        deliveries = sent * 2  # everything, with duplicates, in any order
        final_order.shuffle(deliveries)
        for update in deliveries:
            replica.receive(update)
        assert not replica.waiting
    views = [ydoc.read_json(replica.doc) for replica in replicas]
    assert views[0] == views[1] == views[2]
    texts = [None if view is None else ydoc.serialize(view) for view in views]
    assert texts[0] == texts[1] == texts[2], "numbers read back as the same types everywhere"


# -- the store: change log, remote merges, compaction --------------------------------------


@pytest.fixture
def two_stores(tmp_path: Path) -> Any:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    yield a, b
    a.close()
    b.close()


async def _sync(source: Store, target: Store) -> None:
    changes = source.changes_after(0, 10_000)
    if changes:
        cursor = PeerCursor(source.identity.incarnation, changes[-1].seq)
        await target.apply_changes(changes, source.node_id, cursor, 500)


async def test_documents_and_entries_share_one_change_log_in_seq_order(two_stores: Any) -> None:
    a, b = two_stores
    await a.documents.put("users", "u1", {"name": "ann"})
    await a.write_value("kv", b"k", b"v")
    await a.documents.patch("users", "u1", {"age": 3})
    changes = a.changes_after(0, 100)
    assert [c.seq for c in changes] == [1, 2, 3]
    assert [ydoc.is_document(c) for c in changes] == [True, False, True]
    await _sync(a, b)
    assert b.get("kv", b"k") is not None
    found = b.documents.get("users", "u1")
    assert found is not None
    assert found.json == '{"age":3,"name":"ann"}'
    assert (found.hlc, found.node) == (changes[-1].hlc, a.node_id), "the version replicates"


async def test_a_duplicate_batch_logs_nothing_and_a_batch_reports_what_it_logged(
    two_stores: Any,
) -> None:
    a, b = two_stores
    await a.documents.put("users", "u1", {"name": "ann"})
    await a.documents.patch("users", "u1", {"age": 3})
    await _sync(a, b)
    seq = b.seq
    before = b.changes_after(0, 100)
    changes = a.changes_after(0, 100)
    result = await b.apply_changes(changes, a.node_id, PeerCursor(1, changes[-1].seq), 500)
    assert b.changes_after(0, 100) == before, "a duplicate is not logged again"
    assert (result.applied, result.first_seq, result.seq) == (0, seq, seq)
    # The range a batch reports holds exactly what it logged, never a local write
    # (the upstream connector leaves that range out of what it pushes).
    await b.documents.patch("users", "u1", {"local": True})
    fresh = await a.documents.patch("users", "u1", {"new": 1})
    newer = a.changes_after(changes[-1].seq, 100)
    result = await b.apply_changes(newer, a.node_id, PeerCursor(1, fresh.seq), 500)
    logged = [c.seq for c in b.changes_after(result.first_seq, 100)]
    assert logged == list(range(result.first_seq + 1, result.seq + 1)) == [result.seq]


async def test_compaction_bounds_the_log_and_keeps_every_cursor_whole(two_stores: Any) -> None:
    a, b = two_stores
    a.documents.compact_log_rows = 8
    await a.documents.put("users", "u1", {"n": 0})
    for i in range(1, 40):
        await a.documents.patch("users", "u1", {"n": i, f"f{i % 5}": i})
        if i % 8 == 0:
            await a.documents.compact(a.documents.due_for_compaction())
    rows = a.read_all("SELECT count(*) FROM doc_log")[0][0]
    assert rows <= 8  # the snapshot and at most 7 updates after it
    assert a.read_all("SELECT count(*) FROM docs WHERE snapshot IS NOT NULL")[0][0] == 0
    # A peer that had seen only the first half still converges from its cursor.
    changes = a.changes_after(0, 1000)
    assert len(changes) <= 8
    await _sync(a, b)
    assert b.documents.get("users", "u1") == a.documents.get("users", "u1")


async def test_bad_y_update_from_a_peer_is_refused_whole(two_stores: Any) -> None:
    a, b = two_stores
    await a.documents.put("users", "u1", {"n": 1})
    good = a.changes_after(0, 10)[0]
    bad = good._replace(key=b"u2", value=b"\x01\x02garbage", seq=good.seq + 1)
    with pytest.raises(ValueError, match="update"):
        await b.apply_changes([good, bad], a.node_id, PeerCursor(1, bad.seq), 500)
    assert b.documents.get("users", "u1") is None, "nothing of the batch was applied"
    assert b.peer_cursor(a.node_id).cursor == 0
    await b.apply_changes([good], a.node_id, PeerCursor(1, good.seq), 500)
    assert b.documents.get("users", "u1") is not None


async def test_documents_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    await store.documents.put("c", "d", {"deep": {"x": [1, 2]}})
    await store.documents.patch("c", "d", {"deep": {"y": 2}})
    store.close()
    await asyncio.sleep(0)
    reopened = Store(tmp_path / "s")
    try:
        found = reopened.documents.get("c", "d")
        assert found is not None
        assert found.json == '{"deep":{"x":[1,2],"y":2}}'
        await reopened.documents.patch("c", "d", {"deep": {"x": None}})
        assert reopened.documents.get("c", "d") == (
            '{"deep":{"y":2}}',
            *reopened.documents.get("c", "d")[1:],  # type: ignore[index]
        )
    finally:
        reopened.close()


async def test_compaction_of_a_log_with_a_pending_update_keeps_it_for_its_dependency(
    two_stores: Any,
) -> None:
    a, b = two_stores
    writer = ydoc.new_doc(11)
    first = ydoc.replace(writer, None, {"x": 1})
    second = ydoc.patch(writer, {"x": 1}, {"y": 2})  # depends on ``first``
    await a.documents.put("c", "d", {"base": 1})

    def log_without_its_dependency(txn: Any) -> None:
        # What a node logged before it parked such updates in doc_waiting.
        txn.conn.execute(
            "INSERT INTO doc_log (seq, collection, id, y_update, metadata, hlc, node)"
            " VALUES (?, 'c', 'd', ?, NULL, 1, 2)",
            (txn.take_seq(), second),
        )
        txn.conn.execute("UPDATE docs SET log_count = log_count + 1 WHERE id = 'd'")

    await a.writer.submit(log_without_its_dependency)
    a.documents._drop(("c", "d"))  # as after a restart: loaded from the database
    assert await a.documents.compact([("c", "d")]) == 1
    assert not a.documents._cache["c", "d"].whole  # the pending update was noticed
    assert a.read_all("SELECT count(*) FROM doc_log")[0][0] == 1  # the snapshot
    await _sync(a, b)
    # The dependency arrives: the update kept in the snapshot completes the document.
    dependency = ydoc.document_change("c", "d", first, 3, 4)._replace(seq=1)
    await b.apply_changes([dependency], 99, PeerCursor(1, 1), 500)
    assert json.loads(b.documents.get("c", "d").json) == {"base": 1, "x": 1, "y": 2}
