"""The clients' shared HTTP/1.1 framing (sans-IO) and the async client's connection pool."""

from __future__ import annotations

import asyncio

import pytest

from edgekv_client._aio_http import Pool
from edgekv_client._wire import AnswerReader, ProtocolError, request_bytes

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
)
LENGTH = b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "v"\r\n\r\nhello'


@pytest.mark.parametrize("answer", [CHUNKED, LENGTH])
def test_answers_arriving_a_byte_at_a_time(answer: bytes) -> None:
    reader = AnswerReader()
    results = []
    for i in range(len(answer)):
        reader.feed(answer[i : i + 1])
        result = reader.answer("GET")
        if result is not None:
            results.append((i, result))
    assert len(results) == 1
    index, result = results[0]
    assert index == len(answer) - 1, "complete only with its last byte"
    assert result.body in (b"abcde", b"hello")
    assert reader.idle


def test_two_answers_in_one_read_and_framing_by_close() -> None:
    reader = AnswerReader()
    reader.feed(LENGTH + b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nto the end")
    assert reader.answer("GET") is not None
    empty = reader.answer("DELETE")
    assert empty is not None
    assert (empty.status, empty.body) == (204, b"")
    assert reader.answer("GET") is None, "framed by the end of the connection"
    last = reader.answer("GET", eof=True)
    assert last is not None
    assert last.body == b"to the end"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SMTP ready\r\n\r\n", "not an HTTP"),
        (b"HTTP/1.1 2xx OK\r\n\r\n", "bad status"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", "CRLF"),
    ],
)
def test_garbage_is_a_protocol_error(answer: bytes, message: str) -> None:
    reader = AnswerReader()
    reader.feed(answer)
    with pytest.raises(ProtocolError, match=message):
        reader.answer("GET")


def test_a_cut_answer_and_a_huge_head_are_protocol_errors() -> None:
    reader = AnswerReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    assert reader.answer("GET") is None
    with pytest.raises(ProtocolError, match="closed"):
        reader.answer("GET", eof=True)
    reader = AnswerReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000)
    with pytest.raises(ProtocolError, match="too long"):
        reader.answer("GET")


def test_request_bytes() -> None:
    fixed = "Host: h:1\r\n"
    assert request_bytes("GET", "/a", fixed, {"X": "1"}, None) == (
        b"GET /a HTTP/1.1\r\nHost: h:1\r\nX: 1\r\n\r\n"
    )
    assert request_bytes("PUT", "/a", fixed, {}, b"") == (
        b"PUT /a HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
    )
    assert request_bytes("POST", "/a", fixed, {}, b"xy").endswith(b"Content-Length: 2\r\n\r\nxy")


async def _server(answer: bytes, opened: list[int]) -> asyncio.Server:
    """Answers every request head with ``answer`` after a yield; counts connections."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_the_pool_keeps_to_its_limit_and_reuses_connections() -> None:
    opened: list[int] = []
    server = await _server(LENGTH, opened)
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, limit=4)
    try:
        answers = await asyncio.gather(*(pool.request("GET", "/", {}, None) for _ in range(50)))
        assert {a.body for a in answers} == {b"hello"}
        assert len(opened) <= 4
        await pool.request("GET", "/", {}, None)
        assert len(opened) <= 4, "idle connections are reused"
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def test_a_cancelled_request_closes_its_connection() -> None:
    opened: list[int] = []
    server = await _server(b"", opened)  # never answers
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, limit=1)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.request("GET", "/", {}, None)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the one slot was given back
                await pool.request("GET", "/", {}, None)
        assert len(opened) == 2, "a connection with an answer pending is not reused"
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_the_server_closes_while_idle_is_not_reused() -> None:
    opened: list[int] = []
    answer = LENGTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    server = await _server(answer, opened)
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, limit=1)
    try:
        for _ in range(3):
            assert (await pool.request("GET", "/", {}, None)).body == b"hello"
        assert len(opened) == 3
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
