"""The ASGI GraphQL endpoint mounted at ``/graphql``."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import State
from strawberry.asgi import GraphQL

from exchange.api.schema import schema
from exchange.config import Settings


def create_graphql_app(settings: Settings, state: State | None = None) -> GraphQL[Any, Any]:
    """The GraphQL ASGI app; ``state`` is the Starlette app state (``state.pool`` once started)."""
    return GraphQL(
        schema,
        graphql_ide="graphiql" if settings.mode == "development" else None,
        allow_queries_via_get=False,
    )
