"""A TCP proxy the tests control: put it on a peer link, then cut and heal it.

Partitions are made by cutting proxies, never by stopping nodes or touching
anything outside the test: every connection stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target`` until cut."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        # Accepting is a plain reader callback, not asyncio.Server: on Python
        # 3.11 a connection accepted just before Server.close() is dropped
        # with its socket left open. Here every accepted socket is closed at
        # once (while cut) or handed to a task that owns it.
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._loop.add_reader(self._listener, self._on_readable)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _on_readable(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # none left to accept (BlockingIOError), or closed
                return
            if self._cut or self.target is None:
                conn.close()
                continue
            conn.setblocking(False)
            self._loop.create_task(self._relay(conn))

    async def _relay(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        # Tracked from the start, so a cut or close while connecting drops it too.
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            if self._cut:  # cut while connecting: this connection must not outlive it
                up_writer.close()
                return
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass  # the target refused: the client's connection is dropped below
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""

        def drop() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(drop)

    def heal(self) -> None:
        """Accept connections again."""

        def allow() -> None:
            self._cut = False

        self._call(allow)

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn()  # type: ignore[operator]
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def close(self) -> None:
        """Drop every connection, stop listening, and end the proxy's thread."""
        self.cut()

        async def stop() -> None:
            self._loop.remove_reader(self._listener)
            self._listener.close()
            # The connections' tasks end here, not as "destroyed but pending" at
            # exit. Each gets to run first: one cancelled before its first step
            # would never close the socket it was handed.
            while others := asyncio.all_tasks() - {asyncio.current_task()}:
                _, slow = await asyncio.wait(others, timeout=1)
                for task in slow:
                    task.cancel()
            await asyncio.sleep(0)  # the aborted transports close their sockets
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)
        self._loop.close()
