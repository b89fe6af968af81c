"""A TCP proxy the tests control: put it on a peer link, then cut and heal it.

Partitions are made by cutting proxies, never by stopping nodes or touching
anything outside the test: every connection stays on 127.0.0.1.

The proxy is also the WAN model (the kernel here has no netem): given a
:class:`~testkit.wan.LinkShape`, each direction delays every chunk it reads
to its arrival time plus the one-way delay and a jitter draw, and paces the
bytes through a token bucket at the link's bandwidth. The delay is per chunk,
not per connection turn, so a busy link carries bandwidth x delay bytes in
flight as a real one does: latency does not serialise throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading

from testkit.wan import LinkShape

_CHUNK = 65536
_IN_FLIGHT_CHUNKS = 256
"""Chunks read but not yet due, per direction: bounds the proxy's memory per connection
(a reader that gets this far ahead waits, which is TCP's back-pressure on the sender)."""


class TokenBucket:
    """``rate`` bytes per second, with bursts of up to ``burst`` bytes (loop time)."""

    def __init__(self, rate: float, burst: int, loop: asyncio.AbstractEventLoop) -> None:
        self.rate, self.burst, self._loop = rate, burst, loop
        self._tokens = float(burst)
        self._at = loop.time()

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes (at most one burst) may go out, and spend them."""
        assert size <= self.burst
        while True:
            now = self._loop.time()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= size:
                self._tokens -= size
                return
            await asyncio.sleep((size - self._tokens) / self.rate)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target`` until cut, shaped by ``shape``.

    ``shape`` may be changed while connections are open; each chunk read takes
    the shape of the moment it arrives.
    """

    def __init__(
        self,
        target: int | None = None,
        shape: LinkShape | None = None,
        seed: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Listen on a free port. ``loop``: run on that (running) event loop, shared
        with other proxies, instead of a thread of this proxy's own (for hundreds of links)."""
        self.target = target
        self.shape = shape or LinkShape()
        self._rng = random.Random(seed)
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        # Accepting is a plain reader callback, not asyncio.Server: on Python
        # 3.11 a connection accepted just before Server.close() is dropped
        # with its socket left open. Here every accepted socket is closed at
        # once (while cut) or handed to a task that owns it.
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        if loop is not None:
            self._loop = loop
            self._call(lambda: loop.add_reader(self._listener, self._on_readable))
            return
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
            task = self._loop.create_task(self._relay(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
        """Copy one direction: each chunk leaves at its due time, paced by the bandwidth."""
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_IN_FLIGHT_CHUNKS)
        failed = asyncio.Event()
        sender = asyncio.create_task(self._send_when_due(due, writer, failed))
        last_due = 0.0
        try:
            while not failed.is_set() and (data := await reader.read(_CHUNK)):
                shape = self.shape
                if not shape.shaped:
                    await due.join()  # a shape just lifted: what is in flight goes first
                    writer.write(data)
                    await writer.drain()
                    continue
                # Never before the previous chunk: jitter must not reorder the bytes.
                last_due = max(self._loop.time() + shape.one_way_ms(self._rng) / 1000, last_due)
                await due.put((last_due, data))
        except (OSError, RuntimeError):
            pass
        finally:
            # End of stream goes after everything due before it; a failed sender
            # still takes it (it discards what it can no longer write).
            with contextlib.suppress(asyncio.QueueFull):
                due.put_nowait((last_due, b""))
            if due.full():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._writers.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _send_when_due(
        self,
        due: asyncio.Queue[tuple[float, bytes]],
        writer: asyncio.StreamWriter,
        failed: asyncio.Event,
    ) -> None:
        bucket: TokenBucket | None = None
        while True:
            at, data = await due.get()
            try:
                if not data:
                    return
                if failed.is_set():
                    continue
                delay = at - self._loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                rate, burst = self.shape.bytes_per_second, self.shape.burst_bytes
                if rate is None:
                    writer.write(data)
                else:
                    if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
                        bucket = TokenBucket(rate, burst, self._loop)
                    for start in range(0, len(data), burst):
                        piece = data[start : start + burst]
                        await bucket.take(len(piece))
                        writer.write(piece)
                await writer.drain()
            except (OSError, RuntimeError):
                failed.set()  # the reader stops; what is queued is dropped
            finally:
                due.task_done()

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
        if self._thread is None:
            self._close_on_shared_loop()
            return

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

    def _close_on_shared_loop(self) -> None:
        """As :meth:`close`, on a loop that goes on serving other proxies."""

        async def stop() -> None:
            self._loop.remove_reader(self._listener)
            self._listener.close()
            # As in close(): each task runs first, so it closes the socket it was handed.
            if self._tasks:
                _, slow = await asyncio.wait(set(self._tasks), timeout=1)
                for task in slow:
                    task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
