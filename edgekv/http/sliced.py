"""Large answers sent a slice at a time, so sending never copies the whole answer.

With a plain ``bytes`` body, aiohttp joins headers and body into one new
buffer and asyncio copies whatever the socket did not take at once: up to
two extra copies of a 25 MiB value. Written as 1 MiB memoryview slices, with
aiohttp waiting for the socket to drain between them, the extra memory is
about one slice, whatever the answer's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

SLICE_BYTES = 1024 * 1024
"""Answers larger than this are worth slicing (smaller ones go out as plain bytes)."""


class SlicedPayload(Payload):
    """A body made of byte pieces, each written in slices of at most :data:`SLICE_BYTES`.

    Pieces are released once written, so the answer's memory shrinks as it is sent.
    """

    def __init__(self, pieces: Sequence[bytes], content_type: str) -> None:
        """Send ``pieces`` in order, as one body of type ``content_type``."""
        super().__init__(list(pieces), content_type=content_type)
        self._size = sum(len(piece) for piece in pieces)
        self._autoclose = True

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The body as text (for aiohttp's debugging helpers; never on the serving path)."""
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """The body as one ``bytes`` object."""
        return b"".join(self._value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write every piece, slice by slice, waiting for the socket between slices."""
        pieces: list[Any] = self._value
        pieces.reverse()  # pop() from the end releases each piece once it is sent
        while pieces:
            view = memoryview(pieces.pop())
            for start in range(0, len(view), SLICE_BYTES):
                await writer.write(view[start : start + SLICE_BYTES])

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Write the whole body (its length is the declared Content-Length)."""
        await self.write(writer)
