"""The node's side of the watch fan-out process: start it, hand it watchers, hear how they end.

The process (:mod:`edgekv.watch.fanout_worker`) is the node's child, started
with the node and ended with it (its channel closing ends it). It serves the
live tail of the key-value watchers the hub hands it (:meth:`FanOutLink.take`);
the stream's handler stays here, waiting for the end, and writes the
closing frame as for any watcher. The hub's rounds tell it how far they
read (:meth:`FanOutLink.reached`): one small message per round, whatever the
number of watchers.

Should the process die (or hang: it answers the node's ticks), every stream
it served is dropped (its client resumes from its last event id, here or at
another PoP), the node serves new watchers itself meanwhile, and a new
process is started after a backoff (1 s, doubling to a minute; back to 1 s
once one has run for a minute).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import subprocess
import sys
from pathlib import Path

from edgekv.watch.fanout_channel import SERVED_KINDS, ChannelClosed, Inbox, Message, Outbox
from edgekv.watch.frames import Position, Transferable, VectorText
from edgekv.watch.hub import Watcher, WatchHub

log = logging.getLogger(__name__)

_STOP_SECONDS = 2.0
"""How long the node's stop waits for the process to hand the streams back."""
_HUNG_AFTER_BEATS = 4
"""Heartbeat intervals without an answer to a tick before the process counts as hung."""
_TOLD_ROUNDS = 1024
"""Rounds remembered until the process says it read them (past it, the newest merge)."""
_FIRST_RESTART_SECONDS = 1.0
_LAST_RESTART_SECONDS = 60.0
"""Backoff between restarts of a process that keeps ending; one that ran this long
counts as having run well (the next restart waits the first delay again)."""


