"""The per-request GraphQL context and the role checks resolvers start with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import strawberry
from starlette.requests import Request
from starlette.responses import Response

from exchange.api.errors import Forbidden, Unauthenticated
from exchange.api.limits import CostBudget
from exchange.api.loaders import Loaders
from exchange.config import Settings
from exchange.keys import Secrets
from exchange.services.actors import Actor
from exchange.services.tx import Pool


@dataclass
class Context:
    """What every resolver gets as ``info.context``.

    ``actor`` is ``None`` for a request without credentials (only ``hubVersion`` answers).
    ``loaders`` are fresh per request, so their caches never outlive it.
    """

    request: Request | None
    response: Response | None
    actor: Actor | None
    pool: Pool
    settings: Settings
    secrets: Secrets | None
    loaders: Loaders
    budget: CostBudget | None = None
    """The process's cost budgets per credential (``None``: not limited)."""


Info: TypeAlias = strawberry.Info[Context, None]


def require_actor(info: Info, *roles: str) -> Actor:
    """The caller, who must be authenticated and (when ``roles`` are given) have one of them.

    Raises a top-level ``UNAUTHENTICATED`` or ``FORBIDDEN`` error otherwise.
    """
    actor = info.context.actor
    if actor is None:
        raise Unauthenticated()
    if roles and actor.role not in roles:
        raise Forbidden(f"{actor.role} credentials cannot use this field.")
    return actor
