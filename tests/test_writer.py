"""The writer under faults: whatever an op raises, it fails alone; a failed
transaction leaves nothing in memory ahead of the database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekv.store.cache import MISS, ReadCache
from edgekv.store.documents import DocumentStore
from edgekv.store.kv import Write
from edgekv.store.store import Store
from edgekv.store.writer import OpCrashed, Txn, Writer, WriterClosed
from edgekv_replication import HybridLogicalClock
from edgekv_replication import documents as ydoc


class Panic(BaseException):
    """Like pycrdt's PanicException: not an Exception."""


def _insert_then(error: BaseException) -> Any:
    def op(txn: Txn) -> None:
        txn.conn.execute(
            "INSERT INTO kv (seq, ns, key, value, hlc, node) VALUES (?, 'ns', x'7a', x'00', 1, 1)",
            (txn.take_seq(),),
        )
        raise error

    return op


def _keys(store: Store) -> list[bytes]:
    return [k.key for k in store.list_keys("ns")]


def _seqs(store: Store) -> list[int]:
    return [seq for (seq,) in store.read_all("SELECT seq FROM kv ORDER BY seq")]


def _replayed(store: Store, collection: str, doc_id: str) -> Any:
    """The document as its committed Y log says, rebuilt from scratch."""
    update = store.documents.ystate(collection, doc_id, None)
    assert update is not None
    return ydoc.read_json(ydoc.new_doc(99, update))


@pytest.mark.parametrize("single_statement", [False, True])
@pytest.mark.parametrize("error", [Panic("boom"), asyncio.CancelledError(), GeneratorExit()])
async def test_an_op_raising_a_base_exception_fails_alone(
    store: Store, error: BaseException, single_statement: bool
) -> None:
    good = store.write("ns", [Write(b"a", b"1")])
    bad = store.writer.submit(_insert_then(error), single_statement=single_statement)
    also_good = store.write("ns", [Write(b"b", b"1")])
    results = await asyncio.gather(good, bad, also_good, return_exceptions=True)
    assert isinstance(results[1], OpCrashed), results
    assert results[1].__cause__ is error
    assert not bad.cancelled(), "a CancelledError of an op is its failure, not its caller's"
    assert [r.seq for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]
    assert _keys(store) == [b"a", b"b"]
    assert store.seq == 2
    # The writer keeps working.
    assert (await store.write("ns", [Write(b"c", b"1")])).seq == 3
    assert _keys(store) == [b"a", b"b", b"c"]
    assert _seqs(store) == [1, 2, 3]


