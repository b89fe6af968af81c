"""What a watch stream writes: SSE frames, the position their ids name, and where they go.

A change frame is ``id: <token>\\nevent: change\\ndata: <json>\\n\\n``; the
token is the node's head, the seq and the watcher's vector
(:mod:`edgekv_replication.watch_tokens`). Only the seq differs from one event
of a watcher to the next, so a :class:`Position` keeps the rest encoded, and
watchers whose vector is the hub's share one encoding (:class:`VectorText`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edgekv_replication.watch_tokens import merged, vector_text


class Sink(Protocol):
    """A stream's connection: frames are handed to it whole, without waiting."""

    def send(self, data: bytes) -> bool:
        """Hand ``data`` to the network now; False (nothing sent) when the connection is gone."""
        ...

    def closed(self) -> bool:
        """Whether the connection has gone (the client closed it, or it broke)."""
        ...

    def pending(self) -> int:
        """Bytes handed over that the network has not taken yet."""
        ...

    async def drained(self) -> None:
        """Until the bytes pending are few again (a client reading takes them)."""
        ...

    def abort(self) -> None:
        """Drop the connection (a client that does not read)."""
        ...


@runtime_checkable
class Transferable(Sink, Protocol):
    """A connection another process may write to (the watch fan-out), and take back from it."""

    def hand_over(self) -> tuple[int, bool] | None:
        """A copy of the socket and whether the body is chunked, reading here paused;
        None when the connection cannot leave this process (TLS: its session is here)."""
        ...

    def take_back(self, unsent: bytes | None) -> None:
        """Write here again, first ``unsent`` (framed already); None: drop the connection."""
        ...


def frame(event: str, data: bytes, token: str | None) -> bytes:
    """One SSE event (with an ``id`` line when ``token`` is given)."""
    head = f"id: {token}\n" if token is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"


def _tail(text: str) -> bytes:
    return f".{text}\nevent: change\ndata: ".encode()


@dataclass(slots=True)
class VectorText:
    """A vector with its wire text, encoded once and shared by every position that holds it."""

    vector: dict[int, int]
    text: str = ""
    tail: bytes = b""
    """``.<vector>\\nevent: change\\ndata: ``: what follows the seq in a change frame."""

    def __post_init__(self) -> None:
        self.text = vector_text(self.vector)
        self.tail = _tail(self.text)


@dataclass(slots=True)
class Position:
    """Where a watcher has got: a seq here and its vector (with the vector's wire text)."""

    seq: int
    vector: dict[int, int]
    encoded: VectorText
    merged_from: VectorText | None = None
    """The hub vector last merged in: merged again only when the hub's changes."""

    @classmethod
    def of(cls, seq: int, vector: dict[int, int]) -> Position:
        """A position with a vector of its own."""
        return cls(seq, vector, VectorText(vector))

    @property
    def text(self) -> str:
        """The vector's wire text."""
        return self.encoded.text

    @property
    def tail(self) -> bytes:
        """What follows the seq in a change frame's id (the vector and the event line)."""
        return self.encoded.tail

    def reach(self, seq: int, hub: VectorText) -> None:
        """Everything up to ``seq`` sent, which the hub's vector ``hub`` holds for.

        A watcher that started here (or caught up with the hub's vector) holds
        exactly the hub's vector: it takes the hub's encoding rather than one
        of its own, so a change of the vector is encoded once per node.
        """
        self.seq = seq
        if hub is self.merged_from:
            return
        self.merged_from = hub
        vector = merged(self.vector, hub.vector)
        self.vector = vector
        self.encoded = hub if vector == hub.vector else VectorText(vector)
