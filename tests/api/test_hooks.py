"""Extension hooks driven directly behave as Strawberry's own context managers drive them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner

from exchange.api.hooks import LeanExtensionsRunner, Phase
from exchange.api.schema import schema as hub_schema

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Scripted(SchemaExtension):
    """A hook that logs what it sees and fails, suppresses or replaces as it is told."""

    def __init__(self, name: str, before: str, after: str, log: list[str]) -> None:
        self.name, self.before, self.after, self.log = name, before, after, log

    def on_operation(self) -> Iterator[None]:
        self.log.append(f"{self.name} enter")
        if self.before == "raise":
            raise Boom(f"{self.name} before")
        try:
            yield
        except Exception as exc:
            self.log.append(f"{self.name} saw {exc}")
            if self.after == "suppress":
                return
            if self.after == "replace":
                raise Boom(f"{self.name} replaced") from exc
            if self.after == "again":
                yield
                return
            raise
        self.log.append(f"{self.name} exit")
        if self.after == "raise":
            raise Boom(f"{self.name} after")
        if self.after == "again":
            yield


class PlainFunction(Scripted):
    """A hook that is a plain function: the lean runner leaves its phase to Strawberry."""

    def on_operation(self) -> None:  # type: ignore[override]
        self.log.append(f"{self.name} called")


BEHAVIOURS = st.tuples(
    st.sampled_from(["ok", "raise"]),
    st.sampled_from(["ok", "raise", "suppress", "replace", "again"]),
    st.booleans(),
)


async def _run(
    runner: type[SchemaExtensionsRunner],
    scripts: list[tuple[str, str, bool]],
    body_raises: bool,
    use_async: bool,
) -> tuple[list[str], str]:
    log: list[str] = []
    extensions: list[SchemaExtension] = [
        (PlainFunction if plain else Scripted)(f"x{i}", before, after, log)
        for i, (before, after, plain) in enumerate(scripts)
    ]
    phase = runner(execution_context=None, extensions=extensions).operation()  # type: ignore[arg-type]

    def body() -> None:
        log.append("body")
        if body_raises:
            raise Boom("body")

    try:
        if use_async:
            async with phase:
                body()
        else:
            with phase:
                body()
        outcome = "ok"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return log, outcome


@settings(max_examples=300, deadline=None)
@given(
    scripts=st.lists(BEHAVIOURS, max_size=4),
    body_raises=st.booleans(),
    use_async=st.booleans(),
)
async def test_hooks_run_as_strawberry_runs_them(
    scripts: list[tuple[str, str, bool]], body_raises: bool, use_async: bool
) -> None:
    lean = await _run(LeanExtensionsRunner, scripts, body_raises, use_async)
    stock = await _run(SchemaExtensionsRunner, scripts, body_raises, use_async)
    assert lean == stock


async def test_plain_generator_hooks_are_driven_directly() -> None:
    log: list[str] = []
    runner = LeanExtensionsRunner(
        execution_context=None,  # type: ignore[arg-type]
        extensions=[Scripted("a", "ok", "ok", log), Scripted("b", "ok", "ok", log)],
    )
    phase = runner.operation()
    assert isinstance(phase, Phase)
    with phase:
        log.append("body")
    assert log == ["a enter", "b enter", "body", "b exit", "a exit"]
    # A phase no extension hooks into is empty; one with a plain function goes to Strawberry.
    assert isinstance(runner.parsing(), Phase)
    mixed = LeanExtensionsRunner(
        execution_context=None,  # type: ignore[arg-type]
        extensions=[Scripted("a", "ok", "ok", log), PlainFunction("c", "ok", "ok", log)],
    )
    assert not isinstance(mixed.operation(), Phase)


async def test_the_hub_schema_runs_its_hooks_directly() -> None:
    runner = hub_schema.create_extensions_runner(None, hub_schema.get_extensions())  # type: ignore[arg-type]
    assert isinstance(runner, LeanExtensionsRunner)
    for phase in (runner.operation(), runner.parsing(), runner.validation(), runner.executing()):
        assert isinstance(phase, Phase)
    result = await hub_schema.execute("{ hubVersion }")
    assert result.errors is None
    assert result.extensions is not None
    assert result.extensions["cost"]["limit"] > 0
