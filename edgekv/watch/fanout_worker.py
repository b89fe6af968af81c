"""The watch fan-out process: the live tail of key-value watch streams, off the node's event loop.

Each change a watcher follows costs a write to its connection: a system
call, which on loopback also does the receiving side's work. With a thousand
watchers, that and the matching and encoding took a fifth of the node's
event loop, which every PUT waits on. The node therefore hands plain-HTTP
key-value watch streams, once caught up, to this process (setting
``watch_fanout``): it runs a :class:`~edgekv.watch.hub.WatchHub` of its own
over the same log, read through a read-only SQLite connection of its own
(WAL lets it read while the node writes), and writes the events to the
connections the node passed it. The node's part per round is one small
message: the seq its round reached and the vector that holds there.

Messages from the node (:mod:`edgekv.watch.fanout_channel`):

* ``round``: ``head``, ``covered`` -- the node's round reached ``head``;
  this hub reads the log up to it (never past: rows above are of a commit
  not settled yet) and writes what it holds.
* ``attach``: a watcher caught up at the node's tail, with its connection's
  socket: ``id``, its filter, ``coverage``, ``seq`` and ``vector`` (where
  its next id starts), ``hub`` (the node's vector there), ``head`` (its ids'
  head), ``chunked``.
* ``drop``: the node ended that stream (its handler was cancelled).
* ``tick``: the node's heartbeat round ran (four per ``watch_heartbeat``);
  answered with ``tock`` (a process that answers nothing for long is ended
  by the node). Streams here get heartbeats only while the node is heard
  from within an interval: a node that hangs leaves its watchers silent, so
  they time out and resume elsewhere, as they would if the node served them.
* ``stop``: the node is stopping: every stream ends.

The rounds that arrived together are read as one (up to the last before an
``attach``, which joins at that head): a process that got no CPU for a while
catches up with one read of the log, not one per round it missed.

Messages to the node: ``tock``, ``sent`` (``n``: events written since the last; ``at``:
the head this process has read to, for the node's ``fanout_behind_ms``), and
``ended`` -- ``id``, ``why`` (``gone``, ``cut`` or ``stopping``) and
``unsent`` (bytes the kernel had not taken, for the node to write before its
closing frame). The process ends when the channel closes: the node went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from edgekv.store.changelog import key_value_changes_after
from edgekv.store.database import connect_read_only
from edgekv.store.watch_reads import WatchReads
from edgekv.watch.fanout_channel import ChannelClosed, Inbox, Message, Outbox
from edgekv.watch.frames import Position
from edgekv.watch.hub import Watcher, WatchHub, WatchLimits
from edgekv.watch.kinds import Coverage, KeyValueKind, WatchFilter
from edgekv.watch.socket_sink import SocketSink
from edgekv_replication.changes import Change


class LogTail:
    """The hub's view of the node's log here: pages of ``kv``, up to where the node's round got."""

    def __init__(self, reader: sqlite3.Connection, node_id: int) -> None:
        self._reader = reader
        self.node_id = node_id
        self.seq = 0
        """The head of the node's last round: the hub reads no further."""
        self.covered: dict[int, int] = {}
        self._listener: Callable[[int], None] | None = None

    def on_commit(self, listener: Callable[[int], None]) -> None:
        self._listener = listener

    def when_settled(self, callback: Callable[[], None]) -> None:
        callback()  # the node tells of settled commits only

    def changes_after(self, cursor: int, limit: int) -> list[Change]:
        return key_value_changes_after(self._reader, cursor, limit)

    def reached(self, head: int, covered: dict[int, int]) -> None:
        """The node's round reached ``head``, where ``covered`` holds."""
        if head >= self.seq:
            self.seq, self.covered = head, covered
        if self._listener is not None:
            self._listener(head)

    def covered_now(self) -> dict[int, int]:
        return self.covered


