"""JSON objects with each member name once: the hook every JSON decoder of the node uses.

RFC 8259 leaves duplicate names to the parser ("the behavior ... is
unpredictable"); Python keeps the last, other parsers the first or fail. A
body holding ``{"value": "a", "value": "b"}`` would mean one thing to the node
and another to a proxy, a log pipeline or a client in another language, so
objects holding a name twice are refused (I-JSON, RFC 7493, does the same).
"""

from __future__ import annotations

import json
from typing import Any

_NAME_CHARS = 64


class DuplicateName(ValueError):
    """A JSON object holds a member name more than once."""


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: the object of ``pairs``, or :class:`DuplicateName`.

    ``dict(pairs)`` is what the decoder's own C code would build; one length
    comparison tells whether a name came twice, so the usual object costs a
    list of pairs more, never a Python loop over its members.
    """
    document = dict(pairs)
    if len(document) != len(pairs):
        raise duplicate(_first_repeated(pairs))
    return document


def duplicate(name: str) -> DuplicateName:
    """The refusal naming ``name`` (shortened: a junk name can be as large as the body)."""
    shown = json.dumps(name[:_NAME_CHARS])
    if len(name) > _NAME_CHARS:
        shown = shown[:-1] + '..."'
    return DuplicateName(f"duplicate member name {shown} in an object")


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("no name repeats")