class FanOutLink:
    """The channel to the fan-out process, and the watchers it serves (the hub's ``handover``)."""

    def __init__(self, hub: WatchHub, database: Path, node_id: int, value_bytes: int) -> None:
        self._hub = hub
        self._database = database
        self._node_id = node_id
        self._value_bytes = value_bytes
        self._serving: dict[int, Watcher] = {}
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._outbox: Outbox | None = None
        self._inbox: Inbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_ended: asyncio.Event | None = None
        self._told: collections.deque[tuple[int, float]] = collections.deque()
        """Rounds told and not read by the process yet: head, loop time told."""
        self._unanswered_since: float | None = None
        """Loop time of the first tick the process has not answered (nor sent anything since)."""
        self._reaping: set[asyncio.Task[None]] = set()
        """Ended processes being waited for (so none stays a zombie)."""
        self._started_at = 0.0
        self._restart_delay = _FIRST_RESTART_SECONDS
        self._restart: asyncio.TimerHandle | None = None
        self._stopping = False

    @property
    def serving(self) -> int:
        """Watchers handed over and not ended yet."""
        return len(self._serving)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the process (the hub hands it watchers from now on)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        limits = self._hub.limits
        command = [
            sys.executable, "-m", "edgekv.watch.fanout_worker",
            "--database", str(self._database),
            "--channel-fd", str(theirs.fileno()),
            "--node-id", str(self._node_id),
            "--value-bytes", str(self._value_bytes),
            "--buffer-bytes", str(limits.buffer_bytes),
            "--heartbeat", str(limits.heartbeat),
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(command, pass_fds=[theirs.fileno()])
        finally:
            theirs.close()
        ours.setblocking(False)
        self._loop, self._channel = loop, ours
        self._outbox, self._inbox = Outbox(ours, loop), Inbox(ours)
        self._unanswered_since = None
        self._started_at = loop.time()
        loop.add_reader(ours.fileno(), self._readable)
        self._hub.handover = self

    def _start_again(self) -> None:
        """The backoff after a process ended is over: start another."""
        self._restart = None
        if self._stopping or self._loop is None:
            return
        try:
            self.start(self._loop)
        except OSError:
            log.exception("the watch fan-out process cannot be started; the node serves watchers")
            self._schedule_restart()
            return
        log.warning("the watch fan-out process was started again")

    def _schedule_restart(self) -> None:
        loop = self._loop
        if self._stopping or loop is None or self._restart is not None:
            return
        if loop.time() - self._started_at >= _LAST_RESTART_SECONDS:
            self._restart_delay = _FIRST_RESTART_SECONDS  # the last one ran well
        self._restart = loop.call_later(self._restart_delay, self._start_again)
        self._restart_delay = min(2 * self._restart_delay, _LAST_RESTART_SECONDS)

    def take(
        self, watcher: Watcher, position: Position, sink: Transferable, hub: VectorText
    ) -> bool:
        """Hand ``watcher`` over at ``position``; False when it cannot go (it stays here)."""
        outbox = self._outbox
        if outbox is None or outbox.closed or watcher.kind.name not in SERVED_KINDS:
            return False
        handed = sink.hand_over()
        if handed is None:
            return False
        fd, chunked = handed
        watcher_id = next(self._ids)
        watch, coverage = watcher.filter, watcher.coverage
        message: Message = {
            "t": "attach",
            "id": watcher_id,
            "filter": [
                watch.space,
                watch.prefix,
                None if watch.keys is None else sorted(watch.keys),
                watch.include_values,
            ],
            "coverage": (
                None if coverage is None else [list(coverage.vector.items()), coverage.floor]
            ),
            "seq": position.seq,
            "vector": list(position.vector.items()),
            "hub": list(hub.vector.items()),
            "head": watcher.id_head,
            "chunked": chunked,
            "limit": watcher.limit,
        }
        outbox.send(message, fd)  # open (checked above): it queues what it cannot send
        if not self._serving:  # ticks (and their answers) start again from now
            self._unanswered_since = None
        self._serving[watcher_id] = watcher
        watcher.fanout_id = watcher_id
        if outbox.closed:  # the write found the channel broken
            self._lost()
        return True

    def reached(self, head: int, covered: dict[int, int]) -> None:
        """Tell the process how far the node's round read."""
        self._send({"t": "round", "head": head, "covered": list(covered.items())}, True)
        if self._loop is None:
            return
        told = self._told
        if len(told) < _TOLD_ROUNDS:
            told.append((head, self._loop.time()))
        else:  # the process does not read: the newest entry takes the head, keeps its time
            told[-1] = (head, told[-1][1])

    def behind(self) -> float:
        """Seconds since the oldest round the process has not read yet was told (0: none)."""
        if not self._told or self._loop is None:
            return 0.0
        return max(0.0, self._loop.time() - self._told[0][1])

    def tick(self) -> None:
        """The node's heartbeat round ran: the process may keep its streams beating.

        The process answers each tick. One that answered nothing for
        :data:`_HUNG_AFTER_BEATS` intervals is hung (stopped, or stuck): its
        clients that went are never counted out and its streams get nothing,
        so it is ended, its streams dropped and another started, as if it had died.
        """
        loop = self._loop
        if loop is None or self._outbox is None or self._outbox.closed:
            return
        now = loop.time()
        if self._unanswered_since is None:
            self._unanswered_since = now
        elif now - self._unanswered_since > _HUNG_AFTER_BEATS * self._hub.limits.heartbeat:
            log.error(
                "the watch fan-out process answered nothing for %.0f s: it is ended and its"
                " streams dropped (their clients resume); another is started",
                now - self._unanswered_since,
            )
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
            self._lost()
            return
        self._send({"t": "tick"})

    def drop(self, watcher: Watcher) -> None:
        """The node ended that stream: the process stops writing to it."""
        if self._serving.pop(watcher.fanout_id, None) is not None:
            self._send({"t": "drop", "id": watcher.fanout_id})

    def stop(self) -> None:
        """Every stream ends (the process hands each back); new ones stay with the node."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._serving:
            self._all_ended = asyncio.Event()
        self._send({"t": "stop"})

    async def close(self) -> None:
        """After :meth:`stop`: wait (a little) for the streams back, then end the process."""
        if self._all_ended is not None:
            try:
                await asyncio.wait_for(self._all_ended.wait(), _STOP_SECONDS)
            except TimeoutError:
                log.warning("the watch fan-out process did not end its streams in time")
        self._stopping = True
        self._lost()
        if self._reaping:
            await asyncio.gather(*self._reaping)

    def _send(self, message: Message, replaceable: bool = False) -> None:
        outbox = self._outbox
        if outbox is None or outbox.closed:
            return
        outbox.send(message, replaceable=replaceable)
        if outbox.closed:
            self._lost()

    def _readable(self) -> None:
        assert self._inbox is not None
        try:
            messages = self._inbox.receive()
        except ChannelClosed:
            log.error("the watch fan-out process went; its streams are dropped")
            self._lost()
            return
        if messages:
            self._unanswered_since = None
        for message in messages:
            kind = message.get("t")
            if kind == "sent":
                self._hub.events_sent += int(message["n"])
                at = int(message["at"])
                told = self._told
                while told and told[0][0] <= at:
                    told.popleft()
            elif kind == "ended":
                watcher = self._serving.pop(message["id"], None)
                if watcher is not None:
                    self._hub.handed_back(watcher, str(message["why"]), bytes(message["unsent"]))
                self._check_all_ended()

    def _lost(self) -> None:
        """The channel is gone: every stream still handed over is dropped."""
        loop, channel = self._loop, self._channel
        if loop is not None and channel is not None:
            loop.remove_reader(channel.fileno())
            if self._outbox is not None:
                self._outbox.close()
            if self._inbox is not None:
                self._inbox.close()
            channel.close()
            self._channel = None
        process, self._process = self._process, None
        if process is not None and loop is not None:
            reaping = loop.create_task(self._reap(process))
            self._reaping.add(reaping)
            reaping.add_done_callback(self._reaping.discard)
            self._schedule_restart()
        self._told.clear()
        serving, self._serving = self._serving, {}
        for watcher in serving.values():
            self._hub.handed_back(watcher, "gone", None)
        self._check_all_ended()

    async def _reap(self, process: subprocess.Popen[bytes]) -> None:
        """Wait for the process to end (killed if it lingers), so no zombie stays behind."""
        try:
            code = await asyncio.to_thread(process.wait, _STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            code = await asyncio.to_thread(process.wait)
        if code != 0:
            log.warning("the watch fan-out process ended with %s", code)

    def _check_all_ended(self) -> None:
        if not self._serving and self._all_ended is not None:
            self._all_ended.set()
