"""Every error a node sends has the JSON error shape, from any route or from aiohttp's parser.

One table of odd inputs, each sent as raw bytes to a real ``edgekv serve``
process (the bytes exactly: no client library normalizes them), and a
hypothesis test throwing random request lines, paths, query strings and
headers at it: never a 500, and every error in the shape.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.store.kv import Write
from edgekv.store.store import Store
from edgekv_replication.codes import ERROR_CODES
from testkit.processes import NodeProcess
from testkit.rawhttp import exchange, parse, request
from testkit.responses import Response, assert_error
from testkit.waiting import wait_for


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A protected-mode node with the default settings, but a short header timeout.

    Bytes that are only blank lines leave the node waiting for a request line
    until ``header_timeout``; the exchanges wait 10 s for an answer or a close.
    """
    started = NodeProcess(tmp_path_factory.mktemp("odd"), ["--header-timeout", "2"]).start()
    yield started
    started.kill()


def _b64_json(value: object) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")


CLOSE = b"Connection: close\r\n"

# '.' and '..' as a namespace or collection, percent-encoded so that no URL
# handling rewrites them before the node sees them, on every route that names one.
_DOT_ROUTES: list[tuple[str, bytes, bytes]] = [
    ("PUT /v1/kv/{}/k", b"PUT /v1/kv/{}/k HTTP/1.1", b"v"),
    ("GET /v1/kv/{}", b"GET /v1/kv/{} HTTP/1.1", b""),
    ("POST /v1/kv/{}/_bulk", b"POST /v1/kv/{}/_bulk HTTP/1.1", b'{"operations": []}'),
    ("PUT /v1/docs/{}/d", b"PUT /v1/docs/{}/d HTTP/1.1", b'{"a": 1}'),
    ("POST /v1/docs/{}/_indexes", b"POST /v1/docs/{}/_indexes HTTP/1.1", b'{"field": "a"}'),
    ("POST /v1/counters/{}/c", b"POST /v1/counters/{}/c HTTP/1.1", b'{"add": 1}'),
    ("POST /v1/sets/{}/s", b"POST /v1/sets/{}/s HTTP/1.1", b'{"add": ["m"]}'),
    ("GET /v1/kv/{}/_watch", b"GET /v1/kv/{}/_watch HTTP/1.1", b""),
]
# A JSON body holding a member name twice, at the top or nested, on every route
# that parses one: the name is "twice".
NAMES_TWICE: list[tuple[str, bytes, bytes, bytes, str]] = [
    (f"{line.decode().split(' HTTP')[0]} with a name twice", line, b"", body, "invalid_json")
    for line, body in [
        (
            b"POST /v1/kv/odd/_bulk HTTP/1.1",
            b'{"operations": [{"op": "put", "key": "k", "value": "dg==", "twice": 1, "twice": 2}]}',
        ),
        (
            b"POST /v1/kv/odd/_bulk HTTP/1.1",
            b'{"twice": 1, "operations": [{"op": "put", "key": "k", "value": "dg=="}], "twice": 1}',
        ),
        (b"POST /v1/kv/odd/_get HTTP/1.1", b'{"keys": ["k"], "twice": [], "twice": []}'),
        (b"PUT /v1/docs/odd/d HTTP/1.1", b'{"a": {"twice": 1, "twice": 2}}'),
        (b"PATCH /v1/docs/odd/d HTTP/1.1", b'{"twice": null, "twice": 1}'),
        (b"POST /v1/docs/odd/_indexes HTTP/1.1", b'{"field": "a", "twice": 1, "twice": 2}'),
        (b"POST /v1/counters/odd/c HTTP/1.1", b'{"add": 1, "twice": 1, "twice": 2}'),
        (b"POST /v1/sets/odd/s HTTP/1.1", b'{"add": ["m"], "twice": 1, "twice": 2}'),
        (b"POST /v1/admin/tokens HTTP/1.1", b'{"name": "t", "twice": 1, "twice": 2}'),
    ]
]
DOT_NAMES: list[tuple[str, bytes, bytes, bytes, str]] = [
    (f"{name.format(dots)}", line.replace(b"{}", escaped), b"", body, "invalid_namespace")
    for name, line, body in _DOT_ROUTES
    for dots, escaped in ((".", b"%2E"), ("..", b"%2E%2E"))
]

