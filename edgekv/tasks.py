"""Cancellation-safe waiting, for the background loops of a node.

Two idioms lose a cancellation on Python 3.11 and leave a loop running after
shutdown cancelled it: ``suppress(CancelledError)`` around awaiting a task
that was just cancelled also swallows a cancel of the *awaiting* task, and
``asyncio.wait_for`` returns normally when it is cancelled in the same loop
iteration as the awaited future completes. These helpers keep both jobs
without either hole.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    Its own ``CancelledError`` is expected and ends here; one aimed at the
    caller (whose task is being cancelled meanwhile) propagates.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def wait_event(event: asyncio.Event, within: float) -> bool:
    """Wait up to ``within`` seconds for ``event``; whether it was set."""
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True
