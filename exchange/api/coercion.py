"""Variable values coerced by a plan made once per input type, not by a walk of the type.

graphql-core coerces a request's variables generically: for every value it asks again
what kind of type it has (non-null, list, input object, leaf), recursing once per wrapper,
and before that it walks the whole value once more to make sure it is not nested deeper
than the interpreter can recurse. A bulk call's thousand input objects paid both walks for
each of their fields (6 ms of a call's 70–100 ms of Python).

:func:`install` puts :func:`coerce_input_value` in graphql-core's variable coercion: a
coercer per type, built the first time the type is met, which does exactly what
graphql-core's ``coerce_input_value`` does (the same checks in the same order, the same
scalar and enum coercion, the same default values, the same ``Undefined`` on any invalid
value, after which graphql-core reports the errors itself as before). The nesting check is
skipped for a type whose values cannot nest deeper than graphql-core's limit (no input
type that contains itself); any other type is checked as before. Tested against
graphql-core's own functions over random values (``tests/api/test_coercion.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import graphql.execution.values as _values
from graphql import (
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    Undefined,
)
from graphql.execution.values import input_is_nested_too_deeply as stock_nested_check
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.type import is_required_input_field
from graphql.utilities.coerce_input_value import coerce_default_value
from graphql.utilities.coerce_input_value import coerce_input_value as stock_coerce

Coercer = Callable[[Any], Any]

_UNBOUNDED = MAX_NESTING_DEPTH + 1


class _Plans:
    """Coercers of named types (by identity) and each named type's nesting depth."""

    def __init__(self) -> None:
        self.named: dict[int, tuple[GraphQLNamedType, Coercer]] = {}
        self.depths: dict[int, tuple[GraphQLNamedType, int]] = {}


_plans = _Plans()


def _leaf(type_: Any) -> Coercer:
    coerce = type_.coerce_input_value

    def leaf(value: Any) -> Any:
        try:
            return coerce(value)
        except Exception:
            return Undefined

    return leaf


def _input_object(type_: GraphQLInputObjectType) -> Coercer:
    cell: list[Any] = []

    def input_object(value: Any) -> Any:
        if not cell:
            fields = type_.fields
            cell.append(
                (
                    fields,
                    [
                        (name, f.out_name or name, _coercer(f.type), is_required_input_field(f), f)
                        for name, f in fields.items()
                    ],
                    type_.is_one_of,
                    type_.out_type,
                )
            )
        fields, plan, one_of, out_type = cell[0]
        if not isinstance(value, dict):
            return Undefined
        defined = 0
        for name, field_value in value.items():
            if field_value is Undefined:
                continue
            defined += 1
            if name not in fields:
                return Undefined
        coerced: dict[str, Any] = {}
        for name, out_name, coerce, required, f in plan:
            field_value = value.get(name, Undefined)
            if field_value is Undefined:
                if required:
                    return Undefined
                default = coerce_default_value(f)
                if default is not Undefined:
                    coerced[out_name] = default
            else:
                c = coerce(field_value)
                if c is Undefined:
                    return Undefined
                coerced[out_name] = c
        if one_of:
            keys = list(coerced)
            if defined != 1 or len(keys) != 1 or coerced[keys[0]] is None:
                return Undefined
        return out_type(coerced)

    return input_object


def _list(item: Coercer) -> Coercer:
    def list_(value: Any) -> Any:
        if not is_iterable(value):
            c = item(value)
            return Undefined if c is Undefined else [c]
        out: list[Any] = []
        append = out.append
        for v in value:
            c = item(v)
            if c is Undefined:
                return Undefined
            append(c)
        return out

    return list_


def _wrapped(core: Coercer, missing: Any) -> Coercer:
    """``core`` behind the check for a missing value: ``missing`` is what a ``null`` (or no
    value) coerces to -- ``Undefined`` (refused) for a non-null type, ``None`` otherwise."""

    def wrapped(value: Any) -> Any:
        if value is None or value is Undefined:
            return missing
        return core(value)

    return wrapped


def _coercer(type_: Any) -> Coercer:
    """The coercer of ``type_`` (wrappers are new objects per request; named types are not)."""
    if isinstance(type_, GraphQLNonNull):
        return _wrapped(_core(type_.of_type), Undefined)
    return _wrapped(_core(type_), None)


def _core(type_: Any) -> Coercer:
    """The coercer of a non-null value of the nullable type ``type_``."""
    if isinstance(type_, GraphQLList):
        return _list(_coercer(type_.of_type))
    known = _plans.named.get(id(type_))
    if known is not None and known[0] is type_:
        return known[1]
    made = _input_object(type_) if isinstance(type_, GraphQLInputObjectType) else _leaf(type_)
    _plans.named[id(type_)] = (type_, made)
    return made


def _depth(type_: Any, seen: frozenset[int] = frozenset()) -> int:
    """How deep a value of ``type_`` can make graphql-core's nesting check go;
    :data:`_UNBOUNDED` for a type that contains itself."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return min(_UNBOUNDED, 1 + _depth(type_.of_type, seen))
    if not isinstance(type_, GraphQLInputObjectType):
        return 0
    known = _plans.depths.get(id(type_))
    if known is not None and known[0] is type_:
        return known[1]
    if id(type_) in seen:
        return _UNBOUNDED
    inner = seen | {id(type_)}
    depth = min(
        _UNBOUNDED, 1 + max((_depth(f.type, inner) for f in type_.fields.values()), default=0)
    )
    if not seen or depth < _UNBOUNDED:
        _plans.depths[id(type_)] = (type_, depth)
    return depth


def coerce_input_value(input_value: Any, type_: GraphQLInputType) -> Any:
    """graphql-core's ``coerce_input_value``, by a plan per type."""
    return _coercer(type_)(input_value)


def input_is_nested_too_deeply(value: Any, type_: GraphQLInputType) -> bool:
    """graphql-core's nesting check, skipped where the type bounds the nesting."""
    if _depth(type_) <= MAX_NESTING_DEPTH:
        return False
    return stock_nested_check(value, type_)


def install() -> None:
    """Use these in graphql-core's coercion of variable values (idempotent)."""
    _values.coerce_input_value = coerce_input_value  # type: ignore[attr-defined]
    _values.input_is_nested_too_deeply = input_is_nested_too_deeply


__all__ = ["coerce_input_value", "input_is_nested_too_deeply", "install", "stock_coerce"]