class FanOut:
    """This process's watchers, by the node's ids, and the channel to the node."""

    def __init__(
        self, hub: WatchHub, tail: LogTail, channel: socket.socket, kind: KeyValueKind
    ) -> None:
        self._hub = hub
        self._tail = tail
        self._channel = channel
        self._kind = kind
        self._loop = asyncio.get_running_loop()
        self._inbox = Inbox(channel)
        self._outbox = Outbox(channel, self._loop)
        self._watchers: dict[int, Watcher] = {}
        self._ends: set[asyncio.Task[None]] = set()
        self._reported_sent = 0
        self._reported_at = 0
        self._closed = self._loop.create_future()
        self._heard = self._loop.time()
        """Loop time of the node's last message."""
        hub.beating = self.node_heard

    def node_heard(self) -> bool:
        """Whether the node sent anything within a heartbeat interval (it ticks four times)."""
        return self._loop.time() - self._heard <= self._hub.limits.heartbeat

    async def run(self) -> None:
        """Serve the node's messages until the channel closes."""
        self._loop.add_reader(self._channel.fileno(), self._readable)
        try:
            await self._closed
        finally:
            self._loop.remove_reader(self._channel.fileno())
            self._hub.stop()
            self._inbox.close()

    def _readable(self) -> None:
        try:
            messages = self._inbox.receive()
        except ChannelClosed:
            if not self._closed.done():
                self._closed.set_result(None)
            return
        if messages:
            self._heard = self._loop.time()
        behind = False
        for message in messages:
            kind = message.get("t")
            if kind == "round":
                self._tail.reached(message["head"], dict(message["covered"]))
                behind = True
                continue
            if behind:  # an attach joins at the head of the rounds before it
                self._hub.read_to_head()
                behind = False
            self._handle(kind, message)
        if behind:
            self._hub.read_to_head()
        self._report_sent()

    def _handle(self, kind: object, message: Message) -> None:
        if kind == "tick":
            if not self._outbox.closed:
                self._outbox.send({"t": "tock"})
        elif kind == "attach":
            self._attach(message, self._inbox.fds.popleft())
        elif kind == "drop":
            watcher = self._watchers.get(message["id"])
            if watcher is not None and watcher.sink is not None:
                watcher.sink.abort()
                self._hub.gone(watcher)
        elif kind == "stop":
            self._hub.stop()

    def _attach(self, message: Message, fd: int) -> None:
        space, prefix, keys, include_values = message["filter"]
        watch = WatchFilter(
            space, prefix, None if keys is None else frozenset(keys), include_values
        )
        coverage = message["coverage"]
        watcher = Watcher(
            self._kind,
            watch,
            "",
            message["limit"],
            None if coverage is None else Coverage(dict(coverage[0]), coverage[1]),
        )
        sink = SocketSink(
            socket.socket(fileno=fd),
            message["chunked"],
            self._loop,
            lambda: self._hub.gone(watcher),
        )
        seq = message["seq"]
        self._hub.join_at(seq, dict(message["hub"]))
        self._hub.adopt(watcher)
        self._hub.attach(watcher, Position.of(seq, dict(message["vector"])), sink, message["head"])
        watcher_id: int = message["id"]
        self._watchers[watcher_id] = watcher
        task = self._loop.create_task(self._until_end(watcher_id, watcher, sink))
        self._ends.add(task)
        task.add_done_callback(self._ends.discard)

    async def _until_end(self, watcher_id: int, watcher: Watcher, sink: SocketSink) -> None:
        await watcher.wait_end()
        self._report_sent()
        why = "gone" if watcher.gone else "stopping" if watcher.stopping else "cut"
        unsent = b"" if watcher.gone else sink.release()
        self._hub.close(watcher)
        del self._watchers[watcher_id]
        if not self._outbox.closed:  # else the node went: nobody to tell
            self._outbox.send({"t": "ended", "id": watcher_id, "why": why, "unsent": unsent})

    def _report_sent(self) -> None:
        # One message per batch of rounds read, whatever the number of watchers.
        sent, at = self._hub.events_sent, self._tail.seq
        if (sent, at) != (self._reported_sent, self._reported_at) and not self._outbox.closed:
            self._outbox.send({"t": "sent", "n": sent - self._reported_sent, "at": at})
            self._reported_sent, self._reported_at = sent, at


async def serve(args: argparse.Namespace) -> None:
    channel = socket.socket(fileno=args.channel_fd)
    channel.setblocking(False)
    reader = connect_read_only(Path(args.database))
    tail = LogTail(reader, args.node_id)
    kind = KeyValueKind(WatchReads(reader), args.value_bytes)
    limits = WatchLimits(buffer_bytes=args.buffer_bytes, heartbeat=args.heartbeat)
    hub = WatchHub(tail, {kind.name: kind}, limits, tail.covered_now)
    hub.start(asyncio.get_running_loop())
    hub.round_gap = 0.0  # the node's rounds are the pace: each message is read at once
    fan_out = FanOut(hub, tail, channel, kind)
    try:
        await fan_out.run()
    finally:
        reader.close()


def _run_on_spare_cpu() -> None:
    """Run only on CPU the node's own work leaves (Linux ``SCHED_IDLE``; elsewhere nice 19).

    At the same priority, this process's bursts of writes (a round's events,
    every few milliseconds under load) took the core a commit's hand-off or a
    request was woken for: PUTs slowed by a fifth with 1,010 watchers though
    the host had CPU to spare. Events wait for a spare cycle; writes do not.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekv.watch.fanout_worker")
    parser.add_argument("--database", required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, required=True)
    parser.add_argument("--buffer-bytes", type=int, required=True)
    parser.add_argument("--heartbeat", type=float, required=True)
    args = parser.parse_args(argv)
    _run_on_spare_cpu()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
