"""Watches, without I/O: the SSE parser, the events, and what a watch keeps between streams.

Both clients' ``watch`` (blocking and async) follow one :class:`WatchCursor`:
the resume token of the last event received, the PoPs to try in turn with
the backoff between tries, and the newest version seen per key. A stream
that ends for any reason -- the PoP stops, the network fails, the node cut a
watcher that fell behind -- is opened again with the token, at the same PoP
or the next one: the node sends what the watcher has not had (at another PoP,
the newest state of each key its token does not cover). Events a watcher
may then get again (a state relayed to the other PoP ahead of its origin's
mark), or older than what it had (the other PoP lagging), carry their key's
version: the cursor drops any event not newer than the version it delivered
for that key, so an iterator never repeats a state or goes back.
"""

from __future__ import annotations

import base64
import json
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from edgekv_client._core import raise_for_error
from edgekv_client.errors import ApiError, Unavailable
from edgekv_replication.watch_tokens import LAST_EVENT_ID

DEFAULT_TRACKED_KEYS = 1_000_000
"""Keys whose newest version a watch remembers (to drop repeats after a resume)."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch.

    ``type`` is ``"change"`` (a key's new state), ``"ready"`` (the snapshot
    or catch-up is done: what follows is live) or ``"relist"`` (the PoP
    cannot resume this watch without a gap: drop what was built from it and
    list again; the watch goes on afresh, with a snapshot if it asked for one).
    """

    type: str
    key: str = ""
    op: str = ""
    """``put``, ``delete`` or ``expire``."""
    version: str = ""
    value: Any = None
    """Bytes for a key-value entry, the document (JSON) for a document; None when left out."""
    value_bytes: int | None = None
    """The value's size when the node left it out (over its inline limit or not asked for)."""
    metadata: Any = None
    expiration: int | None = None
    bookmark: str | None = None
    """Read-your-writes bookmark of this change at the PoP that sent it."""
    token: str | None = None
    """Resume token after this event (pass as ``after`` to resume elsewhere)."""


@dataclass(slots=True)
class SseParser:
    """Server-Sent Events from bytes as they arrive (the WHATWG rules, UTF-8).

    An event's id counts once its block is complete; a block with an id and
    no data (a heartbeat carrying a newer token) comes out as type ``"id"``.
    """

    _buffer: bytes = b""
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str, str | None]]:
        """Parse ``chunk``; return the blocks completed: ``(type, data, id or None)``."""
        self._buffer += chunk
        done: list[tuple[str, str, str | None]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return done
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8", "replace")
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data:
                    done.append((self._event or "message", "\n".join(self._data), self._id))
                elif self._id is not None:
                    done.append(("id", "", self._id))
                self._event, self._data, self._id = "", [], None
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            elif name == "id" and "\0" not in value:
                self._id = value


def watch_path(
    kind: str,
    space: str,
    prefix: str,
    keys: Sequence[str] | None,
    include_values: bool,
    snapshot: bool,
) -> str:
    """The path and query of a watch (``kind``: ``kv`` or ``docs``)."""
    query: list[tuple[str, str]] = []
    if prefix:
        query.append(("prefix", prefix))
    for key in keys or ():
        query.append(("keys", key))
    if not include_values:
        query.append(("include_values", "false"))
    if snapshot:
        query.append(("snapshot", "true"))
    path = f"/v1/{kind}/{quote(space, safe='')}/_watch"
    return path + ("?" + urlencode(query) if query else "")


class WatchCursor:
    """Where a watch has got, the PoPs to use, and the versions delivered per key."""

    def __init__(
        self,
        kind: str,
        urls: Sequence[str],
        after: str | None,
        snapshot: bool,
        max_backoff: float,
        versions: OrderedDict[str, str] | None = None,
        tracked_keys: int = DEFAULT_TRACKED_KEYS,
    ) -> None:
        """Start at ``urls[0]`` (then the others in turn), from token ``after`` if given.

        ``versions``: the newest version delivered per key, shared with an
        earlier watch this one continues (so a restarted watch does not yield
        what that one did).
        """
        self.kind = kind
        self.urls = list(urls)
        self.token = after
        self.snapshot = snapshot
        self._max_backoff = max_backoff
        self._tracked = tracked_keys
        self._versions: OrderedDict[str, str] = OrderedDict() if versions is None else versions
        self._at = 0
        self._failures = 0

    @property
    def url(self) -> str:
        """The PoP to open the next stream at."""
        return self.urls[self._at]

    def headers(self, token: str | None) -> dict[str, str]:
        """Request headers of the next stream (the resume token, if any)."""
        headers = {"Accept": "text/event-stream", "User-Agent": "edgekv-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.token:
            headers[LAST_EVENT_ID] = self.token
        return headers

    def wants_snapshot(self) -> bool:
        """A snapshot only on a fresh start (a resumed stream sends what was missed)."""
        return self.snapshot and self.token is None

    def failed(self) -> float:
        """A stream could not open or broke: move to the next PoP; seconds to wait first."""
        self._failures += 1
        self._at = (self._at + 1) % len(self.urls)
        ceiling = min(self._max_backoff, 0.05 * 2 ** min(self._failures, 16))
        return random.uniform(ceiling / 2, ceiling)

    def opened(self) -> None:
        """A stream reached its live part: backoff starts again from short."""
        self._failures = 0

    def take(self, events: Iterable[tuple[str, str, str | None]]) -> Iterator[WatchEvent]:
        """The events to deliver from parsed SSE, keeping the token and the versions.

        Lazily: an event counts as delivered (its version remembered, the token
        moved past it) only once the caller takes it. A caller that stops
        midway -- a ``break`` out of the watch, to continue with ``versions``
        in another -- gets the rest again there rather than losing them as
        already seen.
        """
        for kind, data, last_id in events:
            item = json.loads(data) if kind == "change" else None
            if last_id is not None:
                self.token = last_id
            if item is not None:
                event = self._change(item, last_id)
                if event is not None:
                    yield event
            elif kind == "ready":
                self.opened()
                yield WatchEvent("ready", token=last_id, bookmark=_bookmark(data))
            elif kind == "relist":
                self.token = None
                self._versions.clear()
                yield WatchEvent("relist")
            # "id": a heartbeat with a newer token, taken above

    def _change(self, item: dict[str, Any], token: str | None) -> WatchEvent | None:
        key, version = str(item["key"]), str(item["version"])
        # Versions are fixed-width hex of (hlc, node): their text order is their order.
        seen = self._versions.get(key)
        if seen is not None and version <= seen:
            return None
        self._versions[key] = version
        self._versions.move_to_end(key)
        if len(self._versions) > self._tracked:
            self._versions.popitem(last=False)
        value = item.get("value")
        if value is not None and self.kind == "kv":
            value = base64.b64decode(value)
        return WatchEvent(
            "change",
            key=key,
            op=str(item["op"]),
            version=version,
            value=value,
            value_bytes=item.get("value_bytes"),
            metadata=item.get("metadata"),
            expiration=item.get("expiration"),
            bookmark=item.get("bookmark"),
            token=token,
        )


def _bookmark(data: str) -> str | None:
    try:
        found = json.loads(data).get("bookmark")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def retry_or_raise(status: int, body: bytes) -> None:
    """A watch refused: retry elsewhere when the PoP is saturated or stopping, else raise."""
    try:
        raise_for_error(status, body)
    except ApiError as error:
        if status == 429 or isinstance(error, Unavailable):
            raise Unavailable(error.code, error.message, status) from None
        raise
