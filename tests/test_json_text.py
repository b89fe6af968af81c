"""The one JSON parser of request text: standard JSON, and only text that encodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv.json_text import DuplicateName, NestedTooDeeply, TextNotEncodable, strict_json

_LEAF = st.none() | st.booleans() | st.integers() | st.text()
_JSON = st.recursive(
    _LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON, st.booleans())
def test_valid_json_parses_to_what_was_written(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert strict_json(text) == value
    assert strict_json(text.encode()) == value


@given(_JSON, st.integers(0xD800, 0xDFFF), st.booleans(), st.booleans())
def test_a_lone_surrogate_anywhere_is_refused(
    value: Any, surrogate: int, in_key: bool, as_str: bool
) -> None:
    lone = chr(surrogate)
    poisoned = {lone: value} if in_key else [value, {"k": ["x" + lone + "y"]}]
    text = json.dumps(poisoned)  # the surrogate as an escape
    with pytest.raises(TextNotEncodable):
        strict_json(text if as_str else text.encode())
    # Raw, the surrogate is no UTF-8 at all: refused as bytes, and as text.
    raw = json.dumps(poisoned, ensure_ascii=False)
    with pytest.raises(UnicodeDecodeError):
        strict_json(raw.encode("utf-8", "surrogatepass"))
    with pytest.raises(TextNotEncodable):
        strict_json(raw)


@pytest.mark.parametrize(
    "text",
    [
        r'"\ud83d\ude00"',  # a pair: one character
        r'"\\ud800"',  # a backslash, then the letters: no surrogate
        r'{"a":"\uD7FF\uE000"}',  # just outside the surrogate range
    ],
)
def test_what_looks_like_a_surrogate_but_is_not_parses(text: str) -> None:
    assert strict_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_non_json_constants_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not JSON"):
        strict_json(text)


def test_too_deep_a_nesting_is_its_own_error() -> None:
    with pytest.raises(NestedTooDeeply):
        strict_json("[" * 100_000 + "]" * 100_000)


def test_other_encodings_rfc_8259_allows_are_read() -> None:
    assert strict_json('{"a":"é"}'.encode("utf-16")) == {"a": "é"}
    assert strict_json(b'\xef\xbb\xbf{"a":1}') == {"a": 1}


@given(_JSON, st.text(max_size=8), st.integers(0, 3), st.booleans())
def test_a_name_twice_in_any_object_is_refused_and_named(
    value: Any, name: str, depth: int, as_str: bool
) -> None:
    inner = json.dumps(value)
    twice = f"{{{json.dumps(name)}: 1, {json.dumps(name)}: {inner}}}"
    for _ in range(depth):
        twice = f'{{"outer": [{twice}]}}'
    with pytest.raises(DuplicateName) as refused:
        strict_json(twice if as_str else twice.encode())
    assert json.dumps(name) in str(refused.value)


def test_names_that_only_look_alike_are_different_names() -> None:
    # An escape spells the same name as its character: the parsed names are compared.
    with pytest.raises(DuplicateName):
        strict_json('{"a": 1, "\\u0061": 2}')
    assert strict_json('{"a": 1, "A": 2, "a ": 3}') == {"a": 1, "A": 2, "a ": 3}


def test_a_long_duplicate_name_is_shortened_in_the_message() -> None:
    name = "n" * 10_000
    with pytest.raises(DuplicateName) as refused:
        strict_json(json.dumps([{name: 1, "x": 2}]).replace('"x"', json.dumps(name)))
    assert len(str(refused.value)) < 200
