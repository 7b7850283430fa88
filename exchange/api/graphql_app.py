"""The ASGI GraphQL endpoint mounted at ``/graphql``.

Every HTTP request is authenticated before anything else: no ``Authorization`` header acts
as nobody (only ``hubVersion`` and ``__typename`` answer); an invalid credential is an HTTP
401 with one ``UNAUTHENTICATED`` error, before the query is even parsed. Queries via GET,
batching, multipart uploads and WebSockets are off; GraphiQL is served in development only.
"""

from __future__ import annotations

import json
from typing import Any

from cross_web import HTTPException
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from exchange.api.auth import AuthError, authenticate, unauthenticated_response
from exchange.api.context import Context
from exchange.api.errors import public_error
from exchange.api.limits import CostBudget
from exchange.api.loaders import Loaders
from exchange.api.schema import build_schema
from exchange.config import Settings
from exchange.domain.canonical import compact
from exchange.keys import Secrets, load_or_create_secrets

_POST_OPERATIONS = OperationType.from_http("POST")
_ENCODE = compact()
"""The text ``json.dumps(data, separators=(",", ":"))`` gives (Strawberry's encoding of a
response), from an encoder built once instead of on every call."""


class _Unauthenticated(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExchangeGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with the hub's authentication, context and limits."""

    lean_posts = True
    """Answer plain JSON POSTs by :meth:`_post` (see there); off: Strawberry's view answers all."""

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
        response: Response | None
        try:
            if self.lean_posts and scope["method"] == "POST" and _json_content(scope):
                response = await self._post(request, send)
            else:
                response = await self.run(request)
        except _Unauthenticated as exc:
            response = unauthenticated_response(exc.message)
        except HTTPException as exc:
            response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        if response is not None:
            await response(scope, receive, send)

    async def _post(self, request: Request, send: Send) -> Response | None:
        """Strawberry's view, for a POST of ``application/json`` whose body is an object with a
        string ``query`` free of directives, ``variables`` and ``extensions`` objects or
        null, and a string or null ``operationName``: the same steps in the same order
        (the root value, the context with its authentication, the body, the execution,
        :meth:`process_result`) and the same response, sent by itself (``None`` returned).

        Strawberry's view does more per request to serve what the hub never uses here (GET,
        batches, multipart uploads, streamed subscriptions, the IDE) or to tell requests of
        other shapes apart. Any other body is left to it (which authenticates again and reads
        the same body); so is a document with a directive (``@defer`` and ``@stream`` answer
        in parts), before anything is executed.
        """
        root_value = await self.get_root_value(request)  # type: ignore[func-returns-value]
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        try:
            data = json.loads(await request.body())
        except json.JSONDecodeError:
            return await self.run(request)
        if not isinstance(data, dict):
            return await self.run(request)
        query = data.get("query")
        variables = data.get("variables")
        extensions = data.get("extensions")
        name = data.get("operationName")
        if (
            not isinstance(query, str)
            or "@" in query
            or not isinstance(variables, dict | None)
            or not isinstance(extensions, dict | None)
            or not isinstance(name, str | None)
        ):
            return await self.run(request)
        try:
            result = await self.schema.execute(
                query,
                root_value=root_value,
                variable_values=variables,
                context_value=context,
                operation_name=name,
                allowed_operation_types=_POST_OPERATIONS,
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError as e:
            raise HTTPException(400, e.as_http_error_reason()) from e
        except InvalidOperationTypeError as e:
            raise HTTPException(400, e.as_http_error_reason("POST")) from e
        except MissingQueryError as e:
            raise HTTPException(400, "No GraphQL query found in the request") from e
        if not isinstance(result, ExecutionResult):  # pragma: no cover - no directive reached
            raise TypeError(f"a single result was expected, not {type(result).__name__}")
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        if sub_response.background is not None:
            return self.create_response(response_data, sub_response)
        body = self.encode_json(response_data).encode()
        # Starlette's Response with these arguments sends the same two messages.
        headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
            *sub_response.headers.raw,
        ]
        status = sub_response.status_code or 200
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return None

    def encode_json(self, data: object) -> str:
        return _ENCODE(data)

    def parse_json(self, data: str | bytes) -> Any:
        """Strawberry's parsing, refusing JSON that is neither an object nor a list (which its
        view would otherwise take for a request and fail on: an internal error)."""
        value = super().parse_json(data)
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request must be a JSON object.")
        return value

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


def _json_content(scope: Scope) -> bool:
    """Whether the request's ``Content-Type`` is ``application/json``, with any parameters
    (spelled otherwise, even in other letter cases, it is left to Strawberry's view)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.partition(b";")[0].strip() == b"application/json")
    return False


def create_graphql_app(settings: Settings, state: State | None = None) -> GraphQL[Any, Any]:
    """The GraphQL ASGI app; ``state`` is the Starlette app state (``state.pool`` once started)."""
    return ExchangeGraphQL(settings, state)
