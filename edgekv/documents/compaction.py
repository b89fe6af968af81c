"""Background compaction: fold each document's update log into its snapshot.

A write that brings a document's log to ``compact_log_rows`` updates wakes
the loop; it also looks every ``COMPACT_INTERVAL`` seconds, and once at start
for logs left by an earlier process. So a log stays near that bound however
fast a document is written, and reads and loads never replay long logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from edgekv.store.documents import DocumentStore
from edgekv.tasks import cancel_and_wait, wait_event

log = logging.getLogger(__name__)

COMPACT_INTERVAL = 1.0
DOCS_PER_OP = 50
"""Documents compacted in one writer op: keeps each op short beside live writes."""


async def compact_due(documents: DocumentStore, scan: bool = False) -> int:
    """Compact every document whose log reached the bound; return how many."""
    due = documents.due_for_compaction(scan=scan)
    done = 0
    for start in range(0, len(due), DOCS_PER_OP):
        done += await documents.compact(due[start : start + DOCS_PER_OP])
    return done


async def run(documents: DocumentStore, interval: float = COMPACT_INTERVAL) -> None:
    """Compact forever (until cancelled)."""
    scan = True
    while True:
        try:
            done = await compact_due(documents, scan)
            scan = False
            if done:
                log.debug("compacted %d document logs", done)
        except Exception:  # one failed pass must not stop compaction for good
            log.exception("document compaction failed")
        await wait_event(documents.compaction_due, interval)
        documents.compaction_due.clear()


def compactor(
    documents: DocumentStore,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` that runs :func:`run` while the app serves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(documents))
        yield
        await cancel_and_wait(task)

    return context
