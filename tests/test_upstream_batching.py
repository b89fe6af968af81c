"""Concurrent unconditional strong writes share statements, never a key twice."""

from __future__ import annotations

import asyncio

import pytest

from edgekv.store.kv import Write
from edgekv.upstream.batching import UpsertBatcher
from edgekv_replication.changes import Change


async def test_waiting_writes_go_together_and_never_hold_a_key_twice() -> None:
    batches: list[list[tuple[str, bytes]]] = []
    release = asyncio.Event()

    async def run(writes: list[tuple[str, Write]]) -> list[Change]:
        batches.append([(ns, w.key) for ns, w in writes])
        await release.wait()
        return [Change(ns, w.key, w.value, None, None, 1, 1) for ns, w in writes]

    batcher = UpsertBatcher(run, concurrency=1)
    first = asyncio.create_task(batcher.write("a", [Write(b"k0", b"0")]))
    await asyncio.sleep(0)  # the first batch is in flight; the rest queue behind it
    later = [
        asyncio.create_task(batcher.write("a", [Write(key, b"v")]))
        for key in (b"k1", b"k2", b"k1", b"k3")
    ]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *later)
    assert batches == [[("a", b"k0")], [("a", b"k1"), ("a", b"k2")], [("a", b"k1"), ("a", b"k3")]]
    assert [r[0].key for r in results] == [b"k0", b"k1", b"k2", b"k1", b"k3"]


async def test_a_write_given_up_before_it_is_sent_is_never_applied() -> None:
    sent: list[bytes] = []
    release = asyncio.Event()

    async def run(writes: list[tuple[str, Write]]) -> list[Change]:
        sent.extend(w.key for _, w in writes)
        await release.wait()
        return [Change(ns, w.key, w.value, None, None, 1, 1) for ns, w in writes]

    batcher = UpsertBatcher(run, concurrency=1)
    first = asyncio.create_task(batcher.write("a", [Write(b"k0", b"0")]))
    await asyncio.sleep(0)
    abandoned = asyncio.create_task(batcher.write("a", [Write(b"gone", b"x")]))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert sent == [b"k0"]


async def test_a_failed_batch_fails_every_write_in_it() -> None:
    async def run(writes: list[tuple[str, Write]]) -> list[Change]:
        raise RuntimeError("upstream gone")

    batcher = UpsertBatcher(run, concurrency=2)
    outcomes = await asyncio.gather(
        batcher.write("a", [Write(b"k0", b"0")]),
        batcher.write("a", [Write(b"k1", b"1")]),
        return_exceptions=True,
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
