"""A Wing-Gong linearizability checker with Lowe's memoization, for one register.

The history of one key (split per key beforehand: keys are independent) is
a list of :class:`Call`; a call whose outcome is unknown (``info``) has no
return and may take effect at any point after its invocation, or never.
Failed calls had no effect and are left out by the caller.

The search walks the calls in time order, tries to linearize each pending
call at the current point (the model must accept it), and backtracks when
a call's return is reached before it was linearized. Lowe's cache of
(linearized set, model state) prunes configurations already seen. It is
exponential in the worst case, so it stops at a deadline and answers
``None`` (unknown).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

State = Any


@dataclass(frozen=True)
class Call:
    """One operation on a register: ``read`` (value seen), ``write`` (value) or ``cas``."""

    f: str
    value: Any
    expected: Any = None
    invoked: float = 0.0
    returned: float = math.inf
    index: int = -1


def step(state: State, call: Call) -> tuple[bool, State]:
    """The register model: may ``call`` take effect in ``state``, and the state after."""
    if call.f == "read":
        return call.value == state, state
    if call.f == "write":
        return True, call.value
    if call.f == "cas":
        return (True, call.value) if state == call.expected else (False, state)
    raise ValueError(call.f)


def check_register(
    calls: list[Call], initial: State = None, deadline: float | None = None
) -> bool | None:
    """Whether ``calls`` are linearizable from ``initial``; None if the deadline passed."""
    # Events in time order: invocations before returns at equal times.
    events: list[tuple[float, int, int]] = []
    for i, call in enumerate(calls):
        events.append((call.invoked, 0, i))
        if call.returned != math.inf:
            events.append((call.returned, 1, i))
    events.sort()
    n = len(events)
    if not n:
        return True
    # A circular doubly linked list over the events; index n is the head sentinel.
    nxt = [*range(1, n + 1), 0]
    prv = [n, *range(0, n - 1), n - 1]
    kind = [e[1] for e in events]
    call_of = [e[2] for e in events]
    return_event = {call_of[e]: e for e in range(n) if kind[e] == 1}
    returns_left = len(return_event)

    def unlink(e: int) -> None:
        nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]

    def relink(e: int) -> None:
        nxt[prv[e]], prv[nxt[e]] = e, e

    state = initial
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, State]] = []
    e = nxt[n]
    steps = 0
    while returns_left:
        steps += 1
        if deadline is not None and steps % 1024 == 0 and time.monotonic() > deadline:
            return None
        if e == n:
            # Only calls without returns are left ahead: nothing more is required of them,
            # but some completed call is still pending before them: backtrack.
            if not stack:
                return False
            e, state, linearized, returns_left = _backtrack(
                stack, calls, call_of, return_event, relink, nxt, linearized, returns_left
            )
            continue
        if kind[e] == 0:
            i = call_of[e]
            ok, after = step(state, calls[i])
            if ok:
                key = (linearized | (1 << i), after)
                if key not in cache:
                    cache.add(key)
                    stack.append((e, state))
                    state, linearized = after, linearized | (1 << i)
                    unlink(e)
                    if i in return_event:
                        unlink(return_event[i])
                        returns_left -= 1
                    e = nxt[n]
                    continue
            e = nxt[e]
        else:
            # A call returned before it could be linearized: undo the last choice.
            if not stack:
                return False
            e, state, linearized, returns_left = _backtrack(
                stack, calls, call_of, return_event, relink, nxt, linearized, returns_left
            )
    return True


def _backtrack(
    stack: list[tuple[int, State]],
    calls: list[Call],
    call_of: list[int],
    return_event: dict[int, int],
    relink: Any,
    nxt: list[int],
    linearized: int,
    returns_left: int,
) -> tuple[int, State, int, int]:
    """Pop the last linearized call, put its events back, and move past it."""
    e, state = stack.pop()
    i = call_of[e]
    linearized &= ~(1 << i)
    if i in return_event:
        relink(return_event[i])
        returns_left += 1
    relink(e)
    return nxt[e], state, linearized, returns_left
