"""The hub's HTTP protocol: each response's head goes out with its body, in one write.

A real uvicorn server with :class:`exchange.http_protocol.HttpProtocol` serves a small
ASGI app on a loopback port; a raw socket client reads what it sends. The real transport's
writes are counted per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from exchange.http_protocol import HttpProtocol

pytestmark = pytest.mark.anyio

WRITES: list[bytes] = []


class _Counted:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountedProtocol(HttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Counted(transport))  # type: ignore[arg-type]


SECOND_CHUNK = asyncio.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    headers = [(b"content-type", b"text/plain")]
    if path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.wait_for(SECOND_CHUNK.wait(), 5)
        await send({"type": "http.response.body", "body": b"second"})
    elif path == "/broken":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("broken after the head")
    else:
        headers.append((b"content-length", b"5"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CountedProtocol, log_level="critical"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        await task


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), 5)


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode()


async def test_a_response_is_one_write_and_keep_alive_goes_on() -> None:
    async with serving() as port, connected(port) as client:
        WRITES.clear()
        for _ in range(3):
            await client.send(_get("/"))
            head = await client.head()
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await client.read(5) == b"hello"
        assert len(WRITES) == 3
        assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"hello") for w in WRITES)


async def test_a_head_request_is_answered_at_once() -> None:
    async with serving() as port, connected(port) as client:
        await client.send(_get("/", method="HEAD"))
        head = await client.head()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 5\r\n" in head
        await client.send(_get("/"))  # the connection is still in step
        assert (await client.head()).startswith(b"HTTP/1.1 200 OK\r\n")
        assert await client.read(5) == b"hello"


async def test_continue_is_sent_before_the_body_is_read() -> None:
    async with serving() as port, connected(port) as client:
        await client.send(
            b"POST /echo HTTP/1.1\r\nHost: hub\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await client.head() == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"ping")
        assert (await client.head()).startswith(b"HTTP/1.1 200 OK\r\n")
        assert await client.read(4) == b"ping"


async def test_a_streamed_body_starts_with_its_first_part() -> None:
    SECOND_CHUNK.clear()
    async with serving() as port, connected(port) as client:
        await client.send(_get("/stream"))
        head = await client.head()
        assert b"transfer-encoding: chunked\r\n" in head
        assert await client.read(len(b"5\r\nfirst\r\n")) == b"5\r\nfirst\r\n"
        SECOND_CHUNK.set()  # the app sends the rest only once the first part has arrived
        assert await client.read(len(b"6\r\nsecond\r\n0\r\n\r\n")) == b"6\r\nsecond\r\n0\r\n\r\n"


async def test_a_head_held_when_the_app_fails_is_sent_before_closing() -> None:
    async with serving() as port, connected(port) as client:
        await client.send(_get("/broken"))
        assert (await client.head()).startswith(b"HTTP/1.1 200 OK\r\n")
        assert await asyncio.wait_for(client.reader.read(), 5) == b""


def test_serve_runs_uvicorn_with_the_hub_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange import cli
    from exchange.config import Settings

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    cli._run_uvicorn(Settings())
    assert seen["http"] == "exchange.http_protocol:HttpProtocol"
    config = uvicorn.Config(app, http=seen["http"])
    config.load()
    assert config.http_protocol_class is HttpProtocol
