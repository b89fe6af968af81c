"""Cancellation reaches the background loops that shutdown stops.

A loop whose cancel is lost keeps running (and reconnecting) after
``Replicator.stop`` cancelled it, and the node never exits.
"""

from __future__ import annotations

import asyncio

import pytest

from edgekv.tasks import cancel_and_wait, wait_event


async def test_cancel_and_wait_ends_the_task_it_cancels() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_cancel_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    release = asyncio.Event()
    went_on = False

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await release.wait()  # still cleaning up when the caller is cancelled

    async def caller() -> None:
        nonlocal went_on
        stopping = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)  # let it start
        await cancel_and_wait(stopping)
        went_on = True

    task = asyncio.create_task(caller())
    for _ in range(3):
        await asyncio.sleep(0)  # the caller is waiting for slow_to_stop to end
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    assert task.cancelled()
    assert not went_on


@pytest.mark.parametrize("yields", range(4))
async def test_a_cancel_racing_the_event_is_not_swallowed(yields: int) -> None:
    event = asyncio.Event()
    went_on = False

    async def loop() -> None:
        nonlocal went_on
        await wait_event(event, 60)
        went_on = True

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() or (went_on and yields > 0)


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    event.set()
    assert await wait_event(event, 60)
