"""Limits on what one request may ask: depth, aliases, tokens, cost, and a budget per caller.

All of it runs in one schema extension, :class:`RequestLimits` (every extension hook costs
time on every request, so one extension does the work of strawberry's ``MaxTokensLimiter``,
``ParserCache``, ``AddValidationRules`` and ``ValidationCache`` plus the cost check):

- tokens are limited at parse time (``max_tokens``, comments included);
- parsed documents are cached by query text, validation results by (schema, query text,
  rules). The depth and alias rules are graphql-core validation rules built **once** per
  limit value (:func:`validation_rules`), so the rule tuple of every request is the same
  and the validation cache hits (a rule class built per request would make every lookup
  miss);
- cost needs the variables (``first: $n``), so it is not a validation rule (those are
  cached per document) but a check before execution. Weights follow Shopify's: an object
  1, a connection 2 + ``first`` (its items' selections count ``first`` times), a mutation
  field 10, scalars and ``pageInfo`` 0. A request above ``Settings.max_cost`` is refused
  with ``QUERY_TOO_COSTLY``; each request's cost is also taken from the caller's budget of
  ``Settings.cost_budget_per_minute`` (a token bucket per credential in this process), and
  an empty bucket refuses with ``RATE_LIMITED`` (HTTP 429 with ``Retry-After``). Every
  response reports ``extensions.cost``.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
    parse,
)
from graphql.validation import (
    ASTValidationRule,
    NoSchemaIntrospectionCustomRule,
    ValidationContext,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from exchange.api.errors import QueryTooCostly, QueryTooDeep, RateLimited, TooManyAliases
from exchange.api.pagination import DEFAULT_FIRST, MAX_FIRST

CACHE_SIZE = 512
OBJECT_COST = 1
CONNECTION_COST = 2
MUTATION_COST = 10
FREE_TYPES = frozenset({"PageInfo"})

Fragments = Mapping[str, FragmentDefinitionNode]


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


# -- depth and aliases -------------------------------------------------------------------------


def _depth(
    selection_set: SelectionSetNode | None, fragments: Fragments, seen: frozenset[str]
) -> int:
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            deepest = max(deepest, 1 + _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                deepest = max(deepest, _depth(fragment.selection_set, fragments, seen | {name}))
    return deepest


def _aliases(
    selection_set: SelectionSetNode | None, fragments: Fragments, seen: frozenset[str]
) -> int:
    if selection_set is None:
        return 0
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += (selection.alias is not None) + _aliases(
                selection.selection_set, fragments, seen
            )
        elif isinstance(selection, InlineFragmentNode):
            count += _aliases(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                count += _aliases(fragment.selection_set, fragments, seen | {name})
    return count


@functools.cache
def depth_rule(max_depth: int) -> type[ValidationRule]:
    """The validation rule refusing operations nested deeper than ``max_depth`` fields."""

    class MaxDepthRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            fragments = _fragments(document)
            for operation in _operations(document):
                depth = _depth(operation.selection_set, fragments, frozenset())
                if depth > max_depth:
                    context.report_error(
                        QueryTooDeep(
                            f"The query is {depth} levels deep; at most {max_depth} are allowed.",
                            depth=depth,
                            limit=max_depth,
                        )
                    )

    return MaxDepthRule


@functools.cache
def alias_rule(max_aliases: int) -> type[ValidationRule]:
    """The validation rule refusing documents with more than ``max_aliases`` aliases."""

    class MaxAliasesRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            fragments = _fragments(document)
            total = sum(
                _aliases(operation.selection_set, fragments, frozenset())
                for operation in _operations(document)
            )
            if total > max_aliases:
                context.report_error(
                    TooManyAliases(
                        f"The query has {total} aliases; at most {max_aliases} are allowed.",
                        aliases=total,
                        limit=max_aliases,
                    )
                )

    return MaxAliasesRule


@functools.cache
def validation_rules(
    max_depth: int, max_aliases: int, introspection: bool
) -> tuple[type[ValidationRule], ...]:
    """The extra rules, one tuple of classes per configuration (so validation caches hit)."""
    rules: tuple[type[ValidationRule], ...] = (depth_rule(max_depth), alias_rule(max_aliases))
    if not introspection:
        rules += (NoSchemaIntrospectionCustomRule,)
    return rules


# -- cost --------------------------------------------------------------------------------------


def _unwrap(type_: GraphQLOutputType) -> tuple[Any, bool]:
    is_list = False
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        if isinstance(type_, GraphQLList):
            is_list = True
        type_ = type_.of_type
    return type_, is_list


def _int_argument(field: FieldNode, name: str, variables: Mapping[str, Any]) -> int | None:
    for argument in field.arguments or ():
        if argument.name.value != name:
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            found = variables.get(value.name.value)
            return found if isinstance(found, int) and not isinstance(found, bool) else None
    return None


def _list_length(field: FieldNode, name: str, variables: Mapping[str, Any]) -> int | None:
    for argument in field.arguments or ():
        if argument.name.value != name:
            continue
        value = argument.value
        if isinstance(value, ListValueNode):
            return len(value.values)
        if isinstance(value, VariableNode):
            found = variables.get(value.name.value)
            return len(found) if isinstance(found, list) else 1
        return 1
    return None


@dataclass
class _Costing:
    schema: GraphQLSchema
    fragments: Fragments
    variables: Mapping[str, Any]

    def selection(
        self, parent: Any, selection_set: SelectionSetNode | None, seen: frozenset[str]
    ) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selection(target or parent, selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:
                    target = self.schema.get_type(fragment.type_condition.name.value)
                    total += self.selection(target or parent, fragment.selection_set, seen | {name})
        return total

    def field(self, parent: Any, node: FieldNode, seen: frozenset[str]) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(
            parent, (GraphQLObjectType, GraphQLInterfaceType)
        ):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0
        type_, is_list = _unwrap(definition.type)
        if not isinstance(type_, (GraphQLObjectType, GraphQLInterfaceType, GraphQLUnionType)):
            return 0
        if type_.name in FREE_TYPES:
            return 0
        if type_.name.endswith("Connection"):
            first = _int_argument(node, "first", self.variables)
            n = DEFAULT_FIRST if first is None else max(0, min(first, MAX_FIRST))
            return CONNECTION_COST + n + n * self.connection_items(type_, node.selection_set, seen)
        count = _list_length(node, "ids", self.variables) if is_list else None
        inner = OBJECT_COST + self.selection(type_, node.selection_set, seen)
        return inner * (count if count is not None else 1)

    def connection_items(
        self, connection: Any, selection_set: SelectionSetNode | None, seen: frozenset[str]
    ) -> int:
        """The cost of one item's selections (inside ``edges.node`` and ``nodes``)."""
        if selection_set is None or not isinstance(connection, GraphQLObjectType):
            return 0
        total = 0
        for selection in _flatten(selection_set, self.fragments, seen):
            name = selection.name.value
            definition = connection.fields.get(name)
            if definition is None:
                continue
            item_type, _ = _unwrap(definition.type)
            if name == "nodes":
                total += self.selection(item_type, selection.selection_set, seen)
            elif name == "edges":
                for edge_field in _flatten(selection.selection_set, self.fragments, seen):
                    if edge_field.name.value == "node":
                        node_type, _ = _unwrap(item_type.fields["node"].type)
                        total += self.selection(node_type, edge_field.selection_set, seen)
        return total


