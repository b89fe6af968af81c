"""The console's API calls cannot be used from another origin, nor through a foreign Host.

In protected mode (no tokens, loopback only) every call the console makes is
refused with 403 ``untrusted_origin`` when it comes from a page of another
origin or names a non-loopback ``Host`` (DNS rebinding). With tokens, the
token is the only credential: it lives in the console's sessionStorage, never
in a cookie, so another site's page has nothing the browser would send for it,
and the node answers no CORS preflight. The last tests run the attacks in
chromium: a page on ``evil.example`` (resolved to 127.0.0.1 by the browser)
posting a "simple" cross-site request, and a rebound name loading the console.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from testkit.browser import chromium
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.security import Security

API_JS = Path(__file__).resolve().parent.parent / "edgekv" / "console" / "static" / "api.js"

CONSOLE_CALLS = (
    ("GET", "/ui/"),
    ("GET", "/ui/console.js"),
    ("GET", "/v1/cluster/status"),
    ("GET", "/v1/admin/history"),
    ("GET", "/v1/admin/namespaces"),
    ("GET", "/v1/admin/collections"),
    ("GET", "/v1/admin/changes?ns=app&limit=5"),
    ("GET", "/v1/kv/app?prefix=user%2F&limit=50"),
    ("GET", "/v1/kv/app/user/1"),
    ("PUT", "/v1/kv/app/user/1"),
    ("DELETE", "/v1/kv/app/user/1"),
    ("GET", "/v1/docs/people?where=age%3E%3D30&limit=50"),
    ("GET", "/v1/docs/people/ada"),
    ("GET", "/v1/docs/people/_indexes"),
)
"""Every request the console sends (and its own page), as it sends them."""


def test_the_list_covers_every_path_the_console_calls() -> None:
    called = set(re.findall(r"[`\"](/v1/[a-z]+/?[a-z]*)", API_JS.read_text()))
    assert called  # the pattern still finds the paths in api.js
    for path in called:
        assert any(call.startswith(path) for _, call in CONSOLE_CALLS), path


@pytest.fixture
def protected(start_node: Callable[..., NodeProcess]) -> NodeProcess:
    node = start_node()
    assert node.request("PUT", "/v1/kv/app/user/1", body=b"before").status == 200
    doc = {"name": "Ada", "age": 36}
    assert node.request("PUT", "/v1/docs/people/ada", json_body=doc).status == 200
    return node


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file: page
        {"Origin": "http://127.0.0.1.evil.example:8787"},
        {"Host": "evil.example"},  # a rebound name resolving to 127.0.0.1
        {"Host": "evil.example:8787", "Origin": "http://evil.example:8787"},
    ],
)
def test_protected_mode_refuses_every_console_call_from_elsewhere(
    protected: NodeProcess, headers: dict[str, str]
) -> None:
    for method, path in CONSOLE_CALLS:
        body = b"after" if method == "PUT" else None
        answer = protected.request(method, path, body=body, headers=headers)
        assert_error(answer, "untrusted_origin")
    # Nothing was written or deleted.
    assert protected.request("GET", "/v1/kv/app/user/1").body == b"before"


def test_protected_mode_answers_the_console_on_loopback(protected: NodeProcess) -> None:
    """The control: the same calls from a loopback origin are served."""
    origin = {"Origin": protected.url}
    for method, path in CONSOLE_CALLS:
        body = b"after" if method == "PUT" else None
        answer = protected.request(method, path, body=body, headers=origin)
        assert answer.status < 300, (method, path, answer.status, answer.body[:200])


@pytest.fixture
def secured(start_node: Callable[..., NodeProcess], tmp_path: Path) -> NodeProcess:
    security = Security(tmp_path / "security")
    node = security.starter(start_node)()
    assert node.request("PUT", "/v1/kv/app/user/1", body=b"before").status == 200
    return node


def test_with_tokens_a_call_without_the_token_is_refused_and_no_preflight_passes(
    secured: NodeProcess,
) -> None:
    cross_site = {"Origin": "http://evil.example", "Authorization": ""}
    for method, path in CONSOLE_CALLS:
        if path.startswith("/ui/"):
            continue  # the page and scripts hold no data
        answer = secured.request(method, path, headers=cross_site)
        assert_error(answer, "unauthorized")
        # A browser asks first before sending a bearer header across origins: refused.
        preflight = secured.request(
            "OPTIONS",
            path,
            headers={
                **cross_site,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status == 405
        assert not any(name.lower().startswith("access-control-") for name in preflight.headers)
    assert secured.request("GET", "/v1/kv/app/user/1").body == b"before"


def test_the_console_page_may_not_be_framed_nor_load_foreign_scripts(secured: NodeProcess) -> None:
    answer = secured.request("GET", "/ui/")
    assert answer.status == 200
    policy = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in answer.headers
    assert "document.cookie" not in API_JS.read_text()


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


_SIMPLE_POST = """async (url) => {
  // A "simple" request: no preflight, the browser sends it and hides the answer.
  await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
    body: JSON.stringify({operations: [{op: "put", key: "user/1", value: btoa("pwned")}]})});
  return true;
}"""


@pytest.mark.slow
def test_in_a_browser_another_site_cannot_write_nor_rebind_to_the_console(
    protected: NodeProcess, attacker_site: int
) -> None:
    bulk = f"{protected.url}/v1/kv/app/_bulk"
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
    with chromium([rules]) as browser:
        page = browser.new_page()
        # The attack from another site: sent by the browser, refused by the node.
        page.goto(f"http://evil.example:{attacker_site}/")
        assert page.evaluate(_SIMPLE_POST, bulk)
        assert protected.request("GET", "/v1/kv/app/user/1").body == b"before"
        # DNS rebinding: the console under a name that resolves to 127.0.0.1.
        port = protected.url.rsplit(":", 1)[1]
        answer = page.goto(f"http://evil.example:{port}/ui/")
        assert answer is not None
        assert answer.status == 403
        assert "untrusted_origin" in page.content()
        # The control: the same request from a loopback page is written, so the
        # refusals above are the node's checks, not the browser's.
        page.goto(f"http://127.0.0.1:{attacker_site}/")
        assert page.evaluate(_SIMPLE_POST, bulk)
        assert protected.request("GET", "/v1/kv/app/user/1").body == b"pwned"
