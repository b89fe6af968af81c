"""Parsing the JSON text that enters a node: standard JSON, and only text that encodes.

Every JSON a client sends -- request bodies, the metadata header, the JSON
literals of a document query -- is parsed by :func:`strict_json`, so one
function decides what JSON the node takes:

- no ``NaN``, ``Infinity`` (not JSON, and not storable as JSON again);
- bytes must be UTF-8 (or UTF-16/32, which RFC 8259 parsers may accept),
  strictly decoded: the standard library would let encoded surrogates through;
- no object may hold a member name twice (:class:`DuplicateName`: RFC 8259
  leaves the meaning to each parser, so a proxy and the node could disagree);
- no string or object key may hold a lone UTF-16 surrogate (``"\\ud800"``).
  RFC 8259 lets the escape through its grammar but says the result is
  unpredictable, and I-JSON (RFC 7493) forbids it. Such text cannot be
  encoded as UTF-8: SQLite, pycrdt (a panic that escaped ``except
  Exception``) and every peer would each fail on it in their own way.

The surrogate check costs one substring search per body: only a body holding
a ``\\uD8..``-``\\uDF..`` escape is checked further, by encoding what it parsed to.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edgekv_replication.json_objects import DuplicateName, unique_object

__all__ = ["DECODER", "DuplicateName", "NestedTooDeeply", "TextNotEncodable", "strict_json"]


class TextNotEncodable(ValueError):
    """The JSON holds a lone UTF-16 surrogate, which no UTF-8 text can hold."""


class NestedTooDeeply(ValueError):
    """The JSON nests deeper than the parser's recursion allows."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=unique_object)
"""One decoder for every request (json.loads with options builds a new one each time);
no NaN or Infinity, no name twice in an object."""
# The escapes of UTF-16 surrogates (an escaped backslash before one is a false alarm,
# which the exact check then clears).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def may_hold_surrogate(text: str) -> bool:
    """Whether JSON ``text`` escapes a UTF-16 surrogate (then only a whole parse can tell
    a lone one from a pair); one substring search for the usual text."""
    return "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None


def strict_json(text: str | bytes) -> Any:
    """Parse standard JSON text; raise ValueError if it is not JSON the node can store.

    :class:`TextNotEncodable` for a lone surrogate in a string or key,
    :class:`DuplicateName` for an object holding a name twice,
    :class:`NestedTooDeeply` for nesting beyond the recursion limit, a plain
    ValueError (or UnicodeDecodeError) for anything else.
    """
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text))  # strict: no "surrogatepass"
    elif not text.isascii():
        _check_encodable(text)  # a header aiohttp decoded with "surrogateescape"
    try:
        value = DECODER.decode(text)
    except RecursionError:
        raise NestedTooDeeply("JSON nested too deeply") from None
    if may_hold_surrogate(text):
        try:
            _check_encodable(json.dumps(value, ensure_ascii=False))
        except RecursionError:
            raise NestedTooDeeply("JSON nested too deeply") from None
    return value


def _check_encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        found = error.object[error.start : error.end].encode("ascii", "backslashreplace")
        raise TextNotEncodable(
            f"a string holds {found.decode()}, a lone UTF-16 surrogate: "
            "text must be valid Unicode (a surrogate escape only as half of a pair)"
        ) from None
