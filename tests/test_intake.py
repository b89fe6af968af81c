"""The one validation layer: its checks, and HTTP input refused through it (a real node)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv.http import validation
from edgekv.http.errors import ApiError
from edgekv_replication.envelope import (
    MAX_BATCH_CHANGES,
    Batch,
    EnvelopeError,
    Members,
    decode,
    encode,
)
from edgekv_replication.intake import (
    MEMBER_STAMP_MARGIN_MS,
    Limits,
    Refused,
    check_change,
    check_changes,
    member_problem,
)
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from tests.intake_cases import LIMIT_ARGS, LIMITS, good_change, invalid_changes

# -- the checks themselves --------------------------------------------------------------


@given(invalid_changes("ns"), st.integers(min_value=0, max_value=5))
def test_a_batch_with_any_invalid_change_is_refused_whole(bad: Any, position: int) -> None:
    good = [good_change("ns", f"k{i}".encode(), seq=i + 1) for i in range(5)]
    batch = [*good[:position], bad, *good[position:]]
    with pytest.raises(Refused) as refused:
        check_changes(batch, LIMITS)
    assert f"change {position} " in refused.value.message


def test_valid_changes_pass() -> None:
    check_changes([good_change("a.b-c_1", "ключ".encode())], LIMITS)
    check_change(good_change("ns", b"k")._replace(metadata=None, value=None), LIMITS)
    check_change(good_change("ns", b"k")._replace(expiration=2_000_000_000), LIMITS)
    # What the API stores as metadata passes: compact, escaped to ASCII.
    stored = validation.metadata({"é": [1, "\r\n"], "n": None}, _config())
    assert stored is not None
    check_change(good_change("ns", b"k")._replace(metadata=stored), Limits())
    # A document change with a compacted snapshot's version.
    snapshot = good_change("@doc:users", b"u1")._replace(metadata="0" * 16 + "a" * 16)
    check_change(snapshot, LIMITS)


def test_http_checks_keep_their_codes_and_messages() -> None:
    config = _config()
    cases: list[tuple[Callable[[], object], str, str]] = [
        (lambda: validation.namespace("a b"), "invalid_namespace", "must match"),
        (lambda: validation.key("", config), "invalid_key", "non-empty string"),
        (lambda: validation.key("..", config), "invalid_key", "cannot be keys"),
        (lambda: validation.key("\ud800", config), "invalid_key", "valid UTF-8"),
        (lambda: validation.key("k" * 17, config), "key_too_long", "key is 17 bytes"),
        (lambda: validation.metadata([1], config), "invalid_metadata", "JSON object"),
        (lambda: validation.metadata({"a": "x" * 40}, config), "metadata_too_large", "limit"),
        (lambda: validation.value_size(65, config), "value_too_large", "value is 65 bytes"),
    ]
    for call, code, words in cases:
        with pytest.raises(ApiError) as error:
            call()
        assert (error.value.code, words in error.value.message) == (code, True)


def test_a_batch_over_the_limit_is_refused_while_decoding() -> None:
    changes = tuple(good_change("n", b"k", seq=i + 1) for i in range(MAX_BATCH_CHANGES + 1))
    with pytest.raises(EnvelopeError, match="at most 5000 changes"):
        decode(encode(Batch(0, len(changes), changes, 0)))
    members = tuple((i, "http://x", "x", False, 1, "") for i in range(MAX_BATCH_CHANGES + 1))
    with pytest.raises(EnvelopeError, match="too large"):
        decode(encode(Members(members)))


def test_member_entries_stamped_far_ahead_are_refused() -> None:
    now = 1_700_000_000_000
    ahead = 500 + MEMBER_STAMP_MARGIN_MS
    assert member_problem((1, "http://a:1", "a", False, now + ahead, ""), now, ahead) is None
    assert "ahead" in str(
        member_problem((1, "http://a:1", "a", False, now + ahead + 1, ""), now, ahead)
    )
    assert member_problem((1, "ftp://a", "a", False, now, ""), now, ahead) is not None
    assert member_problem((1, "http://a b", "a", False, now, ""), now, ahead) is not None


def _config() -> Any:
    from edgekv.config import Config

    return Config(
        max_key_bytes=LIMITS.max_key_bytes,
        max_value_bytes=LIMITS.max_value_bytes,
        max_metadata_bytes=LIMITS.max_metadata_bytes,
    )


# -- HTTP input, at a real node ---------------------------------------------------------


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("limited"), LIMIT_ARGS).start()
    yield node
    node.kill()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_GOOD_OP = {"op": "put", "key": "good", "value": _b64(b"v")}
_bad_op_fields = st.one_of(
    st.sampled_from(["", ".", "..", "\ud800", "k" * 17, "é" * 9]).map(
        lambda key: (
            {"key": key},
            # A lone surrogate is refused by the JSON parser, before the key check.
            "invalid_unicode"
            if key == "\ud800"
            else "invalid_key"
            if len(key.encode("utf-8", "replace")) <= 16
            else "key_too_long",
        )
    ),
    st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text(max_size=5)).map(
        lambda meta: ({"metadata": meta}, "invalid_metadata")
    ),
    st.text(min_size=30, max_size=40).map(
        lambda text: ({"metadata": {"k": text}}, "metadata_too_large")
    ),
    st.one_of(
        st.integers(max_value=0).map(lambda ttl: {"ttl": ttl}),
        st.integers(min_value=10**12).map(lambda ttl: {"ttl": ttl}),
        st.integers(max_value=int(time.time()) - 10).map(lambda at: {"expiration": at}),
        st.sampled_from([{"ttl": "5"}, {"ttl": 1.5}, {"ttl": True}, {"expiration": "9999999999"}]),
    ).map(lambda fields: (fields, "invalid_expiration")),
    st.binary(min_size=65, max_size=100).map(lambda raw: ({"value": _b64(raw)}, "value_too_large")),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=_bad_op_fields,
    good_first=st.booleans(),
)
def test_http_input_breaking_a_limit_is_refused_and_nothing_stored(
    limited_node: NodeProcess, fields: tuple[dict[str, Any], str], good_first: bool
) -> None:
    changed, code = fields
    bad = {"op": "put", "key": "bad", "value": _b64(b"v"), **changed}
    operations = [_GOOD_OP, bad] if good_first else [bad, _GOOD_OP]
    answer = limited_node.request(
        "POST", "/v1/kv/h/_bulk", body=json.dumps({"operations": operations})
    )
    assert_error(answer, code)
    _assert_nothing_stored(limited_node, "h")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.one_of(
        st.text(
            alphabet=st.characters(
                min_codepoint=33, max_codepoint=126, exclude_characters="/?#%{}"
            ),
            min_size=65,
            max_size=70,
        ).map(lambda ns: (ns, "k", {}, b"v", "invalid_namespace")),
        st.sampled_from(["a b", "ns:x", "@doc", "é", "a+b"]).map(
            lambda ns: (ns, "k", {}, b"v", "invalid_namespace")
        ),
        st.sampled_from(["not json", "[1]", "1", '{"a":NaN}', "{"]).map(
            lambda meta: ("h", "k", {"EdgeKV-Metadata": meta}, b"v", "invalid_metadata")
        ),
        st.sampled_from(
            ["ttl=0", "ttl=-1", "ttl=x", "expiration=1", "ttl=1&expiration=9999999999"]
        ).map(lambda query: ("h", "k?" + query, {}, b"v", "invalid_expiration")),
        st.binary(min_size=65, max_size=100).map(
            lambda raw: ("h", "k", {}, raw, "value_too_large")
        ),
        st.sampled_from(["k" * 17, "é" * 9]).map(lambda key: ("h", key, {}, b"v", "key_too_long")),
    )
)
def test_http_put_breaking_a_limit_is_refused_and_nothing_stored(
    limited_node: NodeProcess, case: tuple[str, str, dict[str, str], bytes, str]
) -> None:
    ns, key, headers, body, code = case
    key, _, query = key.partition("?")
    path = f"/v1/kv/{quote(ns, safe='')}/{quote(key, safe='')}" + (f"?{query}" if query else "")
    assert_error(limited_node.request("PUT", path, body=body, headers=headers), code)
    _assert_nothing_stored(limited_node, "h")


def _assert_nothing_stored(node: NodeProcess, ns: str) -> None:
    listing = node.request("GET", f"/v1/kv/{ns}")
    assert listing.status == 200
    assert listing.json()["keys"] == []
    assert node.request("GET", f"/v1/kv/{ns}/good").status == 404


def test_the_shared_limits_are_the_node_settings(tmp_path: Path) -> None:
    from edgekv_replication.intake import limits_of

    assert limits_of(_config()) == LIMITS
