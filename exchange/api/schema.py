"""The GraphQL schema: root types merged from the API's modules, limits and error policy.

``Query`` merges :class:`exchange.api.queries.Query` with the ``QUERY_TYPES`` that
``exchange.api.mutations`` may export; ``Mutation`` merges its ``MUTATION_TYPES`` (the schema
has no mutation root while there are none); its ``NODE_TYPES`` join the schema's types.
:data:`schema` is the production schema (the one ``exchange export-schema`` prints);
:func:`build_schema` makes the one a given configuration serves (introspection only in
development).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from exchange.api import coercion
from exchange.api.errors import public_error, should_mask_error
from exchange.api.execution import LeanExecution
from exchange.api.hooks import LeanExtensionsRunner
from exchange.api.inputs import plan_inputs
from exchange.api.limits import limit_extensions
from exchange.api.nodes import Currency, Entry, Lot, Member, Merchant, Quote
from exchange.api.queries import Query as CoreQuery
from exchange.api.scalars import SCALAR_MAP
from exchange.config import Settings

logger = logging.getLogger("exchange.api")

NODE_TYPES: tuple[type, ...] = (Merchant, Currency, Member, Entry, Quote, Lot)
MAX_RESULTS = 100


def _contributed(name: str) -> tuple[type, ...]:
    try:
        from exchange.api import mutations
    except ImportError as exc:
        if exc.name != "exchange.api.mutations":
            raise
        return ()
    return tuple(getattr(mutations, name, ()))


def _merge(name: str, types: tuple[type, ...]) -> type:
    counts = Counter(
        f.name
        for t in types
        for f in t.__strawberry_definition__.fields  # type: ignore[attr-defined]
    )
    dupes = sorted(field for field, n in counts.items() if n > 1)
    if dupes:
        raise ValueError(f"{name} fields defined twice: {', '.join(dupes)}")
    if len(types) == 1:
        return types[0]
    return merge_types(name, types)


def root_types() -> tuple[type, type | None]:
    query = _merge("Query", (CoreQuery, *_contributed("QUERY_TYPES")))
    mutation_types = _contributed("MUTATION_TYPES")
    mutation = _merge("Mutation", mutation_types) if mutation_types else None
    return query, mutation


class ErrorPolicy(SchemaExtension):
    """Masks internal errors (``"Internal error."``, code ``INTERNAL``); codes every error.

    The predicate is :func:`~exchange.api.errors.should_mask_error`: our ``PublicError``s
    and GraphQL's own (parse, validation, input) errors are shown, anything else is masked.
    """

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [public_error(error) for error in errors]  # type: ignore[union-attr]


class ExchangeSchema(strawberry.Schema):
    """Logs only the errors that are masked (the others are the client's business); runs the
    extensions' hooks with :class:`~exchange.api.hooks.LeanExtensionsRunner`."""

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return LeanExtensionsRunner(execution_context=execution_context, extensions=extensions)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if should_mask_error(error):
                logger.error(
                    "internal error at %s: %s",
                    error.path,
                    error.message,
                    exc_info=error.original_error,
                )


def config(production: bool) -> StrawberryConfig:
    return StrawberryConfig(
        disable_field_suggestions=production,
        relay_max_results=MAX_RESULTS,
        scalar_map=SCALAR_MAP,
    )


@functools.cache
def _build(
    production: bool, max_depth: int, max_aliases: int, max_tokens: int, max_cost: int
) -> ExchangeSchema:
    query, mutation = root_types()
    extensions: list[Any] = [
        ErrorPolicy,
        *limit_extensions(
            max_depth=max_depth,
            max_aliases=max_aliases,
            max_tokens=max_tokens,
            max_cost=max_cost,
            introspection=not production,
        ),
    ]
    built = ExchangeSchema(
        query=query,
        mutation=mutation,
        types=(*NODE_TYPES, *_contributed("NODE_TYPES")),
        extensions=extensions,
        config=config(production),
        execution_context_class=LeanExecution,
    )
    plan_inputs(built)
    coercion.install()
    return built


def build_schema(settings: Settings) -> ExchangeSchema:
    """The schema for ``settings`` (one per distinct configuration, built once)."""
    return _build(
        settings.production,
        settings.max_depth,
        settings.max_aliases,
        settings.max_tokens,
        settings.max_cost,
    )


schema = build_schema(Settings())
