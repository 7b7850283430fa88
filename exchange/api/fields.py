"""A typed ``@field(...)`` decorator for resolver methods.

``strawberry.field(description=...)`` is typed as returning ``Any``, which ``mypy --strict``
reports as an untyped decorator. This wrapper has the same effect at run time and keeps the
decorated resolver's signature for the type checker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission

F = TypeVar("F", bound=Callable[..., Any])


def field(
    *,
    name: str | None = None,
    description: str | None = None,
    deprecation_reason: str | None = None,
    permission_classes: Sequence[type[BasePermission]] | None = None,
    extensions: Sequence[FieldExtension] | None = None,
) -> Callable[[F], F]:
    """``strawberry.field`` as a typed decorator."""
    return cast(
        "Callable[[F], F]",
        strawberry.field(
            name=name,
            description=description,
            deprecation_reason=deprecation_reason,
            permission_classes=list(permission_classes or ()),
            extensions=list(extensions or ()),
        ),
    )