def _flatten(
    selection_set: SelectionSetNode | None, fragments: Fragments, seen: frozenset[str]
) -> Iterator[FieldNode]:
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _flatten(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                yield from _flatten(fragment.selection_set, fragments, seen | {name})


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """The requested cost of the operation that will run."""
    operations = _operations(document)
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if not operations:
        return 0
    operation = operations[0]
    costing = _Costing(schema, _fragments(document), variables or {})
    if operation.operation == OperationType.MUTATION:
        root = schema.mutation_type
        return sum(
            MUTATION_COST
            + costing.selection(
                _unwrap(root.fields[f.name.value].type)[0], f.selection_set, frozenset()
            )
            if root is not None and f.name.value in root.fields
            else 0
            for f in _flatten(operation.selection_set, costing.fragments, frozenset())
        )
    root = schema.query_type if operation.operation == OperationType.QUERY else None
    return costing.selection(root, operation.selection_set, frozenset())


class CostBudget:
    """Token buckets per credential: ``per_minute`` cost units, refilled continuously."""

    MAX_TRACKED = 100_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: int) -> tuple[bool, float, float]:
        """Charge ``cost``; returns (allowed, tokens left, seconds until it would be allowed)."""
        now = self.clock()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if cost <= tokens:
                tokens -= cost
                self._store(key, tokens, now)
                return True, tokens, 0.0
            self._store(key, tokens, now)
            wait = (min(cost, self.capacity) - tokens) / self.rate if self.rate > 0 else math.inf
            return False, tokens, wait

    def _store(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= self.MAX_TRACKED and key not in self._buckets:
            full = [
                k
                for k, (t, s) in self._buckets.items()
                if t + (now - s) * self.rate >= self.capacity
            ]
            for k in full:
                del self._buckets[k]
        self._buckets[key] = (tokens, now)


class LRU:
    """A small least-recently-used cache with hit and miss counters."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return _MISSING
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


_MISSING = object()
PARSED = LRU(CACHE_SIZE)
"""Parsed documents by ``(query text, max tokens)``."""
VALIDATED = LRU(CACHE_SIZE)
"""Validation errors by ``(schema, query text, rules)``: the document is a function of the text."""
COSTED = LRU(CACHE_SIZE)
"""Requested costs by ``(schema, query text, operation, what the cost read of the variables)``."""
COST_READS = LRU(CACHE_SIZE)
"""The variables an operation's cost reads, by ``(schema, query text, operation)``."""


class _Reads(Mapping[str, Any]):
    """The request's variables, noting the names the cost looks up."""

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.variables = variables
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.names.add(name)
        return self.variables[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.names.add(name)
        return self.variables.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)


def _shape(value: Any) -> Hashable:
    """All the cost can tell of a variable: an integer (``first``), a list's length (``ids``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ("int", value)
    if isinstance(value, list):
        return ("list", len(value))
    return ("other",)


def _cost_key(operation: Hashable, names: tuple[str, ...], values: Mapping[str, Any]) -> Hashable:
    return (operation, tuple(_shape(values.get(name)) for name in names))


def requested_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    query: str | None,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """:func:`operation_cost`, remembered per operation and the shapes of the variables it
    reads (``first`` and ``ids`` arguments): the cost walks the same selections whatever the
    values, so which variables it reads is a property of the operation. An earn's cost is
    then computed once, not once per idempotency key."""
    values = variables or {}
    if query is None:
        return operation_cost(schema, document, operation_name, values)
    operation = (id(schema), query, operation_name)
    names = COST_READS.get(operation)
    if names is _MISSING:
        reads = _Reads(values)
        cost = operation_cost(schema, document, operation_name, reads)
        names = tuple(sorted(reads.names))
        COST_READS.put(operation, names)
        COSTED.put(_cost_key(operation, names, values), cost)
        return cost
    key = _cost_key(operation, names, values)
    cost = COSTED.get(key)
    if cost is _MISSING:
        cost = operation_cost(schema, document, operation_name, values)
        COSTED.put(key, cost)
    return int(cost)


class RequestLimits(SchemaExtension):
    """Tokens, cached parsing and validation with the depth/alias rules, cost and budget.

    One extension rather than five (token limiter, parser cache, validation rules,
    validation cache, cost): every extension hook costs time on every request.
    """

    def __init__(
        self, *, max_tokens: int, rules: tuple[type[ASTValidationRule], ...], max_cost: int
    ) -> None:
        self.max_tokens = max_tokens
        self.rules = rules
        self.max_cost = max_cost
        self.report: dict[str, Any] = {"requested": 0, "limit": max_cost}

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.parse_options["max_tokens"] = self.max_tokens
        ctx.validation_rules = ctx.validation_rules + self.rules
        yield

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is None and ctx.query:
            key = (ctx.query, self.max_tokens)
            document = PARSED.get(key)
            if document is _MISSING:
                document = parse(ctx.query, max_tokens=self.max_tokens)
                PARSED.put(key, document)
            ctx.graphql_document = document
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        assert ctx.graphql_document is not None
        key = (id(ctx.schema), ctx.query, ctx.validation_rules)
        errors = VALIDATED.get(key)
        if errors is _MISSING:
            errors = validate_document(
                ctx.schema._schema, ctx.graphql_document, ctx.validation_rules
            )
            VALIDATED.put(key, errors)
        ctx.pre_execution_errors = list(errors)
        yield

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        assert ctx.graphql_document is not None
        cost = requested_cost(
            ctx.schema._schema, ctx.graphql_document, ctx.query, ctx.operation_name, ctx.variables
        )
        self.report["requested"] = cost
        if cost > self.max_cost:
            raise QueryTooCostly(
                f"The query costs {cost}; at most {self.max_cost} is allowed.",
                cost={"requested": cost, "limit": self.max_cost},
            )
        context = ctx.context
        budget: CostBudget | None = getattr(context, "budget", None)
        actor = getattr(context, "actor", None)
        if budget is not None and actor is not None:
            allowed, left, wait = budget.take(actor.initiator, cost)
            self.report["budget"] = {"remaining": int(left), "perMinute": int(budget.capacity)}
            if not allowed:
                retry = max(1, math.ceil(wait))
                response = getattr(context, "response", None)
                if response is not None:
                    response.status_code = 429
                    response.headers["Retry-After"] = str(retry)
                raise RateLimited(
                    f"The cost budget of this credential is spent; retry in {retry} s.",
                    retryAfterSeconds=retry,
                )
        yield

    def get_results(self) -> dict[str, Any]:
        return {"cost": dict(self.report)}


def limit_extensions(
    *, max_depth: int, max_aliases: int, max_tokens: int, max_cost: int, introspection: bool
) -> list[Callable[[], SchemaExtension]]:
    """The schema's limit extension, as a factory (a fresh instance per request)."""
    rules: tuple[type[ASTValidationRule], ...] = validation_rules(
        max_depth, max_aliases, introspection
    )
    return [lambda: RequestLimits(max_tokens=max_tokens, rules=rules, max_cost=max_cost)]


__all__ = [
    "LRU",
    "CostBudget",
    "RequestLimits",
    "alias_rule",
    "depth_rule",
    "limit_extensions",
    "operation_cost",
    "requested_cost",
    "validation_rules",
]
