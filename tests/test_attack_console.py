"""Attacks on this round's surfaces, the web console and its admin routes, that once worked.

Each test starts real ``edgekv serve`` processes and plays a hostile client
(a tenant with a write token, a page of another site in protected mode); it
failed before the fix it names.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from edgekv.store.browse import DETAIL_BYTES, EXPIRY_CHECKED_BYTES
from edgekv.store.kv import LIST_CHECKED_BYTES, LIST_READ_BYTES, Write
from edgekv.store.store import Store
from testkit.browser import chromium
from testkit.processes import NodeProcess
from testkit.responses import assert_error

MIB = 1024 * 1024


def _bytes_read(node: NodeProcess) -> int:
    """Bytes the node's event-loop thread has read from files so far (``rchar``).

    The main thread serves every request; the writer's thread (commits,
    checkpoints) is another task and is not counted.
    """
    assert node.proc is not None
    io = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/io").read_text()
    return next(int(line.split()[1]) for line in io.splitlines() if line.startswith("rchar:"))


@pytest.mark.slow
def test_a_tenant_s_large_values_do_not_make_the_live_feed_read_them(
    start_node: Callable[..., NodeProcess],
) -> None:
    """The console's live feed polls ``/v1/admin/changes`` every second. A tenant
    that wrote large values made every poll read each value in the newest
    10,000 rows of the log in full, on the event loop (SQLite keeps a row's
    version after its value), even when the page answered none of them.
    """
    node = start_node()
    values = 20
    for i in range(values):
        value = bytes([65 + i]) * (4 * MIB)
        assert node.request("PUT", f"/v1/kv/tenant/big/{i:02d}", body=value).status == 200
    assert node.request("PUT", "/v1/kv/app/small", body=b"hello").status == 200

    # A filter that matches no large value reads none of them.
    started = _bytes_read(node)
    answer = node.request("GET", "/v1/admin/changes?ns=app&limit=50")
    assert answer.status == 200
    assert [c["key"] for c in answer.json()["changes"]] == ["small"]
    assert _bytes_read(node) - started < 2 * MIB

    # The unfiltered feed reads at most its byte budget plus one value per page,
    # and pages on through every change, each with its preview.
    seen: list[tuple[str, str]] = []
    before: int | None = None
    query = "/v1/admin/changes?limit=200"
    pages = 0
    while True:
        started = _bytes_read(node)
        page = node.request("GET", query if before is None else f"{query}&before={before}")
        assert page.status == 200
        assert _bytes_read(node) - started < DETAIL_BYTES + 4 * MIB + 2 * MIB
        body = page.json()
        seen += [(c["key"], c["preview"][:1]) for c in body["changes"]]
        assert all(len(c["preview"]) == 256 and c["truncated"] for c in body["changes"][1:])
        pages += 1
        before = body["before"]
        if before is None:
            break
    assert pages > 1  # the budget cut a page short, and the cursor went on from there
    expected = [("small", "h")] + [(f"big/{i:02d}", chr(65 + i)) for i in reversed(range(values))]
    assert seen == expected


@pytest.mark.slow
def test_a_tenant_s_expiring_large_values_do_not_make_the_namespace_list_read_them(
    start_node: Callable[..., NodeProcess],
) -> None:
    """``/v1/admin/namespaces`` (the console's Keys view) skips expired keys, and a
    row's expiration is stored after its value: a tenant's large values with a
    ttl made every listing read all of them, on the event loop."""
    node = start_node()
    for i in range(8):
        value = b"v" * (2 * MIB)
        assert node.request("PUT", f"/v1/kv/tenant/big/{i}?ttl=3600", body=value).status == 200
    small = b"s" * EXPIRY_CHECKED_BYTES
    assert node.request("PUT", "/v1/kv/app/small?ttl=3600", body=small).status == 200
    assert node.request("PUT", "/v1/kv/app/forever", body=b"x").status == 200

    started = _bytes_read(node)
    answer = node.request("GET", "/v1/admin/namespaces")
    assert _bytes_read(node) - started < 2 * MIB
    assert answer.json()["namespaces"] == [
        {"name": "app", "keys": 2},
        {"name": "tenant", "keys": 8},
    ]


async def test_namespace_counts_check_the_expiry_of_small_values_only(store: Store) -> None:
    """The documented trade: an expired key with a value over EXPIRY_CHECKED_BYTES
    counts until purged; every smaller one is checked."""
    big = b"b" * (EXPIRY_CHECKED_BYTES + 1)
    expiring = [Write(b"small", b"s", expiration=10), Write(b"big", big, expiration=10)]
    await store.write("a", expiring)
    await store.write("b", [Write(b"edge", b"e" * EXPIRY_CHECKED_BYTES, expiration=10)])
    assert store.browse.namespaces(now=5.0, limit=10) == [("a", 2), ("b", 1)]
    assert store.browse.namespaces(now=50.0, limit=10) == [("a", 1)]


@pytest.mark.slow
def test_a_tenant_s_large_values_do_not_make_listing_their_names_read_them(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """The console's Keys view lists names (``GET /v1/kv/{ns}``), with their
    expiration and metadata, which SQLite stores after the value: any token that
    may read its own namespace made one page of names read every value in it."""
    tenant = new_token()
    config = tmp_path / "edgekv.toml"
    config.write_text(token_toml("tenant", tenant, ["read:tenant", "write:tenant"]))
    node = start_node(args=["--config", str(config)])
    node.token = tenant
    values = 12
    for i in range(values):
        headers = {"EdgeKV-Metadata": f'{{"i": {i}}}'}
        answer = node.request(
            "PUT", f"/v1/kv/tenant/big/{i:02d}?ttl=3600", body=b"v" * (4 * MIB), headers=headers
        )
        assert answer.status == 200

    listed: list[tuple[str, object]] = []
    cursor = None
    while True:
        started = _bytes_read(node)
        path = "/v1/kv/tenant?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = node.request("GET", path)
        assert page.status == 200
        assert _bytes_read(node) - started < LIST_READ_BYTES + 4 * MIB + 2 * MIB
        body = page.json()
        listed += [(k["name"], k["metadata"]) for k in body["keys"]]
        assert all(k["expiration"] is not None for k in body["keys"])
        cursor = body["cursor"]
        assert body["list_complete"] is (cursor is None)
        if cursor is None:
            break
    assert listed == [(f"big/{i:02d}", {"i": i}) for i in range(values)]


async def test_a_list_page_cut_short_by_large_values_resumes_where_it_stopped(
    store: Store,
) -> None:
    big = b"b" * (LIST_CHECKED_BYTES + 1)
    await store.write(
        "ns",
        [
            Write(b"a", big, metadata='{"m":1}'),
            Write(b"b", big, expiration=10),  # expired at now=50
            Write(b"c", big, expiration=100),
            Write(b"d", b"small", expiration=10),  # expired: left out by the query
            Write(b"e", big),  # no expiration nor metadata: nothing to read
            Write(b"f", big, metadata='{"m":2}'),
        ],
    )
    pages: list[list[bytes]] = []
    after = None
    while True:
        # Room for one large row a page (always at least one).
        rows, after = store.list_page("ns", after=after, limit=10, now=50.0, read_bytes=1)
        pages.append([row.key for row in rows])
        if after is None:
            break
    assert pages == [[b"a"], [], [b"c", b"e"], [b"f"]]
    rows, after = store.list_page("ns", limit=10, now=50.0)
    assert after is None
    assert rows == [
        (b"a", None, '{"m":1}'),
        (b"c", 100, None),
        (b"e", None, None),
        (b"f", None, '{"m":2}'),
    ]


@pytest.fixture
def protected(start_node: Callable[..., NodeProcess]) -> NodeProcess:
    node = start_node()
    assert node.request("PUT", "/v1/kv/app/secret", body=b"the launch code").status == 200
    return node


_READS = ("/v1/kv/app/secret", "/v1/kv/app/missing", "/v1/kv/app?limit=5", "/v1/admin/changes")


def test_protected_mode_refuses_another_site_s_subresource_loads_without_origin(
    protected: NodeProcess,
) -> None:
    """A page's ``<script>``/``<img>``/``no-cors`` GET to another site carries no
    ``Origin``: the Host and Origin checks let it through, and its load or error
    event told the page whether a key exists. The browser's ``Sec-Fetch-Site``
    says where it came from."""
    for path in _READS:
        loads = (
            ("no-cors", "script"),
            ("no-cors", "image"),
            ("cors", "empty"),
            ("navigate", "iframe"),
        )
        for mode, dest in loads:
            headers = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": mode}
            answer = protected.request("GET", path, headers={**headers, "Sec-Fetch-Dest": dest})
            assert_error(answer, "untrusted_origin")
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
        # A top-level link from another site shows the answer to the user only: served.
        top = {**link, "Sec-Fetch-Dest": "document"}
        assert protected.request("GET", path, headers=top).status in (200, 404)
        # The same site, the node's own pages, and a typed URL: served.
        for site in ("same-origin", "same-site", "none"):
            answer = protected.request("GET", path, headers={"Sec-Fetch-Site": site})
            assert answer.status in (200, 404), (path, site, answer.status)
    # A navigation that is not a read (a cross-site form post) is refused too.
    link = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    answer = protected.request("POST", "/v1/kv/app/_bulk", body=b"{}", headers=link)
    assert_error(answer, "untrusted_origin")
    assert protected.request("GET", "/ui/", headers=link).status == 200  # a link to the console


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[int]:
    """A plain web server on 127.0.0.1 serving the attacker's page; its port."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>a page</title>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


_PROBE = """async (urls) => {
  // Does the key exist? A script element fires "load" for a 200, "error" otherwise.
  const events = [];
  for (const url of urls) {
    events.push(await new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = url;
      script.onload = () => resolve("load");
      script.onerror = () => resolve("error");
      document.head.append(script);
    }));
  }
  return events;
}"""


@pytest.mark.slow
def test_in_a_browser_another_site_cannot_tell_whether_a_key_exists(
    protected: NodeProcess, attacker_site: int
) -> None:
    urls = [f"{protected.url}/v1/kv/app/secret", f"{protected.url}/v1/kv/app/missing"]
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
    with chromium([rules]) as browser:
        page = browser.new_page()
        page.goto(f"http://evil.example:{attacker_site}/")
        assert page.evaluate(_PROBE, urls) == ["error", "error"]
        # The control: a loopback page's probe tells them apart, so the node's
        # check (not the browser) made the answers alike above.
        page.goto(f"http://127.0.0.1:{attacker_site}/")
        assert page.evaluate(_PROBE, urls) == ["load", "error"]
        # A link from another site to the console still opens it.
        page.goto(f"http://evil.example:{attacker_site}/")
        page.set_content(f'<a id="go" href="{protected.url}/ui/">console</a>')
        with page.expect_navigation():
            page.click("#go")
        assert page.url == f"{protected.url}/ui/"
        assert page.title() != ""
        assert "untrusted_origin" not in page.content()
