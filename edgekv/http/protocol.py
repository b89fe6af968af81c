"""The HTTP connection of a node: aiohttp's protocol with the API's error shape and timeouts.

aiohttp answers what its parser refuses (a bad request line, an invalid or too
long header, bad chunked encoding) from its connection protocol, before any
route runs, as plain text. :class:`NodeProtocol` renders those answers in the
one error shape, and closes connections that send nothing or drip their
headers:

* ``idle_timeout`` is aiohttp's keep-alive timeout: it closes a connection
  with no request in progress, counted from when it opened or answered last.
* ``header_timeout`` starts when the first bytes of a request head reach an
  idle connection and closes it unless the head is complete in time.

:func:`in_error_shape` gives the same shape to the HTTP errors aiohttp's router
raises for request targets that are not paths. :class:`NodeRunner` is
:class:`aiohttp.web.AppRunner` serving through it, and never inflating bodies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from edgekv.http.errors import ApiError, error_response, from_http_exception

log = logging.getLogger(__name__)


class NodeProtocol(RequestHandler):
    """aiohttp's request handler, answering its own errors in the API's shape."""

    __slots__ = ("_head_timer", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        """Serve ``manager``'s connections; ``kwargs`` are aiohttp's."""
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, timing a request head that arrives in parts."""
        super().data_received(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # Still waiting for a request, yet bytes came: a head, incomplete.
            if self._head_timer is None:
                self._head_timer = self._loop.call_later(self._header_timeout, self._head_late)
        elif self._head_timer is not None:  # the head completed (or a body is arriving)
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            log.info("closing a connection whose request head took over %s s", self._header_timeout)
            self.force_close()

    def close_unread(self) -> None:
        """Close the connection once the current answer is sent, without reading the
        rest of its request's body first (aiohttp would wait up to 10 s for it)."""
        self._lingering_time = 0.0

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the head timer with the connection."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The error shape for what aiohttp refuses itself; the connection then closes."""
        if request.writer.output_size > 0:  # as aiohttp: the answer has begun, so cut it
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
            error = ApiError("internal_error", "internal error; nothing written")
        else:
            # Malformed input is the client's fault, and hostile clients send it in
            # bulk: no traceback in the log.
            log.debug("refused a malformed request from %s: %s", request.remote, exc)
            error = parser_error(exc, message)
        response = error_response(error)
        response.force_close()
        return response


def parser_error(exc: BaseException | None, message: str | None) -> ApiError:
    """The API error for what aiohttp's HTTP parser refused."""
    text = message if message is not None else str(exc or "")
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and "Too many headers" in text
    ):
        return ApiError("headers_too_large", "the request line or headers are too large")
    # The parser's first line names the fault; the rest echoes the client's bytes.
    reason = text.strip().splitlines()[0].rstrip(":") if text.strip() else "malformed request"
    return ApiError("invalid_request", f"malformed HTTP request: {reason}")


RequestHandlerFn = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def in_error_shape(handler: RequestHandlerFn) -> RequestHandlerFn:
    """``handler`` (the application), with aiohttp's own HTTP errors in the API's shape.

    Every route answers in the error shape itself, and the catch-all route takes
    every path no route has; what is left is a request target that is not a path
    at all (``CONNECT host:port``, ``OPTIONS *``), which aiohttp's router answers
    with a plain-text 404 before any route runs. One ``try`` per request: no cost
    unless something is raised.
    """

    async def answer(request: BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect is not an error
                raise
            return error_response(from_http_exception(exc))

    return answer


class NodeServer(web.Server):
    """aiohttp's server, making :class:`NodeProtocol` connections."""

    def __init__(self, plain: web.Server, header_timeout: float) -> None:
        """Serve as ``plain`` (aiohttp's server for the application) would."""
        super().__init__(
            in_error_shape(plain.request_handler),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self._header_timeout = header_timeout

    def __call__(self) -> NodeProtocol:
        """A protocol for one new connection."""
        return NodeProtocol(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )


class NodeRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`NodeProtocol`."""

    def __init__(
        self, app: web.Application, *, idle_timeout: float, header_timeout: float, **kwargs: Any
    ) -> None:
        """Run ``app``; ``kwargs`` are :class:`aiohttp.web.AppRunner`'s."""
        # auto_decompress=False: aiohttp would inflate a Content-Encoding: gzip body in
        # its parser, on the loop, past every body limit; the routes refuse such bodies
        # instead (edgekv.http.bodies.read_within).
        super().__init__(app, keepalive_timeout=idle_timeout, auto_decompress=False, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        return NodeServer(await super()._make_server(), self._header_timeout)