async def test_a_pycrdt_panic_in_a_document_write_fails_alone(store: Store) -> None:
    documents = store.documents
    await documents.put("c", "p", {"a": 1})
    # Past the HTTP layer's check: the text reaches pycrdt, which panics mid-edit.
    writes = [
        documents.patch("c", "p", {"b": "\ud800"}),
        documents.put("c", "e1", {"a": {"b": ["\ud800"]}}),
        documents.patch("c", "p", {"c": 2}),
        store.write("ns", [Write(b"a", b"1")]),
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    for crashed in results[:2]:
        assert isinstance(crashed, OpCrashed), results
        assert type(crashed.__cause__).__name__ == "PanicException"
    assert not isinstance(results[2], BaseException), results
    assert not isinstance(results[3], BaseException), results
    assert documents.get("c", "e1") is None
    assert json.loads(documents.get("c", "p").json) == {"a": 1, "c": 2}  # type: ignore[union-attr]
    await documents.patch("c", "p", {"d": 3})
    stored = json.loads(documents.get("c", "p").json)  # type: ignore[union-attr]
    assert stored == {"a": 1, "c": 2, "d": 3}
    assert _replayed(store, "c", "p") == stored, "the Y log and the JSON agree"


async def test_an_op_failing_after_its_edit_leaves_the_document_to_the_next_op(
    store: Store,
) -> None:
    """The edit of a failed op is gone before the next op of the same batch sees the document."""
    await store.documents.put("c", "d", {"a": 1})

    def poison_logging(txn: Txn) -> None:
        # Refuses any Y update that holds the text "poison": after the Y edit was made.
        txn.conn.execute(
            "CREATE TEMP TRIGGER poison BEFORE INSERT ON main.doc_log"
            " WHEN instr(NEW.y_update, CAST('poison' AS BLOB)) > 0"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )

    await store.writer.submit(poison_logging)
    failed: object
    patched: object
    failed, patched = await asyncio.gather(
        store.documents.patch("c", "d", {"x": "poison"}),
        store.documents.patch("c", "d", {"x": "fine"}),  # its Y item follows x's last one
        return_exceptions=True,
    )
    assert isinstance(failed, sqlite3.IntegrityError), failed
    assert not isinstance(patched, BaseException), patched
    stored = json.loads(store.documents.get("c", "d").json)  # type: ignore[union-attr]
    assert stored == {"a": 1, "x": "fine"}
    assert _replayed(store, "c", "d") == stored, "the Y log and the JSON agree"


async def test_a_failed_batch_undoes_every_op_in_memory(store: Store) -> None:
    """A failure after the ops ran (here the batch's last UPDATE) rolls every one back."""
    await store.documents.put("c", "d", {"a": 1})
    await store.write("ns", [Write(b"k", b"1")])
    assert store.get("ns", b"k").value == b"1"  # type: ignore[union-attr]  # cached now
    seq = store.seq

    def fail_the_batch(txn: Txn) -> None:
        txn.conn.execute(
            "CREATE TEMP TRIGGER fail_batch BEFORE UPDATE ON main.node_state"
            " BEGIN SELECT RAISE(ABORT, 'the batch fails'); END"
        )

    results = await asyncio.gather(
        store.documents.patch("c", "d", {"b": 2}),
        store.write("ns", [Write(b"k", b"2")]),
        store.writer.submit(fail_the_batch),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert store.seq == seq
    assert store.get("ns", b"k").value == b"1"  # type: ignore[union-attr]
    await store.documents.patch("c", "d", {"c": 3})  # the trigger was rolled back too
    stored = json.loads(store.documents.get("c", "d").json)  # type: ignore[union-attr]
    assert stored == {"a": 1, "c": 3}
    assert _replayed(store, "c", "d") == stored


class _CommitFails:
    """A writer and documents on a connection whose COMMIT fails while asked to.

    A deferred foreign key is checked at COMMIT: an op that inserts an orphan
    row makes the COMMIT of its whole batch fail, as a full disk would.
    """

    def __init__(self, directory: Path) -> None:
        Store(directory).close()  # a migrated database
        path = directory / "edgekv.db"
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TEMP TABLE orphan (parent INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        node_id, hlc, seq = conn.execute("SELECT node_id, hlc, seq FROM node_state").fetchone()
        self.cache: ReadCache[bytes] = ReadCache(100)
        self.writer = Writer(conn, HybridLogicalClock(hlc), seq, invalidate=self.cache.invalidate)
        self.reader = sqlite3.connect(path, check_same_thread=False)
        self.documents = DocumentStore(self.writer, self.reader, node_id)

    def fail_commit(self) -> asyncio.Future[None]:
        def op(txn: Txn) -> None:
            txn.conn.execute("INSERT INTO temp.orphan VALUES (1)")
            txn.touched.append(("ns", b"k"))

        return self.writer.submit(op)

    def close(self) -> None:
        self.writer.close()
        self.documents.close()
        self.reader.close()


@pytest.fixture
def commit_fails(tmp_path: Path) -> Iterator[_CommitFails]:
    opened = _CommitFails(tmp_path / "data")
    yield opened
    opened.close()


async def test_a_failed_commit_leaves_no_document_ahead_of_the_database(
    commit_fails: _CommitFails,
) -> None:
    documents, writer = commit_fails.documents, commit_fails.writer
    await documents.put("c", "d", {"a": 1})
    seq = writer.seq
    commit_fails.cache.fill(("ns", b"k"), b"committed", commit_fails.cache.generation)
    results = await asyncio.gather(
        documents.patch("c", "d", {"b": 2}),
        documents.put("c", "new", {"n": 1}),
        commit_fails.fail_commit(),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert writer.seq == seq
    assert commit_fails.cache.lookup(("ns", b"k")) in (MISS, b"committed")
    assert documents.get("c", "new") is None
    # The next edit starts from the committed document, not the rolled-back one.
    result = await documents.patch("c", "d", {"c": 3})
    assert result.seq == seq + 1, "no seq was lost to the failed commit"
    assert json.loads(documents.get("c", "d").json) == {"a": 1, "c": 3}  # type: ignore[union-attr]


def test_keyboard_interrupt_aborts_its_batch_and_goes_on_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    loop = asyncio.new_event_loop()
    try:

        def interrupted(txn: Txn) -> None:
            raise KeyboardInterrupt

        futures: list[asyncio.Future[Any]] = []

        async def submit_and_wait() -> None:
            futures[:] = [
                store.write("ns", [Write(b"a", b"1")]),
                store.writer.submit(interrupted),
                store.write("ns", [Write(b"b", b"1")]),
            ]
            await asyncio.wait(futures)

        waiting = loop.create_task(submit_and_wait())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(waiting)
        loop.run_until_complete(waiting)  # the writes were answered before the interrupt left
        assert all(isinstance(f.exception(), WriterClosed) for f in futures)
        assert store.list_keys("ns") == []
        assert store.seq == 0

        # What runs after the interrupt (a shutdown that commits queued writes) still can.
        async def write_again() -> int:
            return (await store.write("ns", [Write(b"c", b"1")])).seq

        assert loop.run_until_complete(write_again()) == 1
        assert _keys(store) == [b"c"]
    finally:
        store.close()
        loop.close()