# (name, request line, extra header lines, body, the error code it gets)
ODD_REQUESTS: list[tuple[str, bytes, bytes, bytes, str]] = [
    (
        "limit of 5000 digits",
        b"GET /v1/kv/odd?limit=" + b"9" * 5000 + b" HTTP/1.1",
        b"",
        b"",
        "invalid_parameter",
    ),
    (
        "document limit of 5000 digits",
        b"GET /v1/docs/odd?limit=" + b"9" * 5000 + b" HTTP/1.1",
        b"",
        b"",
        "invalid_parameter",
    ),
    (
        "over-range integer in where",
        b"GET /v1/docs/odd?where=a==" + b"9" * 30 + b" HTTP/1.1",
        b"",
        b"",
        "number_out_of_range",
    ),
    (
        "infinite number in where",
        b"GET /v1/docs/odd?where=a==1e999 HTTP/1.1",
        b"",
        b"",
        "number_out_of_range",
    ),
    (
        "lone surrogate in where",
        b"GET /v1/docs/odd?where=a==%22%5Cud800%22 HTTP/1.1",
        b"",
        b"",
        "invalid_unicode",
    ),
    (
        "2,000 where filters",
        b"GET /v1/docs/odd?" + b"&".join([b"where=a==1"] * 2000) + b" HTTP/1.1",
        b"",
        b"",
        "invalid_parameter",
    ),
    (
        "document cursor holding \\ud800 as its id",
        b"GET /v1/docs/odd?cursor=" + _b64_json([1, "\ud800"]) + b" HTTP/1.1",
        b"",
        b"",
        "invalid_cursor",
    ),
    (
        "document cursor holding an over-range integer",
        b"GET /v1/docs/odd?order_by=a&cursor=" + _b64_json([10**30, "x"]) + b" HTTP/1.1",
        b"",
        b"",
        "invalid_cursor",
    ),
    (
        "list cursor holding \\ud800 encoded",
        b"GET /v1/kv/odd?cursor=%ED%A0%80 HTTP/1.1",
        b"",
        b"",
        "invalid_cursor",
    ),
    (
        "key whose escapes are not UTF-8",
        b"PUT /v1/kv/odd/%FF%FE HTTP/1.1",
        b"",
        b"v",
        "invalid_key",
    ),
    ("key with a stray percent", b"PUT /v1/kv/odd/a%zz HTTP/1.1", b"", b"v", "invalid_key"),
    (
        "document id whose escapes are not UTF-8",
        b"PUT /v1/docs/odd/%FF HTTP/1.1",
        b"",
        b"{}",
        "invalid_document_id",
    ),
    (
        "list prefix whose escapes are not UTF-8",
        b"GET /v1/kv/odd?prefix=%FF HTTP/1.1",
        b"",
        b"",
        "invalid_key",
    ),
    (
        "where whose escapes are not UTF-8",
        b"GET /v1/docs/odd?where=a==%FF HTTP/1.1",
        b"",
        b"",
        "invalid_parameter",
    ),
    ("key holding CR LF", b"GET /v1/kv/odd/a%0D%0Ab HTTP/1.1", b"", b"", "not_found"),
    ("path holding CR LF, no route", b"GET /nowhere/a%0D%0Ab HTTP/1.1", b"", b"", "not_found"),
    (
        "non-ASCII query string",
        b"GET /v1/kv/odd?prefix=\xc3\xa9 HTTP/1.1",
        b"",
        b"",
        "invalid_request",
    ),
    ("non-ASCII request line", b"GET /v1/kv/odd/\xc3\xa9 HTTP/1.1", b"", b"", "invalid_request"),
    ("garbage request line", b"GARBAGE", b"", b"", "invalid_request"),
    ("unknown HTTP version", b"GET /healthz HTTP/9.9", b"", b"", "invalid_request"),
    ("invalid header", b"GET /healthz HTTP/1.1", b"Bad Header\r\n", b"", "invalid_request"),
    (
        "header too long",
        b"GET /healthz HTTP/1.1",
        b"X-Long: " + b"a" * 70_000 + b"\r\n",
        b"",
        "headers_too_large",
    ),
    (
        "too many headers",
        b"GET /healthz HTTP/1.1",
        b"".join(b"X-%d: 1\r\n" % i for i in range(200)),
        b"",
        "headers_too_large",
    ),
    (
        "request line too long",
        b"GET /v1/kv/odd/" + b"a" * 70_000 + b" HTTP/1.1",
        b"",
        b"",
        "headers_too_large",
    ),
    (
        "Content-Length with Transfer-Encoding",
        b"PUT /v1/kv/odd/k HTTP/1.1",
        b"Transfer-Encoding: chunked\r\n",
        b"x",
        "invalid_request",
    ),
    (
        "Content-Length not a number",
        b"PUT /v1/kv/odd/k HTTP/1.1",
        b"Content-Length: abc\r\n",
        b"",
        "invalid_request",
    ),
    (
        "Expect other than 100-continue",
        b"PUT /v1/kv/odd/k HTTP/1.1",
        b"Expect: magic\r\n",
        b"x",
        "expectation_failed",
    ),
    (
        "cross-site simple POST",
        b"POST /v1/kv/odd/_bulk HTTP/1.1",
        b"Origin: https://evil.example\r\nContent-Type: text/plain\r\n",
        b'{"operations": [{"op": "put", "key": "k", "value": "dg=="}]}',
        "untrusted_origin",
    ),
    ("no such route", b"GET /v2/nothing HTTP/1.1", b"", b"", "not_found"),
    ("method the route lacks", b"PATCH /v1/kv/odd/k HTTP/1.1", b"", b"", "method_not_allowed"),
    *DOT_NAMES,
    ("'.' unencoded as a namespace", b"PUT /v1/kv/./k HTTP/1.1", b"", b"v", "invalid_namespace"),
    *NAMES_TWICE,
    (
        "where literal holding a name twice",
        b"GET /v1/docs/odd?where=a==%7B%22x%22:1,%22x%22:2%7D HTTP/1.1",
        b"",
        b"",
        "invalid_parameter",
    ),
    (
        "metadata holding a name twice",
        b"PUT /v1/kv/odd/k HTTP/1.1",
        b'EdgeKV-Metadata: {"twice": 1, "twice": 2}\r\n',
        b"v",
        "invalid_metadata",
    ),
]


