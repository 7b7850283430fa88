"""uvicorn's httptools protocol, sending a response's head with the first write of its body.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and its body when the app sends ``http.response.body``: two
``send`` system calls and two TCP segments (the socket has ``TCP_NODELAY``) for each
response, each waking the client. Here the head is held and sent with the next write, in
one. It is sent by itself when the response completes with nothing more to write (a
``HEAD`` request) or the connection closes; an interim response (``100 Continue``) is
never held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1.1 "
_INTERIM = b"HTTP/1.1 1"
_END_OF_HEAD = b"\r\n\r\n"


class HeadWithBody:
    """A transport that holds a response's head until the next write (or :meth:`flush`)."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + bytes(data))
        elif (
            isinstance(data, bytes)
            and data.startswith(_STATUS_LINE)
            and not data.startswith(_INTERIM)
            and data.endswith(_END_OF_HEAD)
        ):
            self._head = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` writing through :class:`HeadWithBody`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
