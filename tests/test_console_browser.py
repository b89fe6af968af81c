"""The web console in a real browser (Debian's chromium, driven by Playwright).

Against a real three-PoP cluster with tokens and a cluster secret; node n2 is
cut off by its proxies, so n0's console shows it down. Each test saves a
screenshot: to docs/img/console/ (which docs/console.md shows) when
EDGEKV_UPDATE_SCREENSHOTS=1, else to the session's temporary directory, so a
test run leaves the working tree as it found it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from testkit.browser import chromium
from testkit.cluster import Cluster
from testkit.nats_server import NatsServer
from testkit.pg import via
from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.security import Security
from testkit.waiting import wait_for

DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img" / "console"
WAIT_MS = 15_000
"""How long the page gets to show what a test waits for (polling, not sleeping)."""

pytestmark = pytest.mark.slow  # a cluster and a browser: several seconds each


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("console"), 3)
    try:

        def all_up() -> bool:
            status = json.loads(cluster.nodes[0].request("GET", "/v1/cluster/status").body)
            return sorted((m["name"], m["state"]) for m in status["members"]) == [
                ("n1", "up"),
                ("n2", "up"),
            ]

        wait_for(all_up, 30, "n0 up with n1 and n2")
        cluster.isolate(2)  # then n2 is partitioned away: down as n0 and n1 see it
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def _log_in(page: Page, node: NodeProcess, token: str) -> None:
    page.goto(f"{node.url}/ui/")
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    expect(page.locator("#nav")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#login")).to_be_hidden()


@pytest.fixture
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    assert cluster.token is not None
    _log_in(page, cluster.nodes[0], cluster.token)
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("EDGEKV_UPDATE_SCREENSHOTS") == "1":
        folder = DOCS_SCREENSHOTS
    else:
        folder = Path(tempfile.gettempdir()) / "edgekv-console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_login_refuses_a_wrong_token_and_keeps_the_right_one_out_of_cookies(
    browser: Browser, cluster: Cluster
) -> None:
    context = browser.new_context()
    page = context.new_page()
    node = cluster.nodes[0]
    page.goto(f"{node.url}/ui/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "not-a-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token is not valid here.")
    assert page.evaluate("sessionStorage.getItem('edgekv.token')") is None
    assert cluster.token is not None
    _log_in(page, node, cluster.token)
    assert page.evaluate("sessionStorage.getItem('edgekv.token')") == cluster.token
    assert page.evaluate("document.cookie") == ""
    assert context.cookies() == []
    # Logging out forgets the token.
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('edgekv.token')") is None
    context.close()


def test_cluster_view_shows_every_member_and_flags_the_partitioned_one(page: Page) -> None:
    members = page.locator("#members tr.member")
    expect(members).to_have_count(2, timeout=WAIT_MS)
    down = page.locator("#members tr.member[data-state=down]")
    expect(down).to_have_count(1, timeout=WAIT_MS)
    expect(down).to_have_attribute("data-name", "n2")
    expect(page.locator("#members tr.member[data-name=n1]")).to_have_attribute(
        "data-state", "up", timeout=WAIT_MS
    )
    # Worst first: the down member is the first row.
    expect(members.first).to_have_attribute("data-name", "n2")
    expect(page.locator("#members tr.region")).to_have_count(1)
    expect(page.locator(".this-node h2")).to_have_text("This node: n0")
    _screenshot(page, "cluster")


def test_key_browser_prefix_search_and_binary_and_json_values(page: Page, cluster: Cluster) -> None:
    for key in ("user/1", "user/2", "user/3", "order/1"):
        cluster.put(0, "shop", key, f"value of {key}".encode())
    cluster.put(0, "shop", "blob", bytes(range(256)) * 4)
    config = {"plan": "pro", "limits": {"rps": 100}}
    cluster.put(0, "shop", "config", json.dumps(config).encode(), "?expiration=4102444800")

    page.goto(page.url.split("#")[0] + "#keys")
    ns_link = page.locator("a.ns-link[data-ns=shop]")
    expect(ns_link).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#namespaces li", has=ns_link)).to_contain_text("6")
    page.fill("#ns", "shop")
    page.fill("#prefix", "user/")
    page.click("#key-search button[type=submit]")
    rows = page.locator("#keys tr.key-row")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.key)") == [
        "user/1",
        "user/2",
        "user/3",
    ]
    _screenshot(page, "keys-search")

    page.fill("#prefix", "")
    page.click("#key-search button[type=submit]")
    page.click("#keys tr.key-row[data-key=blob] a")
    expect(page.locator("#value-kind")).to_have_text("hex")
    expect(page.locator("#value-text")).to_contain_text("00000000  00 01 02 03 04 05")
    expect(page.locator("#download")).to_contain_text("1.0 KiB")
    expect(page.locator("#edit")).to_have_count(0)  # binary is not edited as text
    _screenshot(page, "keys-hex")

    # A large value: the first 64 KiB shown, the whole value behind the download link.
    big = bytes(range(256)) * 800  # 200 KiB
    cluster.put(0, "shop", "big", big)
    page.click("#key-search button[type=submit]")
    page.click("#keys tr.key-row[data-key=big] a")
    expect(page.locator("#truncated")).to_contain_text("first 64.0 KiB shown")
    assert page.inner_text("#value-text").count("\n") + 1 == 64 * 1024 // 16
    with page.expect_download() as download:
        page.click("#download")
    assert Path(download.value.path()).read_bytes() == big

    page.click("#keys tr.key-row[data-key=config] a")
    expect(page.locator("#value-kind")).to_have_text("json")
    assert json.loads(page.inner_text("#value-text")) == config
    expect(page.locator("#value-text")).to_contain_text('  "plan": "pro"')  # pretty-printed
    version = cluster.nodes[0].request("GET", "/v1/kv/shop/config").headers["ETag"].strip('"')
    expect(page.locator("#value-version")).to_have_text(version)
    expect(page.locator("#value-expiration")).to_have_text("2100-01-01T00:00:00.000Z")
    _screenshot(page, "keys-json")


def test_edit_and_delete_a_key_and_see_it_at_another_pop(page: Page, cluster: Cluster) -> None:
    cluster.put(0, "shop", "greeting", b"hello")
    other = cluster.nodes[1]
    wait_for(lambda: other.request("GET", "/v1/kv/shop/greeting").body == b"hello", 15)

    page.goto(page.url.split("#")[0] + "#keys?ns=shop&prefix=greet")
    page.click("#keys tr.key-row[data-key=greeting] a")
    page.click("#edit")
    page.fill("#edit-value", "hello from the console")
    page.fill("#edit-metadata", '{"by": "console"}')
    page.click("#save")
    expect(page.locator("#value-text")).to_have_text("hello from the console")
    expect(page.locator("#value-metadata")).to_have_text('{"by":"console"}')  # as stored
    wait_for(
        lambda: other.request("GET", "/v1/kv/shop/greeting").body == b"hello from the console",
        15,
        "the edit at n1",
    )
    assert other.request("GET", "/v1/kv/shop/greeting").headers["EdgeKV-Metadata"] == (
        '{"by":"console"}'
    )

    page.click("#delete")
    expect(page.locator("#confirm")).to_contain_text("greeting")
    _screenshot(page, "keys-delete")
    # Nothing is deleted before the confirmation.
    assert cluster.nodes[0].request("GET", "/v1/kv/shop/greeting").status == 200
    page.click("#confirm-delete")
    expect(page.locator("#deleted")).to_be_visible()
    expect(page.locator("#keys tr.key-row")).to_have_count(0)
    wait_for(
        lambda: other.request("GET", "/v1/kv/shop/greeting").status == 404, 15, "the delete at n1"
    )


def test_document_query_shows_results_a_document_and_its_indexes(
    page: Page, cluster: Cluster
) -> None:
    node = cluster.nodes[0]
    people = {"ada": 36, "alan": 41, "grace": 29, "linus": 21}
    for name, age in people.items():
        doc = {"name": name.title(), "age": age, "address": {"city": "London"}}
        assert node.request("PUT", f"/v1/docs/people/{name}", json_body=doc).status == 200
    assert node.request("POST", "/v1/docs/people/_indexes", json_body={"field": "age"}).status in (
        200,
        201,
    )

    page.goto(page.url.split("#")[0] + "#documents")
    link = page.locator("a.collection-link[data-collection=people]")
    expect(link).to_be_visible(timeout=WAIT_MS)
    page.fill("#collection", "people")
    page.fill("#where", "age>=30")
    page.fill("#order-by", "-age")
    page.click("#doc-query button[type=submit]")
    rows = page.locator("#documents tr.doc-row")
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == ["alan", "ada"]
    expect(page.locator("#indexes")).to_contain_text("Indexes: age")
    page.click("#documents tr.doc-row[data-id=ada] a")
    answer = json.loads(node.request("GET", "/v1/docs/people/ada").body)
    expect(page.locator("#doc-version")).to_have_text(answer["version"])
    assert json.loads(page.inner_text("#doc-json")) == answer["doc"]
    _screenshot(page, "documents")

    page.fill("#where", "age")  # a broken filter: the API's message, in the page
    page.click("#doc-query button[type=submit]")
    expect(page.locator("#doc-results .error")).to_contain_text("where must read field==value")


def test_live_feed_shows_a_write_made_at_another_pop(page: Page, cluster: Cluster) -> None:
    watches: list[dict[str, str]] = []
    page.on(
        "request",
        lambda request: (
            watches.append(request.all_headers()) if "/v1/kv/feed/_watch" in request.url else None
        ),
    )
    cluster.put(0, "feed", "orders/41", b"before")  # written before: the fill shows it
    page.goto(page.url.split("#")[0] + "#feed")
    page.fill("#feed-ns", "feed")
    page.click("#feed-filter button[type=submit]")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)  # its `ready`
    assert watches, "the feed of a namespace follows its watch"
    assert watches[0]["authorization"] == f"Bearer {cluster.token}"
    before = page.locator("#changes tr.change[data-key='orders/41']")
    expect(before).to_have_attribute("data-via", "recent", timeout=WAIT_MS)
    # At n1; n0 shows it once replicated.
    written = cluster.nodes[1].request("PUT", "/v1/kv/feed/orders/42", body=b'{"total": 99}')
    assert written.status == 200, written.body
    row = page.locator("#changes tr.change[data-key='orders/42']")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row).to_contain_text('{"total": 99}')
    # It came from the watch: n0's event, with the version n1 stamped the write with.
    expect(row).to_have_attribute("data-via", "watch")
    version = written.json()["version"]
    expect(row).to_have_attribute("data-version", version)
    origin = row.locator("td").last
    expect(origin).to_have_text("n1")
    expect(origin).to_have_attribute("title", cluster.nodes[1].node_id)
    cluster.put(1, "feed", "orders/43", b"second")
    newer = page.locator("#changes tr.change[data-key='orders/43']")
    expect(newer).to_have_class(re.compile(r"\bnew\b"), timeout=WAIT_MS)
    expect(page.locator("#changes tr.change").first).to_have_attribute("data-key", "orders/43")
    cluster.delete(1, "feed", "orders/42")  # a key's newer state replaces its row
    expect(row).not_to_have_attribute("data-version", version, timeout=WAIT_MS)
    expect(row.locator("td").nth(2)).to_have_text("delete")
    expect(page.locator("#changes tr.change").first).to_have_attribute("data-key", "orders/42")
    _screenshot(page, "feed")


def test_charts_draw_the_sampled_metrics(page: Page, cluster: Cluster) -> None:
    node = cluster.nodes[0]

    def samples() -> int:
        node.request("GET", "/v1/kv/shop/user/1")  # some traffic to chart
        return len(json.loads(node.request("GET", "/v1/admin/history").body)["t"])

    wait_for(lambda: samples() >= 3, 30, "three samples")
    page.goto(page.url.split("#")[0] + "#charts")
    charts = page.locator("#charts figure.chart")
    expect(charts).to_have_count(5, timeout=WAIT_MS)
    expect(charts.locator("figcaption")).to_have_text(
        [
            "Requests per second",
            "Propagation lag per peer",
            "Changes applied from peers per second",
            "Held-back changes",
            "Database size",
        ]
    )
    reads = page.locator("path[data-series=reads]")
    expect(reads).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+ L"))
    expect(page.locator("path[data-series=n1]")).to_have_count(1)
    _screenshot(page, "charts")


@pytest.mark.parametrize("with_region_field", [True, False], ids=["regions", "older-node"])
def test_cluster_view_stays_readable_at_48_members(
    page: Page, cluster: Cluster, with_region_field: bool
) -> None:
    """Layout at fleet size: the real node's status document, its member rows multiplied.

    Forty-eight PoPs are more processes than a test machine holds, so the page
    gets n0's own answer with 48 rows made from its real ones (same fields), in
    six regions, three of them down and some lagging. A node older than regions
    answers no ``region`` field: the console then groups by the names.
    """
    status = json.loads(cluster.nodes[0].request("GET", "/v1/cluster/status").body)
    template = next(m for m in status["members"] if m["state"] == "up")
    regions = ["fra", "ams", "lhr", "iad", "sfo", "nrt"]
    members = []
    for i in range(48):
        region, index = regions[i % 6], i // 6 + 1
        down = i in (7, 20, 33)
        members.append(
            {
                **template,
                "node_id": f"{i:016x}",
                "region": region,
                "name": f"{region}-{index}",
                "url": f"https://{region}-{index}.edge.example:8787",
                "state": "down" if down else "up",
                "lag_changes": 1200 if down else i % 5,
                "lag_ms": 90_000 if down else 20 + i * 3,
                "last_error": "ClientConnectorError: connection refused" if down else None,
            }
        )
    if with_region_field:
        # Names that do not spell the region: the groups come from the field.
        for member in members:
            member["name"] = f"pop{int(member['node_id'], 16)}"
    else:
        for member in members:
            del member["region"]
    status["members"] = members
    page.route(
        "**/v1/cluster/status",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(status)
        ),
    )
    page.goto(page.url.split("#")[0] + "#cluster")
    page.reload()
    rows = page.locator("#members tr.member")
    expect(rows).to_have_count(48, timeout=WAIT_MS)
    regions_shown = page.locator("#members tr.region th")
    expect(regions_shown).to_have_count(6)
    for region in regions:
        expect(page.locator(f"#members tr.member[data-region={region}]")).to_have_count(8)
    # Regions with a down member first; within a region, the down member first.
    order = rows.evaluate_all("rows => rows.map(r => [r.dataset.region, r.dataset.state])")
    regions_in_order = list(dict.fromkeys(region for region, _ in order))
    with_down = {
        m["region"] if with_region_field else m["name"].split("-")[0]
        for m in members
        if m["state"] == "down"
    }
    assert set(regions_in_order[:3]) == with_down, regions_in_order
    for region in regions_in_order[:3]:
        assert next(state for r, state in order if r == region) == "down"
    down_names = page.locator("#members tr.member[data-state=down]").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )
    assert sorted(down_names) == sorted(m["name"] for m in members if m["state"] == "down")
    assert len(down_names) == 3
    # One screen wide: nothing scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    if with_region_field:
        _screenshot(page, "cluster-48")


def test_cluster_view_shows_the_upstream_and_its_outage(
    browser: Browser,
    start_node: Callable[..., NodeProcess],
    pg_schema: str,
    pg_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    security = Security(tmp_path / "security")
    upstream = ["--upstream", via(pg_proxy), "--upstream-schema", pg_schema]
    node = security.starter(start_node)("up", upstream)
    page = browser.new_page()
    _log_in(page, node, security.token)
    row = page.locator("#upstream tr.member")
    expect(row).to_have_class(re.compile(r"state-up"), timeout=WAIT_MS)
    expect(row).to_contain_text(f"127.0.0.1:{pg_proxy.port}")
    pg_proxy.cut()
    node.request("PUT", "/v1/kv/app/k", body=b"v")  # a change to push, into the outage
    expect(row).to_have_class(re.compile(r"state-down"), timeout=WAIT_MS)
    expect(row.locator(".last-error")).not_to_be_empty()
    _screenshot(page, "cluster-upstream-down")
    page.close()


def test_cluster_view_groups_two_regions_and_shows_the_backbone_and_its_outage(
    browser: Browser, start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """Real processes: eu1 and eu2 in region eu, us1 in region us, joined by a NATS backbone.

    The names do not spell the regions, so the groups can only come from the
    ``region`` field; eu1 pulls from eu2 and hears of us1 over the backbone.
    """
    nats = NatsServer(tmp_path / "nats").start()
    try:
        security = Security(tmp_path / "security")
        start = security.starter(start_node)
        backbone = ["--backbone", nats.url, "--backbone-stream", "ConsoleRegions"]
        eu1 = start("eu1", ["--node-name", "alpha", "--region", "eu", *backbone])
        start("eu2", ["--node-name", "beta", "--region", "eu", f"--peer={eu1.url}", *backbone])
        start("us1", ["--node-name", "gamma", "--region", "us", f"--peer={eu1.url}", *backbone])

        def both_heard() -> bool:
            status = json.loads(eu1.request("GET", "/v1/cluster/status").body)
            members = {(m["name"], m["region"], m["state"]) for m in status["members"]}
            return members == {("beta", "eu", "up"), ("gamma", "us", "up")}

        wait_for(both_heard, 30, "eu1 hears beta (eu) and gamma (us) up")
        page = browser.new_page()
        _log_in(page, eu1, security.token)
        expect(page.locator("#node-region")).to_have_text("eu", timeout=WAIT_MS)
        expect(page.locator("#members tr.region th")).to_have_count(2)
        expect(page.locator("#members tr.region th").first).to_contain_text("eu")
        eu = page.locator("#members tr.member[data-region=eu]")
        us = page.locator("#members tr.member[data-region=us]")
        expect(eu).to_have_attribute("data-name", "beta")
        expect(us).to_have_attribute("data-name", "gamma")
        expect(us.locator("td").first).to_contain_text("(not direct)")  # over the backbone
        row = page.locator("#backbone tr.member")
        expect(row).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        expect(row).to_contain_text(f"{nats.url} stream ConsoleRegions")
        _screenshot(page, "cluster-regions")

        nats.stop()
        eu1.request("PUT", "/v1/kv/app/k", body=b"v")  # a change to publish, into the outage
        expect(row).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        expect(row.locator(".last-error")).not_to_be_empty()
        expect(row.locator(".lag-changes")).not_to_have_text(re.compile(r"^0 changes"))
        _screenshot(page, "cluster-backbone-down")
        page.close()
    finally:
        nats.stop()


def test_in_protected_mode_the_console_needs_no_token(
    browser: Browser, start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node("protected", ["--node-name", "fra-1"])  # no tokens: loopback only
    assert node.request("PUT", "/v1/kv/app/k", body=b"v").status == 200
    page = browser.new_page()
    page.goto(f"{node.url}/ui/")
    page.click("#login button[type=submit]")  # the token field left empty
    expect(page.locator(".this-node h2")).to_have_text("This node: fra-1", timeout=WAIT_MS)
    expect(page.locator("#members tr.member")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('edgekv.token')") == ""
    page.goto(f"{node.url}/ui/#keys?ns=app")
    expect(page.locator("#keys tr.key-row[data-key=k]")).to_have_count(1, timeout=WAIT_MS)
    page.close()


def test_keys_and_values_are_shown_as_text_never_as_markup(page: Page, cluster: Cluster) -> None:
    hostile = '<img src=x onerror="window.pwned=1">'
    node = cluster.nodes[0]
    path = "/v1/kv/xss/" + "%3Cimg%20src%3Dx%20onerror%3D%22window.pwned%3D1%22%3E"
    answer = node.request("PUT", path, body=hostile.encode())
    assert answer.status == 200, answer.body
    page.goto(page.url.split("#")[0] + "#keys?ns=xss")
    row = page.locator("#keys tr.key-row")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row).to_have_attribute("data-key", hostile)
    row.locator("a").click()
    expect(page.locator("#value-text")).to_have_text(hostile)
    page.goto(page.url.split("#")[0] + "#feed")
    expect(page.locator("#changes tr.change", has_text=hostile).first).to_be_visible(
        timeout=WAIT_MS
    )
    assert page.evaluate("window.pwned") is None
    assert page.locator("#view img").count() == 0