@pytest.mark.parametrize(
    ("line", "headers", "body", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in ODD_REQUESTS],
)
def test_odd_input_gets_its_error_in_the_json_shape(
    node: NodeProcess, line: bytes, headers: bytes, body: bytes, code: str
) -> None:
    assert_error(request(node, line, headers, body), code)


def test_a_bad_chunk_size_gets_the_json_shape(node: NodeProcess) -> None:
    data = (
        b"PUT /v1/kv/odd/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + CLOSE
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    )
    assert_error(parse(exchange(node, data)), "invalid_request")


def test_a_foreign_host_name_is_refused_in_protected_mode(node: NodeProcess) -> None:
    """DNS rebinding: a foreign name resolving to 127.0.0.1 reaches the node with that Host."""
    data = b"GET /v1/kv/odd/k HTTP/1.1\r\nHost: evil.example:8787\r\n" + CLOSE + b"\r\n"
    assert_error(parse(exchange(node, data)), "untrusted_origin")


def test_odd_inputs_wrote_nothing(node: NodeProcess) -> None:
    for case in ODD_REQUESTS:
        request(node, *case[1:4])
    listing = node.request("GET", "/v1/kv/odd")
    assert listing.status == 200, listing.body
    assert listing.json()["keys"] == []


def test_a_name_twice_is_named_and_wrote_nothing(node: NodeProcess) -> None:
    for case in NAMES_TWICE:
        response = request(node, *case[1:4])
        assert '"twice"' in response.json()["error"]["message"], (case[0], response.body)
    assert node.request("GET", "/v1/kv/odd").json()["keys"] == []
    assert node.request("GET", "/v1/docs/odd").json()["documents"] == []
    assert node.request("GET", "/v1/counters/odd/c").json()["version"] is None
    assert node.request("GET", "/v1/sets/odd/s").json()["members"] == []
    tokens = node.request("GET", "/v1/admin/tokens").json()
    assert "t" not in [token["name"] for token in tokens["tokens"]], tokens


