"""GraphQL execution with plain fields read directly.

Most fields the hub answers are plain attributes of a result object: an entry's ``points``,
a batch item's ``idempotencyKey``, an empty ``userErrors``. graphql-core completes each of
them the general way: a path, a resolve-info object, the resolver, then the value checked
against its type step by step. For a bulk call's thousand results that is most of the
response's cost.

:class:`LeanExecution` reads such a field itself when

- Strawberry marked its resolver as the plain attribute read (a field with no resolver, no
  extensions, no permission classes: Strawberry's ``_get_basic_result``), and the field
  takes no arguments and no middleware wraps resolvers (an extension's ``resolve`` hook);
  Strawberry's Relay node ``id`` counts as one when the node's class keeps Strawberry's
  ``resolve_id`` and ``resolve_typename``: the global id is made from the type's name and
  the id attribute of an object of exactly that class;
- and the value is plain too: ``None`` on a nullable field, a scalar or enum value its type
  accepts, a list (a Python ``list``) of plain values, or an object of the field's object
  type whose selected fields are all plain fields with plain values (a balance's
  ``currency { code }``). The object's type is checked as graphql-core checks it, when the
  check is Strawberry's own ``isinstance`` (which ignores the resolve-info); a type's own
  ``is_type_of`` may read the info, so such objects are left to graphql-core.

A list that graphql-core completes (a resolver's answer) is completed the same way when all
its items are plain values. Anything else -- an interface or a union, a value the scalar
refuses, ``None`` on a non-null field, an object of another type, a list with ``@stream``
-- takes graphql-core's own path for that field (or the whole list), which produces the
same errors with the same paths as before, executed in the order of the selection. The
response keeps that order too. (Plain fields are read before the object's resolvers run: a
resolver that changed its own source object would be seen differently; none here does.)

It also leaves no reference cycle behind: graphql-core's executor keeps two of its own bound
methods in ``async_helpers``, so every executor, and everything it held (the request, the
context, the plans, the variables), outlived its request as cyclic garbage that only the
collector could free: some 85 objects per earn, a young collection every eight requests
and the older generations' collections after them. :class:`LeanExecution` keeps the two
helpers through a weak reference instead, so an execution is freed as soon as its request
is done.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

from graphql import (
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    Undefined,
    is_leaf_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path
from strawberry import relay
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryObjectDefinition

PLAIN_READ: Final = "_get_basic_result"
"""The name of Strawberry's resolver for a field that reads an attribute and nothing else."""

