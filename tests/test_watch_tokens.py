"""Watch tokens, the SSE parser and the client's watch cursor, without a node."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv_client._watch import SseParser, WatchCursor
from edgekv_replication.watch_tokens import (
    MAX_ORIGINS,
    WatchToken,
    below_any,
    covers,
    merged,
)

U63 = st.integers(0, 2**63 - 1)
VECTORS = st.dictionaries(U63, U63, max_size=MAX_ORIGINS)


@given(U63, U63, U63, VECTORS)
def test_a_token_survives_its_wire_form(
    node: int, incarnation: int, seq: int, vector: dict[int, int]
) -> None:
    token = WatchToken(node, incarnation, seq, vector)
    text = token.encode()
    assert WatchToken.decode(text) == token
    assert "\n" not in text
    assert "," not in text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "w1.",
        "w1.1.2.3",
        "w1.1.2.3.4",
        "w1.1.2.3.4-",
        "w1.1.2.3.-5",
        "w1.1.2.3.4-5_4-6",  # an origin twice
        "w1.1.2.3.4-5.6",
        "w1.1.2.G.",
        "w1.1.2.3." + "_".join(f"{i:x}-1" for i in range(MAX_ORIGINS + 1)),
        "w1.11111111111111111.2.3.",  # over 64 bits
        "b1.1.2.3",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="watch token"):
        WatchToken.decode(text)


def test_coverage_rules() -> None:
    vector = {1: 10, 2: 5}
    assert covers(vector, 10, 1)
    assert not covers(vector, 11, 1)
    assert not covers(vector, 0, 3)  # an origin it does not name: nothing covered
    assert merged(vector, {1: 4, 3: 7}) == {1: 10, 2: 5, 3: 7}
    assert not below_any(vector, {1: 10, 2: 5})
    assert below_any(vector, {2: 6})
    assert below_any(vector, {3: 0})


def test_the_parser_takes_events_split_anywhere() -> None:
    stream = (
        b': heartbeat\n\nid: t1\nevent: change\ndata: {"a":1}\n\n'
        b"id: t2\r\n: heartbeat\r\n\r\nevent: ready\ndata: {}\n\n"
    )
    for cut in range(len(stream)):
        parser = SseParser()
        blocks = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert blocks == [("change", '{"a":1}', "t1"), ("id", "", "t2"), ("ready", "{}", None)]


def _change(key: str, version: str) -> tuple[str, str, str | None]:
    data = {"key": key, "op": "put", "version": version, "value": "", "bookmark": "b1.1.1.1"}
    return ("change", json.dumps(data), f"tok-{key}-{version}")


def test_the_cursor_drops_states_it_delivered_or_older_ones() -> None:
    cursor = WatchCursor("kv", ["http://a", "http://b"], None, snapshot=True, max_backoff=1)
    assert cursor.wants_snapshot()
    first = list(cursor.take([_change("k", "02"), _change("j", "01")]))
    assert [(e.key, e.version) for e in first] == [("k", "02"), ("j", "01")]
    assert cursor.token == "tok-j-01"
    assert not cursor.wants_snapshot()  # a resumed stream sends what was missed instead
    # After a resume elsewhere: a repeat and an older state are dropped, a newer one kept.
    again = list(cursor.take([_change("k", "02"), _change("k", "01"), _change("j", "03")]))
    assert [(e.key, e.version) for e in again] == [("j", "03")]
    assert cursor.token == "tok-j-03"  # the token moves on with every id, delivered or not


def test_a_watch_left_midway_does_not_count_what_it_did_not_yield() -> None:
    # A caller breaks out of a watch after the first event of a chunk, and goes on with
    # another watch sharing the versions: the rest of that chunk was never delivered, so
    # when a stream sends it again it is new, not "already seen".
    versions: OrderedDict[str, str] = OrderedDict()
    cursor = WatchCursor("kv", ["http://a"], None, False, max_backoff=1, versions=versions)
    for event in cursor.take([_change("k", "02"), _change("j", "05")]):
        assert (event.key, event.version) == ("k", "02")
        break
    assert cursor.token == "tok-k-02"  # not past the event left unread
    successor = WatchCursor("kv", ["http://b"], "tok-k-02", False, max_backoff=1, versions=versions)
    again = list(successor.take([_change("k", "02"), _change("j", "05")]))
    assert [(e.key, e.version) for e in again] == [("j", "05")]


def test_the_cursor_moves_to_the_next_pop_and_backs_off() -> None:
    cursor = WatchCursor("kv", ["http://a", "http://b"], "w1.1.1.1.", False, max_backoff=0.4)
    assert cursor.headers(None)["Last-Event-ID"] == "w1.1.1.1."
    delays = []
    for _ in range(6):
        delays.append(cursor.failed())
    assert cursor.url == "http://a"
    assert all(0 < d <= 0.4 for d in delays)
    # A relist forgets the token and the versions: the next stream starts afresh.
    list(cursor.take([("relist", "{}", None)]))
    assert cursor.token is None
    assert "Last-Event-ID" not in cursor.headers(None)
