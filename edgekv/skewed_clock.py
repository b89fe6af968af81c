"""Test only: a wall clock shifted by an offset that fault-injection runs can move.

With the node settings ``test_clock_offset_ms`` or ``test_clock_offset_file``
the node stamps its writes by this clock instead of the system's (it hands it
to the store as the hybrid logical clock's wall clock), so tests and
``jepsen_like``'s clock nemesis can skew one node, or jump and strobe it
without a restart. Nothing in production builds one: :func:`skewed_clock_for`
answers None unless one of the two settings is set.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


class SkewedClock:
    """The system's wall clock in milliseconds plus :attr:`offset_ms`, which may change."""

    def __init__(self, offset_ms: int = 0) -> None:
        """Start ``offset_ms`` away from the system clock."""
        self.offset_ms = offset_ms
        """Milliseconds added to the system clock (negative: behind); read on every stamp."""

    def __call__(self) -> int:
        """The shifted wall-clock time in milliseconds."""
        return time.time_ns() // 1_000_000 + self.offset_ms

    def follow_file(self, path: str) -> None:
        """Take the offset from ``path`` now and again on every SIGUSR1.

        Needs a running event loop (the handler is the loop's). A file that
        cannot be read or parsed leaves the offset as it was, with a warning.
        """

        def reload() -> None:
            try:
                self.offset_ms = int(Path(path).read_text().strip() or 0)
            except (OSError, ValueError) as exc:
                log.warning("test clock offset file %s unreadable: %s", path, exc)

        reload()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, reload)


def skewed_clock_for(offset_ms: int, offset_file: str | None) -> SkewedClock | None:
    """The test clock the two test settings ask for, or None for the system clock.

    With ``offset_file`` the clock follows that file (:meth:`SkewedClock.follow_file`),
    which replaces ``offset_ms`` as soon as it is read.
    """
    if not offset_ms and offset_file is None:
        return None
    clock = SkewedClock(offset_ms)
    if offset_file is not None:
        clock.follow_file(offset_file)
    return clock
