"""Document queries: ``where``, ``order_by``, ``limit`` and ``cursor`` parsed into one page.

A field is a dotted path of names (``address.city``), read from the
materialized JSON. The parsed page (:class:`~edgekv.store.doc_queries.QuerySpec`)
becomes SQL in :mod:`edgekv.store.doc_queries`, where an expression index
declared on the same field (:mod:`edgekv.documents.indexes`) matches it.

Filters: ``field==value``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; several
``where`` parameters all hold. The value is a JSON literal (``30``,
``"30"``, ``true``, ``null``); text that is not JSON is taken as a string
(``status==active``). Numbers, strings and booleans never compare equal to
each other (SQLite orders every number before every string).

Order: ``order_by=field`` (ascending) or ``-field`` (descending), then the
document id; without ``order_by``, by id. Documents whose ``order_by`` field
is missing or null are left out. Pages resume after the last document of the
previous page (the cursor names it), so they stay consistent while others
write.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from edgekv.json_text import DuplicateName, NestedTooDeeply, TextNotEncodable, strict_json
from edgekv.store.doc_queries import FIELD, Filter, Query, QuerySpec, build_sql

_FILTER = re.compile(r"\s*(" + FIELD.pattern + r")\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*", re.DOTALL)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_FILTERS = 32
"""Most ``where`` filters in one query (SQLite refuses very deep expressions)."""
_INT64 = range(-(2**63), 2**63 - 1)  # what documents store: see number_out_of_range


class QueryError(ValueError):
    """A where / order_by / cursor / limit that does not parse; ``code`` is the API code."""

    def __init__(self, code: str, message: str) -> None:
        """Create an error carrying its API error code."""
        super().__init__(message)
        self.code = code
        self.message = message


def check_field(field: str) -> str:
    """``field`` if it is a dotted path of names, else ``invalid_parameter``."""
    if not FIELD.fullmatch(field):
        raise QueryError("invalid_parameter", f"a field is a dotted path of names: {field!r}")
    return field


ReadRows = Callable[[Query], Iterator[tuple[Any, ...]]]
"""What runs a query: :meth:`edgekv.store.documents.DocumentStore.query_rows`."""


def answer(read_rows: ReadRows, page: Query, max_bytes: int) -> str:
    """The JSON answer of a query page: documents, ``list_complete`` and ``cursor``.

    The page ends at ``page.limit`` documents or once those taken hold
    ``max_bytes`` of JSON (counted in characters; at least one document is
    always taken), whichever comes first; the cursor then resumes after the
    last one. Rows are read one at a time, so no more than the page is held.
    """
    rows: list[tuple[Any, ...]] = []
    size = 0
    complete = True
    for row in read_rows(page):
        if len(rows) == page.limit or size >= max_bytes:
            complete = False  # a row remains: the client pages on
            break
        rows.append(row)
        size += len(row[0])
    items = ",".join([row[0] for row in rows])
    cursor = "null"
    if not complete:
        _, last_id, last_value = rows[-1]
        cursor = f'"{encode_cursor(last_value, last_id)}"'  # base64url: nothing to escape
    complete_text = "true" if complete else "false"
    return f'{{"documents":[{items}],"list_complete":{complete_text},"cursor":{cursor}}}'


_SCALARS_ONLY = "compare fields with numbers, strings, booleans"


def _literal(text: str) -> Any:
    try:
        value = strict_json(text)
    except TextNotEncodable as error:
        raise QueryError("invalid_unicode", f"where: {error}") from None
    except (NestedTooDeeply, DuplicateName):
        # Arrays or objects past the parser's depth, or objects holding a name twice:
        # refused as any array or object is below, not compared as the bare text it
        # would be if it were not JSON at all.
        raise QueryError("invalid_parameter", _SCALARS_ONLY) from None
    except ValueError:
        return _bindable(text)
    if isinstance(value, dict | list):
        raise QueryError("invalid_parameter", _SCALARS_ONLY)
    if isinstance(value, bool):
        return int(value)  # json_extract reads true / false as 1 / 0
    if isinstance(value, float) and value.is_integer() and -(2.0**63) <= value < 2.0**63:
        value = int(value)
    return _bindable(value)


def _bindable(value: Any) -> Any:
    """``value`` if SQLite can bind it as documents store it, else a QueryError.

    SQLite integers are 64-bit (a larger one raises OverflowError on binding), a
    stored number is finite, and a string with a lone surrogate has no UTF-8.
    """
    if isinstance(value, int) and value not in _INT64:
        raise QueryError("number_out_of_range", "an integer in a query lies in -2**63..2**63-2")
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError("number_out_of_range", "a number in a query is finite")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise QueryError("invalid_parameter", "text in a query must be valid UTF-8") from None
    return value


def parse_filter(text: str) -> Filter:
    """``field op value`` as a :class:`~edgekv.store.doc_queries.Filter`."""
    match = _FILTER.fullmatch(text)
    if not match:
        raise QueryError(
            "invalid_parameter", f"where must read field==value (or != < <= > >=): {text!r}"
        )
    field, op, raw = match.groups()
    check_field(field)
    value = _literal(raw)
    if value is None and op not in ("==", "=", "!="):
        raise QueryError("invalid_parameter", "null compares only with == and !=")
    return Filter(field, op, value)


def encode_cursor(order_value: Any, doc_id: str) -> str:
    """The cursor that resumes after the document ``doc_id`` (sorted at ``order_value``)."""
    raw = json.dumps([order_value, doc_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> tuple[Any, str]:
    """The ``(order value, id)`` a cursor resumes after, or ``invalid_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value, doc_id = strict_json(raw)  # a lone surrogate too: no cursor of ours
    except (binascii.Error, ValueError, TypeError):
        raise QueryError("invalid_cursor", "cursor was not issued by this API") from None
    if not isinstance(doc_id, str) or isinstance(value, dict | list):
        raise QueryError("invalid_cursor", "cursor was not issued by this API")
    try:
        return _bindable(value), _bindable(doc_id)
    except QueryError:
        raise QueryError("invalid_cursor", "cursor was not issued by this API") from None


def parse_limit(text: str | None) -> int:
    """The page size: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent."""
    if text is None:
        return DEFAULT_LIMIT
    # The length first: int() refuses more than 4300 digits with a ValueError.
    digits = len(text) <= 12 and text.isascii() and text.isdigit()
    if not digits or not 1 <= int(text) <= MAX_LIMIT:
        raise QueryError("invalid_parameter", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def build(
    collection: str,
    where: list[str],
    order_by: str | None,
    limit: int,
    cursor: str | None,
) -> Query:
    """The page to run: ``where`` / ``order_by`` / ``cursor`` parsed, its SQL built by the store."""
    if len(where) > MAX_FILTERS:
        raise QueryError("invalid_parameter", f"a query has at most {MAX_FILTERS} where filters")
    filters = tuple(parse_filter(text) for text in where)
    descending = order_by is not None and order_by.startswith("-")
    order_field = check_field(order_by.lstrip("-")) if order_by else None
    after = decode_cursor(cursor) if cursor else None
    return build_sql(QuerySpec(collection, filters, order_field, descending, after, limit))
