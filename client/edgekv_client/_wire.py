"""HTTP/1.1 as the clients speak it, without I/O: request heads out, answers in.

Both clients' connections (the blocking socket one in :mod:`edgekv_client._http`,
the asyncio one in :mod:`edgekv_client._aio_http`) feed received bytes to an
:class:`AnswerReader` and send what :func:`request_bytes` builds, so the two
cannot frame an answer differently. It speaks just what the node speaks: one
request at a time on a kept-alive connection, answers framed by
``Content-Length``, chunked, or the end of the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

MAX_HEAD = 64 * 1024
_NO_BODY = frozenset({204, 304})


class ProtocolError(OSError):
    """The node's answer is not HTTP/1.1 this client understands."""


class Answer(NamedTuple):
    """Status, headers (lower-case names) and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes


def authority(host: str, port: int) -> str:
    """The ``Host`` header value for ``host:port`` (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fixed_head(host: str, port: int, headers: Mapping[str, str]) -> str:
    """The header lines every request of a client carries (``Host`` first), each ending CRLF.

    Built once per client: a GET then costs one string concatenation for its head.
    """
    lines = [f"Host: {authority(host, port)}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    return "".join(lines)


def request_bytes(
    method: str, target: str, fixed: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """One request: ``fixed`` (see :func:`fixed_head`), then ``headers``, then the body."""
    head = f"{method} {target} HTTP/1.1\r\n{fixed}"
    if headers:
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if body is not None or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body) if body else 0}\r\n"
    data = (head + "\r\n").encode("latin-1")
    return data + body if body else data


class AnswerReader:
    """The answers of one connection, parsed from its bytes as they arrive.

    :meth:`feed` takes received bytes; :meth:`answer` returns the answer to the
    request in flight once it is complete (None while more is needed).
    """

    def __init__(self) -> None:
        """Start with nothing received."""
        self._buffer = bytearray()
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._framing = ""  # "length", "chunked", "close" or "none", once the head is in
        self._length = 0
        self._chunks: list[bytes] = []
        self._trailers = False

    def feed(self, data: bytes) -> None:
        """Take bytes received from the node."""
        self._buffer += data

    @property
    def idle(self) -> bool:
        """Whether nothing of a next answer has arrived (bytes between answers mean trouble)."""
        return not self._buffer and self._headers is None

    def answer(self, method: str, eof: bool = False) -> Answer | None:
        """The complete answer to a ``method`` request, or None until more bytes arrive.

        ``eof``: the node closed the connection, so no more will; raises
        ProtocolError when the answer is cut short.
        """
        headers = self._headers
        if headers is None:
            headers = self._read_head(method, eof)
            if headers is None:
                return None
        framing, buffer = self._framing, self._buffer
        if framing == "length":
            size = self._length
            if len(buffer) < size:
                return self._short(eof)
            body = bytes(buffer[:size])
            del buffer[:size]
        elif framing == "none":
            body = b""
        elif framing == "chunked":
            chunked = self._read_chunks()
            if chunked is None:
                return self._short(eof)
            body = chunked
        elif not eof:  # framed by the end of the connection
            return None
        else:
            body = bytes(buffer)
            buffer.clear()
        self._headers = None
        return Answer(self._status, headers, body)

    @staticmethod
    def _short(eof: bool) -> None:
        if eof:
            raise ProtocolError("the node closed the connection mid-answer")
        return None

    def _read_head(self, method: str, eof: bool) -> dict[str, str] | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise ProtocolError("answer head too long")
            if eof:
                raise ProtocolError("the node closed the connection")
            return None
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        first = lines[0]
        if not first.startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x answer: {first[:60]!r}")
        try:
            status = int(first[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line: {first[:60]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line: {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in _NO_BODY or status < 200:
            self._framing = "none"
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            self._framing = "chunked"
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            if self._length < 0:
                raise ProtocolError("bad Content-Length")
            self._framing = "length"
        else:
            self._framing = "close"
        self._status = status
        self._headers = headers
        return headers

    def _read_chunks(self) -> bytes | None:
        """Take the complete chunks received so far; the body once the last is in."""
        buffer = self._buffer
        while True:
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                while (end := buffer.find(b"\r\n")) > 0:
                    del buffer[: end + 2]
                if end < 0:
                    return None
                del buffer[:2]
                self._trailers = False
                body = b"".join(self._chunks)
                self._chunks = []
                return body
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ProtocolError("chunk size line too long")
                return None
            try:
                size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size < 0:
                raise ProtocolError("bad chunk size")
            if size == 0:
                del buffer[: end + 2]
                self._trailers = True
                continue
            start = end + 2
            if len(buffer) < start + size + 2:
                return None
            if buffer[start + size : start + size + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._chunks.append(bytes(buffer[start : start + size]))
            del buffer[: start + size + 2]
