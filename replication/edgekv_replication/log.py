"""The change log a pull stream pages through: its protocol and its rules.

A server pages "changes with seq > cursor" out of its log
(:class:`~edgekv_replication.session.ServeSession` decides what goes in each
batch). It does so through the small :class:`Log` protocol: a node passes its
SQLite change log (``edgekv.store.changelog.ChangeLog``, which answers in SQL
for speed), the simulated network of the tests a dictionary log that answers
with the rules here (:func:`page_leaving_out`, :func:`changes_page`). A
property test holds the SQL to these rules on random logs.

Pages are bounded in bytes as well as in rows (:func:`read_page`): a page
goes to a peer as one message, and a receiver refuses a message over
``MAX_MESSAGE_BYTES`` (64 MiB), so 500 rows of large values would never
replicate. A page ends at the change that reaches the budget; that change is
kept (its value was read anyway), so a page holds at most :data:`PAGE_BYTES`
plus one change -- with values up to 25 MiB, about 33 MiB. The total is kept
in the one loop that turns rows into changes, instead of a ``length()``
pre-pass in SQLite: measured on 500-row pages of small values, the pre-pass (a
second scan of the rows) cost 29 % of the page read, the running total 10 %.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from itertools import islice, takewhile
from typing import Any, Protocol

from edgekv_replication.changes import Change
from edgekv_replication.relays import Deferral

MIB = 1024 * 1024
PAGE_BYTES = 8 * MIB
"""The byte budget of one page of the log (see the module docstring)."""
CHANGE_OVERHEAD_BYTES = 64
"""What a change costs on the wire besides its key, value and metadata (the
msgpack array, stamps, seq), so that a page of many small changes counts."""

_as_change = functools.partial(tuple.__new__, Change)


class Log(Protocol):
    """A node's change log as a stream's server reads it (every change in ``seq`` order)."""

    def changes_after(self, cursor: int, limit: int, max_bytes: int = PAGE_BYTES) -> list[Change]:
        """Up to ``limit`` changes with seq > ``cursor``, ending early at ``max_bytes``."""
        ...

    def page_after(
        self,
        cursor: int,
        limit: int,
        leave_out: int,
        head: int,
        deferral: Deferral | None = None,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[list[Change], int]:
        """A page without ``leave_out``'s changes or deferred ones, and where it ends.

        The rule is :func:`page_leaving_out`.
        """
        ...

    def advance_window(self, deferral: Deferral, upto: int) -> None:
        """Move ``deferral``'s window past what its marks cover, up to ``upto``.

        The rule is :meth:`~edgekv_replication.relays.Deferral.advance`.
        """
        ...


def read_page(rows: Iterable[tuple[Any, ...]], max_bytes: int) -> tuple[list[Change], bool]:
    """Changes from ``rows`` (columns in Change order) until they reach ``max_bytes``.

    Returns the changes and whether the budget ended the page (then the
    last change is the one that reached it, and no later row was read).
    """
    changes: list[Change] = []
    append = changes.append
    total = 0
    for row in rows:
        append(_as_change(row))
        value, metadata = row[2], row[3]
        total += CHANGE_OVERHEAD_BYTES + len(row[1])
        if value is not None:
            total += len(value)
        if metadata is not None:
            total += len(metadata)
        if total >= max_bytes:
            return changes, True
    return changes, False


Entries = Callable[[int], Iterable[Change]]
"""A log as the rules read it: the changes with seq > a cursor, in seq order."""


def changes_page(entries: Entries, cursor: int, limit: int, max_bytes: int) -> list[Change]:
    """The rule of :meth:`Log.changes_after`: every kind of change, bounded in rows and bytes."""
    return read_page(islice(entries(cursor), limit), max_bytes)[0]


def page_leaving_out(
    entries: Entries,
    cursor: int,
    limit: int,
    leave_out: int,
    head: int,
    deferral: Deferral | None,
    max_bytes: int,
) -> tuple[list[Change], int]:
    """The rule of :meth:`Log.page_after`: a page of what a stream sends, and where it ends.

    Up to ``limit`` changes up to ``head`` (the head read before the page)
    not written by ``leave_out`` (the puller, which has them) nor deferred by
    ``deferral``, ending early at the change that reaches ``max_bytes``. The
    page ends at its last change if it is full (in rows or bytes), else at
    ``head``: a stretch of nothing but left-out rows passes in one page. A
    deferral with marks and no window opens it at the first deferred change
    in the page's stretch that no mark covers.
    """
    sent = (
        change
        for change in takewhile(lambda change: change.seq <= head, entries(cursor))
        if change.node != leave_out and not (deferral is not None and deferral.defers(change))
    )
    changes, at_budget = read_page(islice(sent, limit), max_bytes)
    full = at_budget or len(changes) == limit
    end = changes[-1].seq if full else max(cursor, head)
    if deferral is not None and deferral.marks and deferral.window is None:
        stretch = takewhile(lambda change: change.seq <= end, entries(cursor))
        deferral.window = deferral.first_uncovered(stretch)
    return changes, end
