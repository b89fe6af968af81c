"""The web console's static files at ``/ui/``: public, since they hold no data.

The page holds no secret either: the operator types a token into it, which it
keeps in ``sessionStorage`` and sends as a bearer header on the API calls
(never a cookie, so no other site's page can make the browser send it). The
headers below keep the page from being framed or fed foreign scripts.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from edgekv.http.errors import ApiError

routes = web.RouteTableDef()

FILES = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "views.js": "text/javascript",
    "charts.js": "text/javascript",
    "api.js": "text/javascript",
    "sse.js": "text/javascript",
    "console.css": "text/css",
}
"""Every file the console serves, with its type: nothing else under /ui/ is read."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static(name: str) -> web.Response:
    content_type = FILES.get(name)
    if content_type is None:
        raise ApiError("not_found", "no such console file")
    # Read per request, not held: an idle node keeps no copy of the console.
    body = resources.files("edgekv.console").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)


@routes.get("/ui")
async def console_root(request: web.Request) -> web.Response:
    """``/ui`` without the slash: to ``/ui/``, where the page's relative URLs resolve."""
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def console_page(request: web.Request) -> web.Response:
    """The console's page."""
    return _static("index.html")


@routes.get("/ui/{name}")
async def console_file(request: web.Request) -> web.Response:
    """One of the console's scripts or its style sheet."""
    return _static(request.match_info["name"])
