"""The ASGI GraphQL endpoint mounted at ``/graphql``.

Every HTTP request is authenticated before anything else: no ``Authorization`` header acts
as nobody (only ``hubVersion`` and ``__typename`` answer); an invalid credential is an HTTP
401 with one ``UNAUTHENTICATED`` error, before the query is even parsed. Queries via GET,
batching, multipart uploads and WebSockets are off; GraphiQL is served in development only.
"""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from exchange.api.auth import AuthError, authenticate, unauthenticated_response
from exchange.api.context import Context
from exchange.api.errors import public_error
from exchange.api.limits import CostBudget
from exchange.api.loaders import Loaders
from exchange.api.schema import build_schema
from exchange.config import Settings
from exchange.keys import Secrets, load_or_create_secrets


class _Unauthenticated(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExchangeGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with the hub's authentication, context and limits."""

    def __init__(self, settings: Settings, state: State | None) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if not settings.production else None,
            allow_queries_via_get=False,
            multipart_uploads_enabled=False,
            subscription_protocols=(),
        )
        self.settings = settings
        self.state = state
        self.budget = CostBudget(settings.cost_budget_per_minute)
        self._secrets: Secrets | None = None

    @property
    def secrets(self) -> Secrets:
        if self._secrets is None:
            self._secrets = load_or_create_secrets(self.settings.data_dir)
        return self._secrets

    @property
    def pool(self) -> Any:
        pool = getattr(self.state, "pool", None)
        if pool is None:
            raise HTTPException(503, "The hub is starting.")
        return pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await WebSocket(scope, receive=receive, send=send).close(code=1008)
            return
        request = Request(scope=scope, receive=receive)
        response: Response
        try:
            response = await self.run(request)
        except _Unauthenticated as exc:
            response = unauthenticated_response(exc.message)
        except HTTPException as exc:
            response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        await response(scope, receive, send)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        pool = self.pool
        secrets = self.secrets
        try:
            actor = await authenticate(
                request.headers.get("authorization"), pool, secrets, self.settings
            )
        except AuthError as exc:
            raise _Unauthenticated(exc.message) from None
        return Context(
            request=request if isinstance(request, Request) else None,
            response=response if isinstance(response, Response) else None,
            actor=actor,
            pool=pool,
            settings=self.settings,
            secrets=secrets,
            loaders=Loaders(pool),
            budget=self.budget,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # Parse errors raised by an extension skip the schema's error policy: apply it here.
            result.errors = [public_error(error) for error in result.errors]
        response = await super().process_result(request, result)
        extensions = dict(response.get("extensions") or {})
        extensions.setdefault("cost", {"requested": 0, "limit": self.settings.max_cost})
        response["extensions"] = extensions
        return response


def create_graphql_app(settings: Settings, state: State | None = None) -> GraphQL[Any, Any]:
    """The GraphQL ASGI app; ``state`` is the Starlette app state (``state.pool`` once started)."""
    return ExchangeGraphQL(settings, state)
