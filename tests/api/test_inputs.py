"""Planned input builders build what Strawberry's own conversion builds, for every input."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from graphql.utilities import coerce_input_value
from strawberry.relay import GlobalID
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryObjectDefinition

from exchange.api.schema import schema

RAW_SCALARS: dict[str, Any] = {
    "String": "text",
    "Int": 7,
    "Boolean": True,
    "ID": str(GlobalID("Member", "42")),
    "Decimal": "12.50",
    "DateTime": "2026-11-23T10:00:00+00:00",
    "Date": "2026-11-23",
}


def _raw(type_: GraphQLInputType, *, full: bool, depth: int = 0) -> Any:
    """A raw (JSON) value of ``type_``: every field when ``full``, else the required ones."""
    if isinstance(type_, GraphQLNonNull):
        return _raw(type_.of_type, full=full, depth=depth)
    if isinstance(type_, GraphQLList):
        return [_raw(type_.of_type, full=full, depth=depth), _raw(type_.of_type, full=full)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLScalarType):
        return RAW_SCALARS[type_.name]
    assert isinstance(type_, GraphQLInputObjectType)
    return {
        name: _raw(f.type, full=full, depth=depth + 1)
        for name, f in type_.fields.items()
        if full or isinstance(f.type, GraphQLNonNull)
    }


def _inputs() -> list[tuple[str, Any, StrawberryObjectDefinition]]:
    out = []
    for concrete in schema.schema_converter.type_map.values():
        d = concrete.definition
        if isinstance(d, StrawberryObjectDefinition) and d.is_input:
            out.append((d.name, concrete.implementation, d))
    return sorted(out, key=lambda x: x[0])


def _convert(value: Any, definition: StrawberryObjectDefinition, planned: bool) -> Any:
    saved = definition.from_input
    if not planned:
        definition.from_input = None
    try:
        return convert_argument(
            value, definition.origin, schema.schema_converter.scalar_registry, schema.config
        )
    finally:
        definition.from_input = saved


def test_every_input_type_has_a_planned_builder() -> None:
    assert _inputs()
    assert all(d.from_input is not None for _, _, d in _inputs())


@pytest.mark.parametrize("full", [True, False], ids=["every-field", "required-only"])
@pytest.mark.parametrize(("name", "gql", "definition"), _inputs(), ids=[n for n, _, _ in _inputs()])
def test_a_planned_builder_builds_what_strawberry_builds(
    name: str, gql: GraphQLInputObjectType, definition: StrawberryObjectDefinition, full: bool
) -> None:
    value = coerce_input_value(_raw(gql, full=full), gql)
    planned = _convert(value, definition, planned=True)
    plain = _convert(value, definition, planned=False)
    assert type(planned) is definition.origin
    assert planned == plain, name


def _with_input_lists() -> list[tuple[str, Any, StrawberryObjectDefinition]]:
    """Input types with a field holding a list of input objects."""
    out = []
    for name, gql, d in _inputs():
        for f in gql.fields.values():
            t = f.type.of_type if isinstance(f.type, GraphQLNonNull) else f.type
            if isinstance(t, GraphQLList) and isinstance(
                getattr(t.of_type, "of_type", t.of_type), GraphQLInputObjectType
            ):
                out.append((name, gql, d))
                break
    return out


def test_the_schema_has_lists_of_input_objects() -> None:
    assert "AwardPointsBatchInput" in [n for n, _, _ in _with_input_lists()]


@pytest.mark.parametrize(
    ("name", "gql", "definition"), _with_input_lists(), ids=[n for n, _, _ in _with_input_lists()]
)
def test_list_items_are_built_with_the_locations_strawberry_gives_them(
    name: str,
    gql: GraphQLInputObjectType,
    definition: StrawberryObjectDefinition,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list of input objects is built item by item by the items' own builders, each given
    the location (``path``) Strawberry's conversion gives it."""
    seen: list[tuple[str, tuple[str | int, ...]]] = []
    for _, _, d in _inputs():
        build = d.from_input
        assert build is not None

        def recording(cls: type, value: Any, context: Any, build: Any = build) -> Any:
            seen.append((cls.__name__, context.path))
            return build(cls, value, context)

        monkeypatch.setattr(d, "from_input", recording)
    value = coerce_input_value(_raw(gql, full=True), gql)
    seen.clear()
    planned = _convert(value, definition, planned=True)
    by_plan = list(seen)
    seen.clear()
    plain = _convert(value, definition, planned=False)
    assert planned == plain, name
    assert [s for s in by_plan if s[1]] == seen
    assert any(isinstance(path[-1], int) for _, path in seen), seen
