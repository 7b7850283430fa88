"""Keyset connections (Relay style) with opaque, validated cursors.

A cursor is the base64url text of a small JSON array ``[kind, key...]``: the connection it
belongs to and the keyset position of a row. Clients treat it as opaque. A page is read
with ``LIMIT first + 1``: the extra row only tells whether there is a next page.

``first`` is at most :data:`MAX_FIRST` (default :data:`DEFAULT_FIRST`); a larger or
negative ``first`` or a malformed cursor is a top-level ``INVALID_ARGUMENT`` error
(queries have no ``userErrors``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.relay import PageInfo

from exchange.api.errors import InvalidArgument
from exchange.api.fields import field

DEFAULT_FIRST = 20
MAX_FIRST = 100
MAX_CURSOR_LENGTH = 512

T = TypeVar("T")
R = TypeVar("R")


@strawberry.type(description="An item of a connection with its cursor.")
class Edge(Generic[T]):
    cursor: str = strawberry.field(description="Pass as `after` to continue after this item.")
    node: T


@strawberry.type(description="A page of a list: edges (or just nodes) and where to go next.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @field(description="The items of this page, without cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def check_first(first: int) -> int:
    """The page size asked for, checked against the cap."""
    if not 0 <= first <= MAX_FIRST:
        raise InvalidArgument(f"`first` must be between 0 and {MAX_FIRST}.", argument="first")
    return first


def encode_cursor(kind: str, *key: int | str) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None, kind: str, shape: Sequence[type]) -> tuple[Any, ...] | None:
    """The keyset position in ``cursor`` (``None`` for no cursor).

    ``shape`` gives the type of each key part (``int`` or ``str``); a cursor of another
    connection or of the wrong shape is refused like a malformed one.
    """
    if cursor is None:
        return None
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad_cursor() from None
    if (
        not isinstance(value, list)
        or len(value) != len(shape) + 1
        or value[0] != kind
        or not all(type(part) is expected for part, expected in zip(value[1:], shape, strict=True))
    ):
        raise _bad_cursor()
    return tuple(value[1:])


def _bad_cursor() -> InvalidArgument:
    return InvalidArgument("`after` is not a cursor of this list.", argument="after")


def build_connection(
    rows: Sequence[R],
    first: int,
    *,
    node: Callable[[R], T],
    cursor: Callable[[R], str],
    has_previous: bool = False,
) -> Connection[T]:
    """A page from rows fetched with ``LIMIT first + 1`` (in page order)."""
    page = rows[:first]
    edges = [Edge(cursor=cursor(row), node=node(row)) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
