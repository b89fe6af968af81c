"""Running a node: bind, announce, serve until a signal, shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from edgekv import __version__, event_loop
from edgekv.auth import is_loopback_host
from edgekv.config import Config, ConfigError
from edgekv.http.app import create_app
from edgekv.http.protocol import NodeRunner
from edgekv.node import Node

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
_BACKLOG = 128  # aiohttp's TCPSite default


@dataclass(frozen=True, slots=True)
class RunningNode:
    """A node serving HTTP: the node, and the URL it answers on."""

    node: Node
    url: str


def check_protected_mode(config: Config) -> None:
    """Refuse a non-loopback address unless tokens are configured (protected mode)."""
    if not config.tokens and not is_loopback_host(config.host):
        raise ConfigError(
            f"refusing to listen on {config.host} without tokens: with no [[tokens]] "
            "configured, EdgeKV serves only on a loopback address (127.0.0.1, ::1). "
            "Create a token with `edgekv token create` and add it to the config file."
        )


@contextlib.asynccontextmanager
async def running_node(config: Config) -> AsyncIterator[RunningNode]:
    """Bind the address, open the node, serve its API; on exit stop serving and close it.

    The socket is bound first: the node is built whole knowing the URL it
    answers on (with port 0, only binding tells). Leaving the block stops
    accepting connections, lets in-flight requests finish (up to
    ``shutdown_timeout``), then commits queued writes.
    """
    check_protected_mode(config)
    tls = server_tls(config)
    listeners = _listen(config)
    try:
        url = _bound_url(listeners, config)
        node = await Node.open(config, url)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    try:
        runner = NodeRunner(
            create_app(node),
            idle_timeout=config.idle_timeout,
            header_timeout=config.header_timeout,
            access_log=None,
            shutdown_timeout=config.shutdown_timeout,
            # Room for a 512-byte key fully percent-encoded and 1 KiB metadata, so
            # over-long ones reach the API's own checks and get its error codes.
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        await runner.setup()
        try:
            for listener in listeners:
                await web.SockSite(runner, listener, ssl_context=tls).start()
            await node.start()
            try:
                yield RunningNode(node, url)
            finally:
                await node.stop_replication()
        finally:
            await runner.cleanup()
    finally:
        for listener in listeners:
            listener.close()  # those the server took are closed already: a no-op
        await node.close()


def server_tls(config: Config) -> ssl.SSLContext | None:
    """The TLS context of the listener, when a certificate is configured."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load tls_cert/tls_key: {exc}") from None
    return context


def _listen(config: Config) -> list[socket.socket]:
    """Listening sockets on every address of the configured host, as asyncio binds them.

    Bound here rather than by aiohttp's ``TCPSite`` so that the URL is known
    before the node is built; the options are the ones asyncio's
    ``create_server`` sets (``SO_REUSEADDR``, IPv6 sockets IPv6-only).
    """
    host = config.host or None
    infos = socket.getaddrinfo(host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                listener.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: {exc.strerror}",
                ) from None
            listener.listen(_BACKLOG)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _bound_url(listeners: list[socket.socket], config: Config) -> str:
    port = listeners[0].getsockname()[1] if listeners else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    scheme = "https" if config.tls_cert else "http"
    return f"{scheme}://{host}:{port}"


def startup_line(running: RunningNode) -> str:
    """The one line ``edgekv serve`` prints once it is ready."""
    config, store = running.node.config, running.node.store
    mode = "protected mode: loopback, no tokens" if not config.tokens else "tokens required"
    return (
        f"EdgeKV {__version__} serving {running.url} node={store.node_id:016x} "
        f"name={config.display_name} data={store.path.parent} ({mode})"
    )


def reload_settings(node: Node, reload: Callable[[], Config]) -> None:
    """``SIGHUP``: read the config file again and take its tokens and rate limits.

    Other settings need a restart. A file that does not load, or that would
    switch protected mode on or off, changes nothing (the log says why).
    """
    try:
        config = reload()
        node.auth.replace_tokens(config.tokens)
    except (ConfigError, ValueError) as exc:
        log.error("SIGHUP: the config file was not reloaded: %s", exc)
        return
    node.rate_limiter.reconfigure(config.rate_limit, config.rate_limit_burst)
    log.info("SIGHUP: reloaded the config file: %d token(s)", len(config.tokens))


async def serve_forever(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; on SIGHUP, ``reload``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_node(config) as running:
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload_settings, running.node, reload)
        # Everything allocated so far lives as long as the process: keep the
        # collector from re-scanning it on every collection of the hot path.
        gc.freeze()
        print(startup_line(running), flush=True)
        await stop.wait()
        log.info("stopping: finishing in-flight requests")
    log.info("stopped")


def serve(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Run a node in this process until it is signalled to stop (``reload``: on SIGHUP)."""
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        socket.getaddrinfo(config.host, None)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {config.host!r}: {exc}") from None
    try:
        loop_name, factory = event_loop.loop_factory(config.event_loop)
    except event_loop.EventLoopUnavailable as exc:
        raise ConfigError(str(exc)) from None
    log.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_forever(config, reload))
