"""Integration tests of the key-value HTTP API against a real ``edgekv serve`` process.

Covers single-key put/get/delete, expiry, listing (order, prefixes, paging, paging
under concurrent writes), bulk writes, get-many, the error shape and the system
routes. Limits (namespace and key syntax, sizes) live in ``test_http_limits.py``.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from edgekv_replication.bookmarks import Bookmark
from edgekv_replication.codes import ERROR_CODES
from edgekv_replication.versions import decode_version
from testkit.processes import NodeProcess
from testkit.responses import Response, assert_error

# -- helpers -------------------------------------------------------------------


def kv_path(ns: str, key: str, **query: str | int) -> str:
    """The URL path of a key: percent-encoded, '/' kept readable (as the client does)."""
    path = f"/v1/kv/{quote(ns, safe='')}/{quote(key, safe='/')}"
    return f"{path}?{urlencode(query)}" if query else path


def list_path(ns: str, **query: str | int) -> str:
    return f"/v1/kv/{ns}?{urlencode(query)}" if query else f"/v1/kv/{ns}"


def put(
    node: NodeProcess,
    ns: str,
    key: str,
    value: bytes,
    metadata: Any = None,
    **query: str | int,
) -> dict[str, Any]:
    headers = {} if metadata is None else {"EdgeKV-Metadata": json.dumps(metadata)}
    response = node.request("PUT", kv_path(ns, key, **query), body=value, headers=headers)
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def get(node: NodeProcess, ns: str, key: str) -> Response:
    return node.request("GET", kv_path(ns, key))


def assert_absent(node: NodeProcess, ns: str, key: str) -> None:
    assert_error(get(node, ns, key), "not_found")


def list_page(node: NodeProcess, ns: str, **query: str | int) -> dict[str, Any]:
    response = node.request("GET", list_path(ns, **query))
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def list_all(node: NodeProcess, ns: str, **query: str | int) -> list[dict[str, Any]]:
    """Every listed key, following cursors."""
    keys: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = list_page(node, ns, **query, **({"cursor": cursor} if cursor else {}))
        keys.extend(page["keys"])
        if page["list_complete"]:
            assert page["cursor"] is None
            return keys
        cursor = page["cursor"]
        assert isinstance(cursor, str)
        assert cursor
    raise AssertionError("listing did not complete")


def names(node: NodeProcess, ns: str, **query: str | int) -> list[str]:
    return [entry["name"] for entry in list_all(node, ns, **query)]


def bulk(node: NodeProcess, ns: str, operations: list[dict[str, Any]]) -> Response:
    return node.request("POST", f"/v1/kv/{ns}/_bulk", json_body={"operations": operations})


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def utf8_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


# -- put / get / delete -----------------------------------------------------------


def test_put_answers_bookmark_and_version_and_get_returns_value(
    shared_node: NodeProcess, ns: str
) -> None:
    response = shared_node.request("PUT", kv_path(ns, "greeting"), body=b"hello")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {"bookmark", "version"}
    assert answer["bookmark"].startswith("b1.")
    Bookmark.decode(answer["bookmark"])  # well-formed
    decode_version(answer["version"])

    got = get(shared_node, ns, "greeting")
    assert got.status == 200
    assert got.body == b"hello"
    assert got.headers["ETag"] == f'"{answer["version"]}"'
    assert got.headers["Content-Type"].startswith("application/octet-stream")
    assert "EdgeKV-Metadata" not in got.headers
    assert "EdgeKV-Expiration" not in got.headers


def test_overwrite_replaces_value_and_version(shared_node: NodeProcess, ns: str) -> None:
    first = put(shared_node, ns, "k", b"one", metadata={"v": 1}, ttl=3600)
    second = put(shared_node, ns, "k", b"two")
    assert second["version"] != first["version"]
    assert decode_version(second["version"]) > decode_version(first["version"])
    assert Bookmark.decode(second["bookmark"]).seq > Bookmark.decode(first["bookmark"]).seq
    got = get(shared_node, ns, "k")
    assert got.body == b"two"
    assert got.headers["ETag"] == f'"{second["version"]}"'
    # An overwrite without metadata or expiration clears both.
    assert "EdgeKV-Metadata" not in got.headers
    assert "EdgeKV-Expiration" not in got.headers


@pytest.mark.parametrize(
    "value",
    [
        b"",
        bytes(range(256)),
        bytes(range(255, -1, -1)) * 4,
        b"\x00",
        b"\r\n\r\nHTTP/1.1 200 OK\r\n",
        "ünïcödé 𝄞".encode(),
        b"\xff\xfe\xfd",
        random.Random(7).randbytes(100_000),
    ],
    ids=[
        "empty",
        "all-bytes",
        "all-bytes-reversed",
        "nul",
        "crlf",
        "utf8",
        "invalid-utf8",
        "random-100k",
    ],
)
def test_values_are_binary_safe(shared_node: NodeProcess, ns: str, value: bytes) -> None:
    answer = put(shared_node, ns, "bin", value)
    got = get(shared_node, ns, "bin")
    assert got.status == 200
    assert got.body == value
    assert got.headers["Content-Length"] == str(len(value))
    assert got.headers["ETag"] == f'"{answer["version"]}"'


def test_metadata_round_trips_through_get_list_and_get_many(
    shared_node: NodeProcess, ns: str
) -> None:
    metadata = {"owner": "ops", "n": 3, "nested": {"list": [1, 2.5, None, True]}, "ü": "𝄞"}
    put(shared_node, ns, "meta", b"v", metadata=metadata)
    got = get(shared_node, ns, "meta")
    assert json.loads(got.headers["EdgeKV-Metadata"]) == metadata
    assert list_all(shared_node, ns) == [{"name": "meta", "expiration": None, "metadata": metadata}]
    many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": ["meta"]})
    assert many.json()["entries"]["meta"]["metadata"] == metadata


def test_empty_metadata_object_is_kept(shared_node: NodeProcess, ns: str) -> None:
    put(shared_node, ns, "k", b"v", metadata={})
    assert json.loads(get(shared_node, ns, "k").headers["EdgeKV-Metadata"]) == {}


def test_ttl_sets_expiration(shared_node: NodeProcess, ns: str) -> None:
    before = int(time.time())
    put(shared_node, ns, "k", b"v", ttl=3600)
    after = int(time.time())
    expiration = int(get(shared_node, ns, "k").headers["EdgeKV-Expiration"])
    assert before + 3600 <= expiration <= after + 3600
    assert list_all(shared_node, ns)[0]["expiration"] == expiration


def test_expiration_sets_expiration(shared_node: NodeProcess, ns: str) -> None:
    at = int(time.time()) + 7200
    put(shared_node, ns, "k", b"v", expiration=at)
    assert get(shared_node, ns, "k").headers["EdgeKV-Expiration"] == str(at)
    assert list_all(shared_node, ns) == [{"name": "k", "expiration": at, "metadata": None}]


def _future() -> str:
    return str(int(time.time()) + 3600)


def _past() -> str:
    return str(int(time.time()) - 10)


@pytest.mark.parametrize(
    "query",
    [
        lambda: {"ttl": "60", "expiration": _future()},
        lambda: {"ttl": "0"},
        lambda: {"ttl": "-5"},
        lambda: {"ttl": "1.5"},
        lambda: {"ttl": "abc"},
        lambda: {"ttl": ""},
        lambda: {"ttl": "1e3"},
        lambda: {"ttl": "\u00b2"},  # superscript two: str.isdigit() is true for it
        lambda: {"expiration": _past()},
        lambda: {"expiration": "0"},
        lambda: {"expiration": "-1"},
        lambda: {"expiration": _future() + ".5"},
        lambda: {"expiration": "soon"},
        lambda: {"expiration": "\u00b2"},
    ],
    ids=[
        "both",
        "ttl-zero",
        "ttl-negative",
        "ttl-fraction",
        "ttl-text",
        "ttl-empty",
        "ttl-exponent",
        "ttl-superscript-digit",
        "expiration-past",
        "expiration-zero",
        "expiration-negative",
        "expiration-fraction",
        "expiration-text",
        "expiration-superscript-digit",
    ],
)
def test_invalid_expiration_is_rejected_and_nothing_written(
    shared_node: NodeProcess, ns: str, query: Callable[[], dict[str, str]]
) -> None:
    response = shared_node.request("PUT", kv_path(ns, "k", **query()), body=b"v")
    assert_error(response, "invalid_expiration")
    assert_absent(shared_node, ns, "k")


@pytest.mark.parametrize(
    "header",
    [
        "not json",
        "{",
        "[1, 2]",
        "null",
        "42",
        '"a string"',
        "true",
        "",
        '{"a": NaN}',
        '{"a": Infinity}',
        "[" * 3000,
    ],
    ids=[
        "text",
        "truncated",
        "array",
        "null",
        "number",
        "string",
        "bool",
        "empty",
        "nan",
        "infinity",
        "deeply-nested",
    ],
)
def test_invalid_metadata_is_rejected_and_nothing_written(
    shared_node: NodeProcess, ns: str, header: str
) -> None:
    response = shared_node.request(
        "PUT", kv_path(ns, "k"), body=b"v", headers={"EdgeKV-Metadata": header}
    )
    assert_error(response, "invalid_metadata")
    assert_absent(shared_node, ns, "k")


def test_get_absent_key_is_404(shared_node: NodeProcess, ns: str) -> None:
    assert_absent(shared_node, ns, "never-written")
    put(shared_node, ns, "other", b"v")
    assert_absent(shared_node, ns, "never-written")


def test_delete_is_idempotent(shared_node: NodeProcess, ns: str) -> None:
    written = put(shared_node, ns, "k", b"v")
    first = shared_node.request("DELETE", kv_path(ns, "k"))
    assert first.status == 200
    assert first.json()["bookmark"].startswith("b1.")
    assert Bookmark.decode(first.json()["bookmark"]).seq > Bookmark.decode(written["bookmark"]).seq
    assert_absent(shared_node, ns, "k")
    again = shared_node.request("DELETE", kv_path(ns, "k"))
    assert again.status == 200
    assert again.json()["bookmark"].startswith("b1.")
    never = shared_node.request("DELETE", kv_path(ns, "never-existed"))
    assert never.status == 200
    assert never.json()["bookmark"].startswith("b1.")
    assert_absent(shared_node, ns, "k")
    assert_absent(shared_node, ns, "never-existed")
    assert list_all(shared_node, ns) == []
    # A deleted key can be written again.
    put(shared_node, ns, "k", b"back")
    assert get(shared_node, ns, "k").body == b"back"


ODD_KEYS = [
    "a/b/c",
    "dir/",
    "/leading",
    "a//b",
    "with space",
    "ünïcödé",
    "日本語/キー",
    "𝄞 music",
    "100%",
    "%41%2F",  # looks percent-encoded; must not be decoded twice
    "q?x=1&y=2",
    "h#fragment",
    "a+b",
    "semi;colon",
    "tab\there",
    "...",
    ".hidden",
    "a/./b",
    "a/../b",
    "_bulk",
    "_get",
    "emoji-😀",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_key_round_trips(shared_node: NodeProcess, ns: str, key: str) -> None:
    value = key.encode("utf-8") + b"!"
    answer = put(shared_node, ns, key, value)
    got = get(shared_node, ns, key)
    assert got.status == 200, got.body
    assert got.body == value
    # Fully percent-encoded (even '/') names the same key.
    full = shared_node.request("GET", f"/v1/kv/{ns}/{quote(key, safe='')}")
    assert full.status == 200
    assert full.body == value
    assert names(shared_node, ns) == [key]
    many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": [key]})
    assert many.json()["entries"][key]["version"] == answer["version"]
    assert shared_node.request("DELETE", kv_path(ns, key)).status == 200
    assert_absent(shared_node, ns, key)
    assert names(shared_node, ns) == []


def test_odd_keys_coexist_and_list_in_byte_order(shared_node: NodeProcess, ns: str) -> None:
    ops = [{"op": "put", "key": key, "value": b64(key.encode())} for key in ODD_KEYS]
    assert bulk(shared_node, ns, ops).status == 200
    assert names(shared_node, ns) == utf8_order(ODD_KEYS)
    for key in ODD_KEYS:
        assert get(shared_node, ns, key).body == key.encode()


# -- expiry ---------------------------------------------------------------------


def test_expired_keys_read_as_absent_and_leave_the_listing(
    shared_node: NodeProcess, ns: str
) -> None:
    at = int(time.time()) + 2
    put(shared_node, ns, "by-expiration", b"a", expiration=at)
    put(shared_node, ns, "by-ttl", b"b", ttl=1)
    response = bulk(
        shared_node, ns, [{"op": "put", "key": "by-bulk", "value": b64(b"c"), "expiration": at}]
    )
    assert response.status == 200
    put(shared_node, ns, "kept", b"d")
    expiring = ["by-bulk", "by-expiration", "by-ttl"]
    assert get(shared_node, ns, "by-expiration").body == b"a"
    assert get(shared_node, ns, "by-bulk").headers["EdgeKV-Expiration"] == str(at)

    def all_expired() -> bool:
        statuses = {key: get(shared_node, ns, key).status for key in expiring}
        observed_at = time.time()
        if statuses["by-expiration"] == 404 or statuses["by-bulk"] == 404:
            # Never gone before its time (the server's clock is this machine's).
            assert observed_at >= at
        return all(status == 404 for status in statuses.values())

    wait_for(all_expired, timeout=10)
    for key in expiring:
        assert_absent(shared_node, ns, key)
    assert names(shared_node, ns) == ["kept"]
    many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": expiring})
    assert many.json()["entries"] == dict.fromkeys(expiring)
    assert get(shared_node, ns, "kept").body == b"d"


# -- list -----------------------------------------------------------------------

# Byte order of UTF-8, not code-unit (UTF-16) order or locale order:
# "Z" < "a" < "é" < "ﬁ" (U+FB01, EF AC 81) < "𝄞" (F0 9D 84 9E); UTF-16 puts 𝄞 before ﬁ.
ORDER_KEYS = [
    "a",
    "Z",
    "é",
    "𝄞",
    "ﬁ",
    "b",
    "aa",
    "a b",
    "A",
    "0",
    "~",
    "ÿ",
    "a/",
    "a0",
    "\u007f",
    "z",
    "é",
    "e\u0301",
    "É",
]


def test_list_is_in_utf8_byte_order(shared_node: NodeProcess, ns: str) -> None:
    keys = list(dict.fromkeys(ORDER_KEYS))
    random.Random(1).shuffle(keys)
    for key in keys:
        put(shared_node, ns, key, b"v")
    expected = utf8_order(keys)
    assert expected.index("Z") < expected.index("a") < expected.index("é")
    assert expected.index("é") < expected.index("ﬁ") < expected.index("𝄞")
    assert names(shared_node, ns) == expected
    # The same order a page at a time.
    assert names(shared_node, ns, limit=1) == expected
    assert names(shared_node, ns, limit=3) == expected


def test_list_page_shape(shared_node: NodeProcess, ns: str) -> None:
    put(shared_node, ns, "a", b"1", metadata={"m": 1}, ttl=3600)
    put(shared_node, ns, "b", b"2")
    page = list_page(shared_node, ns)
    assert set(page) == {"keys", "list_complete", "cursor"}
    assert page["list_complete"] is True
    assert page["cursor"] is None
    assert [set(entry) for entry in page["keys"]] == [{"name", "expiration", "metadata"}] * 2
    first, second = page["keys"]
    assert first["name"] == "a"
    assert first["metadata"] == {"m": 1}
    assert isinstance(first["expiration"], int)
    assert second == {"name": "b", "expiration": None, "metadata": None}


def test_list_empty_namespace(shared_node: NodeProcess, ns: str) -> None:
    assert list_page(shared_node, ns) == {"keys": [], "list_complete": True, "cursor": None}


def test_list_pages_with_cursor(shared_node: NodeProcess, ns: str) -> None:
    keys = [f"key-{i:02d}" for i in range(25)]
    assert bulk(shared_node, ns, [{"op": "put", "key": k, "value": ""} for k in keys]).status == 200
    first = list_page(shared_node, ns, limit=10)
    assert [e["name"] for e in first["keys"]] == keys[:10]
    assert first["list_complete"] is False
    assert isinstance(first["cursor"], str)
    second = list_page(shared_node, ns, limit=10, cursor=first["cursor"])
    assert [e["name"] for e in second["keys"]] == keys[10:20]
    assert second["list_complete"] is False
    third = list_page(shared_node, ns, limit=10, cursor=second["cursor"])
    assert [e["name"] for e in third["keys"]] == keys[20:]
    assert third["list_complete"] is True
    assert third["cursor"] is None
    # Exactly a full last page.
    exact = list_page(shared_node, ns, limit=25)
    assert len(exact["keys"]) == 25
    assert exact["list_complete"] is True
    assert exact["cursor"] is None


def test_list_limit_bounds(shared_node: NodeProcess, ns: str) -> None:
    ops = [{"op": "put", "key": f"k{i:04d}", "value": ""} for i in range(1001)]
    assert bulk(shared_node, ns, ops).status == 200
    assert len(list_page(shared_node, ns, limit=1)["keys"]) == 1
    full = list_page(shared_node, ns, limit=1000)
    assert len(full["keys"]) == 1000
    assert full["list_complete"] is False
    default = list_page(shared_node, ns)
    assert len(default["keys"]) == 1000
    rest = list_page(shared_node, ns, cursor=default["cursor"])
    assert [e["name"] for e in rest["keys"]] == ["k1000"]
    assert rest["list_complete"] is True


@pytest.mark.parametrize(
    "limit",
    ["0", "1001", "abc", "-1", "", "1.5", " 5", "1e2", "99999999999999999999", "\u00b2"],
    ids=[
        "zero",
        "1001",
        "text",
        "negative",
        "empty",
        "fraction",
        "space",
        "exponent",
        "huge",
        "superscript-digit",
    ],
)
def test_list_invalid_limit(shared_node: NodeProcess, ns: str, limit: str) -> None:
    assert_error(shared_node.request("GET", list_path(ns, limit=limit)), "invalid_parameter")


@pytest.mark.parametrize(
    "cursor",
    ["a", "!!!!", "not a cursor", "***", "%%%%"],
    ids=["bad-length", "punctuation", "spaces", "stars", "percents"],
)
def test_list_invalid_cursor(shared_node: NodeProcess, ns: str, cursor: str) -> None:
    put(shared_node, ns, "k", b"v")
    assert_error(shared_node.request("GET", list_path(ns, cursor=cursor)), "invalid_cursor")


def test_list_prefix(shared_node: NodeProcess, ns: str) -> None:
    keys = ["ap", "app", "app/1", "app/2", "apple", "apq", "b", "é1", "é2", "ê", "e"]
    assert bulk(shared_node, ns, [{"op": "put", "key": k, "value": ""} for k in keys]).status == 200
    assert names(shared_node, ns, prefix="app/") == ["app/1", "app/2"]
    assert names(shared_node, ns, prefix="app") == ["app", "app/1", "app/2", "apple"]
    assert names(shared_node, ns, prefix="é") == ["é1", "é2"]
    assert names(shared_node, ns, prefix="zzz") == []
    assert names(shared_node, ns, prefix="app", limit=1) == ["app", "app/1", "app/2", "apple"]
    assert names(shared_node, ns, prefix="") == utf8_order(keys)


def test_list_prefix_starting_with_dot(shared_node: NodeProcess, ns: str) -> None:
    """'.env' is a valid key, so '.' must be a valid prefix."""
    for key in [".env", ".git/config", "x"]:
        put(shared_node, ns, key, b"v")
    response = shared_node.request("GET", list_path(ns, prefix="."))
    assert response.status == 200, response.body
    assert [e["name"] for e in response.json()["keys"]] == [".env", ".git/config"]


def test_list_omits_deleted_keys(shared_node: NodeProcess, ns: str) -> None:
    for key in ["a", "b", "c", "d"]:
        put(shared_node, ns, key, b"v")
    shared_node.request("DELETE", kv_path(ns, "b"))
    assert bulk(shared_node, ns, [{"op": "delete", "key": "d"}]).status == 200
    assert names(shared_node, ns) == ["a", "c"]
    assert names(shared_node, ns, limit=1) == ["a", "c"]


def test_namespaces_are_isolated(shared_node: NodeProcess, ns: str) -> None:
    other = ns + "-other"
    put(shared_node, ns, "k", b"mine")
    put(shared_node, other, "k", b"theirs")
    put(shared_node, other, "only-there", b"x")
    assert get(shared_node, ns, "k").body == b"mine"
    assert names(shared_node, ns) == ["k"]
    assert_absent(shared_node, ns, "only-there")


def test_listing_under_concurrent_writes_is_exact(shared_node: NodeProcess, ns: str) -> None:
    """2,500 stable keys, listed 100 at a time while others write around them."""
    count = 2500
    stable = [f"s{i:05d}" for i in range(count)]
    ops = [{"op": "put", "key": key, "value": b64(b"0")} for key in stable]
    assert bulk(shared_node, ns, ops).status == 200

    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def other_key(rng: random.Random) -> str:
        # "s00042-..." sorts between "s00042" and "s00043": interleaved with stable keys.
        return f"{rng.choice(stable)}-{rng.randrange(1000)}"

    def run(work: Callable[[random.Random], None], seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                work(rng)
                with lock:
                    done[0] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def single_writes(rng: random.Random) -> None:
        key = other_key(rng)
        assert shared_node.request("PUT", kv_path(ns, key), body=b"x").status == 200
        assert shared_node.request("DELETE", kv_path(ns, other_key(rng))).status == 200

    def bulk_writes(rng: random.Random) -> None:
        ops: list[dict[str, Any]] = [
            {"op": "put", "key": other_key(rng), "value": b64(b"y")} for _ in range(20)
        ]
        ops += [{"op": "delete", "key": other_key(rng)} for _ in range(20)]
        assert bulk(shared_node, ns, ops).status == 200

    def overwrite_stable(rng: random.Random) -> None:
        key = rng.choice(stable)
        response = shared_node.request(
            "PUT", kv_path(ns, key), body=b"1", headers={"EdgeKV-Metadata": '{"o":1}'}
        )
        assert response.status == 200

    threads = [
        threading.Thread(target=run, args=(work, seed), daemon=True)
        for seed, work in enumerate([single_writes, bulk_writes, overwrite_stable])
    ]
    for thread in threads:
        thread.start()
    listed: list[str] = []
    pages = 0
    try:
        cursor: str | None = None
        while True:
            # Let the writers land something between every two pages.
            with lock:
                seen = done[0]

            def progressed(seen: int = seen) -> bool:
                with lock:
                    return done[0] > seen or bool(errors)

            wait_for(progressed, timeout=10, interval=0.005)
            page = list_page(shared_node, ns, limit=100, **({"cursor": cursor} if cursor else {}))
            pages += 1
            assert len(page["keys"]) <= 100
            listed.extend(entry["name"] for entry in page["keys"])
            if page["list_complete"]:
                break
            cursor = page["cursor"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert pages >= count // 100
    assert done[0] >= pages
    encoded = [name.encode() for name in listed]
    assert all(a < b for a, b in itertools.pairwise(encoded)), "not strictly increasing"
    assert len(set(listed)) == len(listed)
    assert [name for name in listed if "-" not in name] == stable


# -- bulk -----------------------------------------------------------------------


def test_bulk_puts_and_deletes(shared_node: NodeProcess, ns: str) -> None:
    put(shared_node, ns, "doomed", b"x")
    before = int(time.time())
    response = bulk(
        shared_node,
        ns,
        [
            {
                "op": "put",
                "key": "a",
                "value": b64(b"\x00alpha\xff"),
                "metadata": {"m": [1]},
                "ttl": 600,
            },
            {"op": "put", "key": "b", "value": b64(b"")},
            {"op": "delete", "key": "doomed"},
            {"op": "delete", "key": "never-was"},
        ],
    )
    assert response.status == 200
    answer = response.json()
    assert answer["bookmark"].startswith("b1.")
    assert set(answer) == {"bookmark", "version"}
    got = get(shared_node, ns, "a")
    assert got.body == b"\x00alpha\xff"
    assert json.loads(got.headers["EdgeKV-Metadata"]) == {"m": [1]}
    assert before + 600 <= int(got.headers["EdgeKV-Expiration"]) <= int(time.time()) + 600
    assert get(shared_node, ns, "b").body == b""
    assert_absent(shared_node, ns, "doomed")
    assert names(shared_node, ns) == ["a", "b"]


def test_bulk_applies_operations_in_order(shared_node: NodeProcess, ns: str) -> None:
    response = bulk(
        shared_node,
        ns,
        [
            {"op": "put", "key": "k", "value": b64(b"first")},
            {"op": "put", "key": "k", "value": b64(b"second")},
            {"op": "put", "key": "gone", "value": b64(b"x")},
            {"op": "delete", "key": "gone"},
            {"op": "delete", "key": "back"},
            {"op": "put", "key": "back", "value": b64(b"again")},
        ],
    )
    assert response.status == 200
    assert get(shared_node, ns, "k").body == b"second"
    assert_absent(shared_node, ns, "gone")
    assert get(shared_node, ns, "back").body == b"again"


BAD_LAST_OPS: list[tuple[str, Any, str]] = [
    ("bad-base64", {"op": "put", "key": "z", "value": "not base64!"}, "invalid_json"),
    ("base64-bad-padding", {"op": "put", "key": "z", "value": "abc"}, "invalid_json"),
    ("value-not-string", {"op": "put", "key": "z", "value": 5}, "invalid_json"),
    ("missing-value", {"op": "put", "key": "z"}, "invalid_json"),
    ("key-too-long", {"op": "put", "key": "k" * 513, "value": ""}, "key_too_long"),
    ("key-too-long-multibyte", {"op": "delete", "key": "é" * 257}, "key_too_long"),
    ("empty-key", {"op": "put", "key": "", "value": ""}, "invalid_key"),
    ("dot-key", {"op": "delete", "key": ".."}, "invalid_key"),
    ("key-not-string", {"op": "put", "key": 7, "value": ""}, "invalid_key"),
    ("missing-key", {"op": "delete"}, "invalid_key"),
    ("unknown-op", {"op": "upsert", "key": "z", "value": ""}, "invalid_json"),
    ("missing-op", {"key": "z", "value": ""}, "invalid_json"),
    ("unknown-field", {"op": "put", "key": "z", "value": "", "colour": "red"}, "invalid_json"),
    ("op-not-object", ["put", "z"], "invalid_json"),
    ("metadata-array", {"op": "put", "key": "z", "value": "", "metadata": [1]}, "invalid_metadata"),
    (
        "metadata-json-text",
        {"op": "put", "key": "z", "value": "", "metadata": "{}"},
        "invalid_metadata",
    ),
    (
        "metadata-too-large",
        {"op": "put", "key": "z", "value": "", "metadata": {"a": "x" * 1100}},
        "metadata_too_large",
    ),
    ("ttl-zero", {"op": "put", "key": "z", "value": "", "ttl": 0}, "invalid_expiration"),
    ("ttl-fraction", {"op": "put", "key": "z", "value": "", "ttl": 1.5}, "invalid_expiration"),
    ("ttl-text", {"op": "put", "key": "z", "value": "", "ttl": "60"}, "invalid_expiration"),
    ("ttl-bool", {"op": "put", "key": "z", "value": "", "ttl": True}, "invalid_expiration"),
    (
        "expiration-past",
        {"op": "put", "key": "z", "value": "", "expiration": 1000},
        "invalid_expiration",
    ),
    (
        "ttl-and-expiration",
        {"op": "put", "key": "z", "value": "", "ttl": 5, "expiration": 4_000_000_000},
        "invalid_expiration",
    ),
]


@pytest.mark.parametrize(
    ("bad_op", "code"),
    [(op, code) for _, op, code in BAD_LAST_OPS],
    ids=[name for name, _, _ in BAD_LAST_OPS],
)
def test_bulk_with_one_invalid_op_applies_nothing(
    shared_node: NodeProcess, ns: str, bad_op: Any, code: str
) -> None:
    put(shared_node, ns, "keep", b"old")
    put(shared_node, ns, "keep-too", b"old")
    ops: list[Any] = [{"op": "put", "key": f"new-{i}", "value": b64(b"v")} for i in range(50)]
    ops += [
        {"op": "put", "key": "keep", "value": b64(b"new")},
        {"op": "delete", "key": "keep-too"},
        bad_op,
    ]
    response = bulk(shared_node, ns, ops)
    assert_error(response, code)
    assert "operations[52]" in response.json()["error"]["message"]
    assert names(shared_node, ns) == ["keep", "keep-too"]
    assert get(shared_node, ns, "keep").body == b"old"
    assert get(shared_node, ns, "keep-too").body == b"old"
    assert_absent(shared_node, ns, "new-0")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b"null",
        b'"ops"',
        b'{"operations": []}',
        b'{"operations": {}}',
        b'{"ops": [{"op": "delete", "key": "a"}]}',
        b'{"operations": [1]}',
        b'{"operations": ',
        b"\xff\xfe\x00",
        b"[" * 100_000,
    ],
    ids=[
        "text",
        "empty",
        "array",
        "null",
        "string",
        "no-operations",
        "operations-object",
        "wrong-field",
        "op-number",
        "truncated",
        "binary",
        "deeply-nested",
    ],
)
def test_bulk_invalid_json(shared_node: NodeProcess, ns: str, body: bytes) -> None:
    response = shared_node.request(
        "POST", f"/v1/kv/{ns}/_bulk", body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, "invalid_json")
    assert names(shared_node, ns) == []


def test_bulk_operation_count_limit(shared_node: NodeProcess, ns: str) -> None:
    ops = [{"op": "put", "key": f"k{i:05d}", "value": "eA=="} for i in range(10_000)]
    response = bulk(shared_node, ns, ops)
    assert response.status == 200, response.body
    assert len(names(shared_node, ns)) == 10_000
    assert get(shared_node, ns, "k09999").body == b"x"

    too_many = [{"op": "put", "key": f"n{i:05d}", "value": "eA=="} for i in range(10_001)]
    assert_error(bulk(shared_node, ns, too_many), "too_many_operations")
    assert names(shared_node, ns, prefix="n") == []
    deletes = [{"op": "delete", "key": f"k{i:05d}"} for i in range(10_001)]
    assert_error(bulk(shared_node, ns, deletes), "too_many_operations")
    assert len(names(shared_node, ns)) == 10_000


# -- get many -------------------------------------------------------------------


def test_get_many(shared_node: NodeProcess, ns: str) -> None:
    a = put(shared_node, ns, "a", b"\x00\xffA", metadata={"x": 1}, ttl=600)
    b = put(shared_node, ns, "b/ü", b"")
    put(shared_node, ns, "deleted", b"x")
    shared_node.request("DELETE", kv_path(ns, "deleted"))
    expiration = int(get(shared_node, ns, "a").headers["EdgeKV-Expiration"])
    response = shared_node.request(
        "POST", f"/v1/kv/{ns}/_get", json_body={"keys": ["a", "b/ü", "missing", "deleted"]}
    )
    assert response.status == 200
    assert response.json() == {
        "entries": {
            "a": {
                "value": b64(b"\x00\xffA"),
                "metadata": {"x": 1},
                "expiration": expiration,
                "version": a["version"],
            },
            "b/ü": {"value": "", "metadata": None, "expiration": None, "version": b["version"]},
            "missing": None,
            "deleted": None,
        }
    }


def test_get_many_key_count_limit(shared_node: NodeProcess, ns: str) -> None:
    keys = [f"k{i:03d}" for i in range(101)]
    ops = [{"op": "put", "key": k, "value": b64(k.encode())} for k in keys[:50]]
    assert bulk(shared_node, ns, ops).status == 200
    response = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": keys[:100]})
    assert response.status == 200
    entries = response.json()["entries"]
    assert list(entries) == keys[:100]
    assert all(base64.b64decode(entries[k]["value"]) == k.encode() for k in keys[:50])
    assert all(entries[k] is None for k in keys[50:100])
    too_many = shared_node.request("POST", f"/v1/kv/{ns}/_get", json_body={"keys": keys})
    assert_error(too_many, "too_many_operations")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"nope", "invalid_json"),
        (b"[]", "invalid_json"),
        (b'{"keys": []}', "invalid_json"),
        (b'{"keys": "a"}', "invalid_json"),
        (b'{"names": ["a"]}', "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b'{"keys": [1]}', "invalid_key"),
        (b'{"keys": [""]}', "invalid_key"),
        (b'{"keys": [null]}', "invalid_key"),
        (b'{"keys": ["\\ud800"]}', "invalid_unicode"),
        (json.dumps({"keys": ["k" * 513]}).encode(), "key_too_long"),
    ],
    ids=[
        "text",
        "array",
        "no-keys",
        "keys-string",
        "wrong-field",
        "deeply-nested",
        "key-number",
        "key-empty",
        "key-null",
        "key-lone-surrogate",
        "key-too-long",
    ],
)
def test_get_many_invalid_body(shared_node: NodeProcess, ns: str, body: bytes, code: str) -> None:
    response = shared_node.request(
        "POST", f"/v1/kv/{ns}/_get", body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, code)


# -- error shape, routing, system routes --------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/v1"),
        ("GET", "/v1/kv"),
        ("GET", "/v1/kv/"),
        ("POST", "/v1/nothing"),
        ("GET", "/v2/kv/ns/k"),
        ("GET", "/v1/kv/ns/"),
        ("DELETE", "/v1/openapi"),
        ("GET", "/healthz/extra"),
    ],
)
def test_unknown_route_is_404(shared_node: NodeProcess, method: str, path: str) -> None:
    assert_error(shared_node.request(method, path), "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/kv/ns/key"),
        ("PATCH", "/v1/kv/ns/key"),
        ("PUT", "/v1/kv/ns"),
        ("DELETE", "/v1/kv/ns"),
        ("POST", "/v1/kv/ns"),
        ("PATCH", "/v1/kv/ns/_bulk"),
        ("POST", "/healthz"),
        ("PUT", "/metrics"),
        ("DELETE", "/v1/openapi.json"),
    ],
)
def test_wrong_method_is_405(shared_node: NodeProcess, method: str, path: str) -> None:
    assert_error(shared_node.request(method, path), "method_not_allowed")


def test_healthz(shared_node: NodeProcess) -> None:
    response = shared_node.request("GET", "/healthz")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["node_id"] == shared_node.node_id


def test_metrics_count_requests(shared_node: NodeProcess, ns: str) -> None:
    put(shared_node, ns, "k", b"v")
    response = shared_node.request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.body.decode("utf-8")
    assert "# TYPE edgekv_http_requests_total counter" in text
    assert any(
        line.startswith("edgekv_http_requests_total{") and 'method="PUT"' in line
        for line in text.splitlines()
    )


def test_openapi_documents_every_route(shared_node: NodeProcess) -> None:
    response = shared_node.request("GET", "/v1/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"] == "3.1.0"
    expected = {
        "/healthz": {"get"},
        "/metrics": {"get"},
        "/v1/openapi.json": {"get"},
        "/v1/kv/{ns}": {"get"},
        "/v1/kv/{ns}/{key}": {"get", "put", "delete"},
        "/v1/kv/{ns}/_bulk": {"post"},
        "/v1/kv/{ns}/_get": {"post"},
    }
    paths = document["paths"]
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    documented = set(
        document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
            "enum"
        ]
    )
    assert documented == set(ERROR_CODES)


@pytest.fixture
def bad_requests(ns: str) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    """A grab bag of malformed requests; none may cause a server error."""
    return [
        ("PUT", f"/v1/kv/{ns}/k?ttl=%00", b"v", {}),
        ("PUT", f"/v1/kv/{ns}/k?expiration=%FF", b"v", {}),
        ("PUT", f"/v1/kv/{ns}/%FF%FE", b"v", {}),
        ("GET", f"/v1/kv/{ns}/%00", None, {}),
        ("GET", f"/v1/kv/{ns}?prefix=%FF", None, {}),
        ("GET", f"/v1/kv/{ns}?cursor=%00%00%00%00", None, {}),
        ("GET", f"/v1/kv/{ns}?limit=%00", None, {}),
        ("PUT", f"/v1/kv/{ns}/k", b"v", {"EdgeKV-Metadata": '{"a":' * 600 + "1" + "}" * 600}),
        (
            "POST",
            f"/v1/kv/{ns}/_bulk",
            b'{"operations": [{"op": "put", "key": "k", "value": "", "ttl": 1e400}]}',
            {},
        ),
        (
            "POST",
            f"/v1/kv/{ns}/_bulk",
            b'{"operations": [{"op": "put", "key": "k", '
            b'"value": "", "expiration": 100000000000000000000000}]}',
            {},
        ),
        ("POST", f"/v1/kv/{ns}/_bulk", b'{"operations": [{"op": ["put"], "key": "k"}]}', {}),
        ("POST", f"/v1/kv/{ns}/_bulk", b'{"operations": [{"op": "put", "key": {"a": 1}}]}', {}),
        ("POST", f"/v1/kv/{ns}/_get", b'{"keys": [["a"]]}', {}),
        ("POST", f"/v1/kv/{ns}/_get", b'{"keys": [{"a": 1}]}', {}),
    ]


def test_malformed_requests_never_cause_server_errors(
    shared_node: NodeProcess,
    ns: str,
    bad_requests: list[tuple[str, str, bytes | None, dict[str, str]]],
) -> None:
    failures = []
    for method, path, body, headers in bad_requests:
        response = shared_node.request(method, path, body=body, headers=headers)
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        if response.status >= 500 or (response.status >= 400 and not is_json):
            failures.append((method, path[:80], response.status, response.body[:120]))
        elif response.status >= 400:
            assert_error(response, response.error_code)
    assert failures == []
