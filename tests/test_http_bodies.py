"""The stepped JSON object parser of large bodies agrees with ``json.loads``, errors included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv.http.bodies import json_object_in_steps
from edgekv.http.errors import ApiError
from edgekv.http.validation import json_object

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_objects = st.dictionaries(st.text(), _values | st.lists(_values, max_size=6), max_size=6)
_layouts = st.sampled_from(
    [{}, {"separators": (",", ":")}, {"indent": 2}, {"indent": "\t", "ensure_ascii": False}]
)


@given(_objects, _layouts)
def test_same_object_as_json_loads(document: dict[str, Any], layout: dict[str, Any]) -> None:
    body = json.dumps(document, **layout).encode()
    assert json_object_in_steps(body) == json.loads(body)


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return ("ok", parse(body))
    except ApiError as error:
        return ("error", error.code, error.message)


@given(_objects, st.integers(min_value=0, max_value=400), st.binary(max_size=3))
def test_damaged_bodies_get_the_same_answer(
    document: dict[str, Any], cut: int, junk: bytes
) -> None:
    body = json.dumps({"operations": [document]}).encode()
    damaged = body[:cut] + junk + body[cut + len(junk) :]
    assert _outcome(json_object_in_steps, damaged) == _outcome(json_object, damaged)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"1",
        b'{"a": NaN}',
        b'{"a": 1} x',
        b'{"a" 1}',
        b"{1: 2}",
        b'{"a": [1 2]}',
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": [1], }',
        '{"a": "é"}'.encode("utf-16"),
        b'{"a": 1, "a": 2}',
        b'{"a": [1], "b": 2, "a": [3]}',
        b'{"a": [{"x": 1, "x": 1}]}',
        b'{"a": {"x": 1, "x": 1}}',
    ],
)
def test_odd_bodies_get_the_same_answer(body: bytes) -> None:
    assert _outcome(json_object_in_steps, body) == _outcome(json_object, body)
