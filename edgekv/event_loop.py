"""The event loop a node runs on: uvloop where it is installed, else asyncio's own.

uvloop (``pip install "edgekv[fast]"``) serves the same requests with less
CPU each (docs/performance.md, "Event loop"). ``event_loop = "auto"`` (the
default) takes it when it can be imported and asyncio's loop otherwise;
``"asyncio"`` turns it off; ``"uvloop"`` insists, and a node without it
refuses to start rather than run slower than its operator expects.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

CHOICES = ("auto", "asyncio", "uvloop")

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """``event_loop = "uvloop"`` was asked for, and uvloop is not installed."""


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The name of the loop ``choice`` gives here, and its factory (None: asyncio's default)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                'event_loop is "uvloop" but uvloop is not installed: '
                'pip install "edgekv[fast]", or set event_loop to "auto"'
            ) from None
        return "asyncio", None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return "uvloop", factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run ``main`` to completion on the loop ``choice`` gives, as ``asyncio.run`` does."""
    try:
        _, factory = loop_factory(choice)
    except EventLoopUnavailable:
        main.close()  # never awaited: say nothing about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
