"""Storage faults below the HTTP layer: the writer and the client's mapping."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from edgekv.store.store import Store
from edgekv.store.writer import Txn
from edgekv_client.errors import StorageFull, Unavailable, error_for


async def test_a_transaction_rolled_back_whole_fails_its_batch_and_writes_nothing(
    store: Store,
) -> None:
    # What SQLite may do on a full disk: roll the whole transaction back and
    # report the error from the statement. A later op of the batch must then not
    # run in autocommit mode (committed, yet answered as failed).
    def rolled_back(txn: Txn) -> None:
        txn.conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    def put(txn: Txn) -> None:
        txn.conn.execute(
            "INSERT INTO kv (seq, ns, key, value, hlc, node) VALUES (?, 'ns', x'6b', x'76', 1, 1)",
            (txn.take_seq(),),
        )

    first = store.writer.submit(rolled_back, single_statement=True)
    second = store.writer.submit(put, single_statement=True)
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert store.read_all("SELECT count(*) FROM kv") == [(0,)]
    assert store.seq == 0
    # The writer goes on.
    await store.writer.submit(put, single_statement=True)
    assert store.read_all("SELECT count(*) FROM kv") == [(1,)]


def test_client_maps_507_to_storage_full() -> None:
    error = error_for("storage_full", "the disk is full", 507)
    assert isinstance(error, StorageFull)
    assert isinstance(error, Unavailable), "a 5xx: retry later or at another PoP"
    with pytest.raises(StorageFull):
        raise error_for("storage_full_unknown_to_this_client", "full", 507)