def test_dot_names_wrote_nothing(node: NodeProcess) -> None:
    for case in DOT_NAMES:
        request(node, *case[1:4])
    for admin, field in (("namespaces", "namespaces"), ("collections", "collections")):
        listing = node.request("GET", f"/v1/admin/{admin}")
        assert listing.status == 200, listing.body
        assert not {".", ".."} & {entry["name"] for entry in listing.json()[field]}
    changes = node.request("GET", "/v1/admin/changes?limit=200")
    assert changes.status == 200, changes.body
    assert all(
        change["ns"].rpartition(":")[2] not in (".", "..") for change in changes.json()["changes"]
    )


async def test_dot_names_an_older_release_stored_are_reported_at_start(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    """An older release took '.' and '..': the node starts, says so, and they stay unreachable."""
    store = Store(tmp_path / "old", allow_new_node=True)
    await store.write("..", [Write(b"k", b"v")])
    await store.write("ok", [Write(b"k", b"v")])
    store.close()
    node = start_node("old")
    wait_for(lambda: "no longer accepted" in "".join(node.output), 10, "the warning")
    assert "'..'" in "".join(node.output)
    assert node.request("GET", "/v1/kv/ok/k").body == b"v"
    assert_error(request(node, b"GET /v1/kv/%2E%2E/k HTTP/1.1"), "invalid_namespace")


def test_the_two_spellings_of_a_percent_key_are_one_key_and_the_other_is_refused(
    node: NodeProcess,
) -> None:
    stored = request(node, b"PUT /v1/kv/pct/%25FF%25FE HTTP/1.1", body=b"literal")
    assert stored.status == 200, stored.body
    assert node.request("GET", "/v1/kv/pct/%25FF%25FE").body == b"literal"
    assert_error(request(node, b"GET /v1/kv/pct/%FF%FE HTTP/1.1"), "invalid_key")


def test_a_key_holding_cr_lf_is_a_key(node: NodeProcess) -> None:
    stored = request(node, b"PUT /v1/kv/crlf/a%0D%0Ab HTTP/1.1", body=b"v")
    assert stored.status == 200, stored.body
    assert node.request("GET", "/v1/kv/crlf/a%0D%0Ab").body == b"v"
    assert [k["name"] for k in node.request("GET", "/v1/kv/crlf").json()["keys"]] == ["a\r\nb"]


def _assert_never_500_and_shaped(raw: bytes, head: bool = False) -> None:
    if not raw:
        return  # the node waited for more and the client went away: nothing was answered
    response = parse(raw)
    assert response.status < 500, (response.status, response.body[:300])
    if response.status >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), raw[:300]
        if not head:  # the answer to HEAD has no body
            assert_error(response, _code_of(response))


def _code_of(response: Response) -> str:
    code = response.json()["error"]["code"]
    assert code in ERROR_CODES, code
    return str(code)


_PATH_PIECES = st.sampled_from(
    [
        "/v1/kv/",
        "/v1/docs/",
        "/v1/cluster/",
        "/_bulk",
        "/_get",
        "/_indexes",
        "/ystate",
        "%",
        "%FF",
        "%C3",
        "%ED%A0%80",
        "%0D%0A",
        "%00",
        "%25",
        "%2F",
        "..",
        ".",
        "/",
        "é",
        "\x7f",
        "\t",
        "?",
        "#",
        "&",
        "=",
        "where=",
        "limit=",
        "cursor=",
        "prefix=",
        "order_by=",
        "a==",
        "9" * 30,
        "\ud800",
        "*",
        "~",
    ]
)
_TEXT = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
    | _PATH_PIECES
)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "G\x00T"]),
    path=st.lists(_TEXT, max_size=8).map("".join),
    header=st.binary(max_size=40),
)
def test_random_requests_never_get_a_500_and_errors_have_the_shape(
    node: NodeProcess, method: str, path: str, header: bytes
) -> None:
    line = f"{method} /{path} HTTP/1.1".encode("utf-8", "surrogatepass")
    data = line + b"\r\nHost: 127.0.0.1\r\n" + CLOSE + b"X-Fuzz: " + header + b"\r\n\r\n"
    _assert_never_500_and_shaped(exchange(node, data), head=method == "HEAD")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=200))
def test_random_bytes_never_get_a_500_and_errors_have_the_shape(
    node: NodeProcess, data: bytes
) -> None:
    _assert_never_500_and_shaped(exchange(node, data + b"\r\n\r\n"), head=data.startswith(b"HEAD"))