_MISS: Final = object()
_NODE_ID: Final = relay.Node._id.__func__
_RESOLVE_ID: Final = relay.Node.resolve_id.__func__  # type: ignore[attr-defined]
_RESOLVE_TYPENAME: Final = relay.Node.resolve_typename.__func__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a plain field's value must be to be completed directly: exactly one of a leaf,
    an object of one object type, or a list of values of an item shape."""

    non_null: bool
    leaf: GraphQLLeafType | None = None
    obj: GraphQLObjectType | None = None
    item: _Shape | None = None


@functools.cache
def _shape(kind: GraphQLOutputType) -> _Shape | None:
    """The shape of values of ``kind`` (``None`` for an interface or a union: graphql-core
    resolves their runtime type). Types are schema objects, compared by identity."""
    non_null = isinstance(kind, GraphQLNonNull)
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    if is_leaf_type(kind):
        return _Shape(non_null, leaf=kind)
    if isinstance(kind, GraphQLObjectType):
        return _Shape(non_null, obj=kind)
    if isinstance(kind, GraphQLList):
        item = _shape(kind.of_type)
        return None if item is None else _Shape(non_null, item=item)
    return None


@dataclass(frozen=True, slots=True)
class _Plain:
    """A field that may be read directly."""

    name: str
    details: FieldDetailsList
    read: Callable[[Any, None], Any]
    shape: _Shape | None


@dataclass(frozen=True, slots=True)
class _Plan:
    order: tuple[str, ...]
    plain: tuple[_Plain, ...]
    rest: GroupedFieldSet
    """The fields graphql-core executes (the same field lists, so its own caches hold)."""


def _plain(
    parent_type: GraphQLObjectType, name: str, details: FieldDetailsList, field: Any
) -> _Plain | None:
    resolve = field.resolve
    if resolve is None or field.args or details[0].node.arguments:
        return None
    if getattr(resolve, "__name__", "") != PLAIN_READ:
        resolve = _node_id(parent_type, field)
        if resolve is None:
            return None
    return _Plain(name, details, resolve, _shape(field.type))


def _node_id(kind: GraphQLObjectType, field: Any) -> Callable[[Any, None], Any] | None:
    """A plain read of a Relay node's ``id`` (Strawberry's ``Node._id``), when ``kind``'s
    class keeps Strawberry's ``resolve_id`` and ``resolve_typename``: the global id of the
    type's name and the id attribute of an object of exactly that class (anything else
    raises, and graphql-core answers the field)."""
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    wrapped = getattr(getattr(definition, "base_resolver", None), "wrapped_func", None)
    if (
        getattr(wrapped, "__func__", None) is not _NODE_ID
        or definition.extensions
        or definition.permission_classes
    ):
        return None
    return _node_id_of(kind)


@functools.cache
def _node_id_of(kind: GraphQLObjectType) -> Callable[[Any, None], Any] | None:
    definition = kind.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    origin = getattr(definition, "origin", None)
    if not (
        isinstance(origin, type)
        and issubclass(origin, relay.Node)
        and origin._id.__func__ is _NODE_ID
        and origin.resolve_id.__func__ is _RESOLVE_ID  # type: ignore[attr-defined]
        and origin.resolve_typename.__func__ is _RESOLVE_TYPENAME  # type: ignore[attr-defined]
    ):
        return None
    attribute = origin.resolve_id_attr()
    name = kind.name

    def read(source: Any, _info: None) -> relay.GlobalID:
        if type(source) is not origin:
            raise TypeError("not an object of the node's own class")
        node_id = getattr(source, attribute)
        if node_id is None:
            raise ValueError("a node without an id")
        return relay.GlobalID(name, str(node_id))

    return read


@functools.cache
def _checks_without_info(kind: GraphQLObjectType) -> bool:
    """Whether ``kind``'s ``is_type_of`` may be called without a resolve-info: it has none,
    or it is the one Strawberry makes for a type that implements an interface (an
    ``isinstance`` check that ignores the info). A type's own ``is_type_of`` may read the
    info, so its objects are left to graphql-core."""
    if kind.is_type_of is None:
        return True
    definition = kind.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    return isinstance(definition, StrawberryObjectDefinition) and definition.is_type_of is None


def _weak_helpers(executor: Executor[Any]) -> GraphQLResolveInfoHelpers:
    """``executor``'s resolve-info helpers, holding the executor weakly (no cycle)."""
    ref = weakref.ref(executor)

    def alive() -> Executor[Any]:
        found = ref()
        if found is None:
            raise RuntimeError("the execution has ended")
        return found

    def gather(*args: Any, **kwargs: Any) -> Any:
        return alive().gather_async_work(*args, **kwargs)

    def track(*args: Any, **kwargs: Any) -> Any:
        return alive().track_async_work(*args, **kwargs)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)


class LeanExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with plain fields read without graphql-core's ceremony."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = _weak_helpers(self)
        self._plans: dict[int, tuple[GroupedFieldSet, _Plan]] = {}
        self.plain_reads = 0
        """Fields answered directly in this execution (for tests and profiles)."""
        middleware = self.middleware_manager
        self._lean = middleware is None or not middleware.middlewares
        """No middleware wraps resolvers (Strawberry always passes a manager, often empty)."""

    def _plan(self, parent_type: GraphQLObjectType, fields: GroupedFieldSet) -> _Plan:
        # Like graphql-core's own memo, keyed by identity with the key object kept alive,
        # so that an id is never reused within this execution.
        cached = self._plans.get(id(fields))
        if cached is not None and cached[0] is fields:
            return cached[1]
        plain: list[_Plain] = []
        rest: GroupedFieldSet = {}
        for name, details in fields.items():
            field = self.schema.get_field(parent_type, details[0].node.name.value)
            found = _plain(parent_type, name, details, field) if field is not None else None
            if found is None:
                rest[name] = details
            else:
                plain.append(found)
        plan = _Plan(tuple(fields), tuple(plain), rest)
        self._plans[id(fields)] = (fields, plan)
        return plan

    def _read(self, f: _Plain, source: Any) -> Any:
        """The completed value of a plain field, or ``_MISS`` for graphql-core to complete."""
        if f.shape is None:
            return _MISS
        try:
            value = f.read(source, None)
        except Exception:
            return _MISS
        return self._complete(f.shape, f.details, value)

    def _complete(self, shape: _Shape, details: FieldDetailsList, value: Any) -> Any:
        """``value`` completed as graphql-core would complete it, or ``_MISS`` where that
        could raise an error (graphql-core then completes it and raises it)."""
        if value is None:
            return _MISS if shape.non_null else None
        if shape.leaf is not None:
            try:
                coerced = shape.leaf.coerce_output_value(value)
            except Exception:
                return _MISS
            return _MISS if coerced is None or coerced is Undefined else coerced
        if shape.obj is not None:
            return self._plain_object(shape.obj, details, value)
        item = shape.item
        if item is None or type(value) is not list:
            return _MISS
        if not value:
            return []
        if details[0].node.directives:
            return _MISS  # ``@stream``, say: graphql-core's to judge
        return self._complete_items(item, details, value)

    def _complete_items(self, item: _Shape, details: FieldDetailsList, values: list[Any]) -> Any:
        """Every value completed directly, or ``_MISS`` (with no plain read counted) when
        any of them needs graphql-core."""
        before = self.plain_reads
        out = []
        for x in values:
            done = self._complete(item, details, x)
            if done is _MISS:
                self.plain_reads = before
                return _MISS
            out.append(done)
        return out

    def _plain_object(self, kind: GraphQLObjectType, details: FieldDetailsList, value: Any) -> Any:
        """An object whose selected fields are all plain, completed directly (as graphql-core
        would: its type checked, its fields in the selection's order), or ``_MISS`` (with no
        plain read counted)."""
        check = kind.is_type_of
        if check is not None and not (_checks_without_info(kind) and _is_of(check, value)):
            return _MISS
        grouped, deferred, _ = self.collect_subfields(kind, details)
        if deferred:
            return _MISS
        plan = self._plan(kind, grouped)
        if plan.rest:
            return _MISS
        before = self.plain_reads
        done: dict[str, Any] = {}
        for f in plan.plain:
            read = self._read(f, value)
            if read is _MISS:
                self.plain_reads = before  # reads counted inside the fields read so far
                return _MISS
            done[f.name] = read
        self.plain_reads += len(done)
        return done

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        if not self._lean:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        plan = self._plan(parent_type, grouped_field_set)
        done: dict[str, Any] = {}
        rest: GroupedFieldSet | None = plan.rest
        for f in plan.plain:
            value = self._read(f, source_value)
            if value is _MISS:
                rest = None
            else:
                done[f.name] = value
        self.plain_reads += len(done)
        if rest is None:
            # graphql-core executes the rest in the order of the selection: a non-null
            # field's error stops the fields after it, as it would without this path.
            rest = {n: d for n, d in grouped_field_set.items() if n not in done}
        if not rest:
            return done
        others = super().execute_fields(parent_type, source_value, path, rest, position_context)
        if self.is_awaitable(others):
            return _ordered_later(plan.order, done, others)
        return _ordered(plan.order, done, cast("dict[str, Any]", others))

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Iterable[Any],
        position_context: Any,
    ) -> Any:
        completed = self._plain_objects(item_type, field_details_list, path, items)
        if completed is not None:
            return completed
        return super().complete_iterable_value(
            item_type, field_details_list, info, path, items, position_context
        )

    def _plain_objects(
        self,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
        items: Iterable[Any],
    ) -> list[Any] | None:
        """A list whose items are all plain values (objects whose selected fields are plain,
        say), completed directly; None when any item needs graphql-core (which then
        completes the whole list)."""
        if not self._lean or type(items) is not list:
            return None
        shape = _shape(item_type)
        if shape is None or self.get_stream_usage(field_details_list, path) is not None:
            return None
        done = self._complete_items(shape, field_details_list, items)
        return None if done is _MISS else cast("list[Any]", done)


def _is_of(check: Callable[[Any, Any], Any], value: Any) -> bool:
    """``is_type_of`` of a type :func:`_checks_without_info` passed, called without an info."""
    try:
        return check(value, None) is True
    except Exception:
        return False


def _ordered(
    order: tuple[str, ...], done: dict[str, Any], others: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in order:
        if name in done:
            out[name] = done[name]
        elif name in others:
            out[name] = others[name]
    return out


async def _ordered_later(
    order: tuple[str, ...], done: dict[str, Any], others: Awaitable[dict[str, Any]]
) -> dict[str, Any]:
    return _ordered(order, done, await others)
