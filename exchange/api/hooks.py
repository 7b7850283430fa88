"""Schema extension hooks run without Strawberry's per-request wrapping.

For every phase of every request (operation, parsing, validation, execution) Strawberry
looks each extension's hook up again, inspects it, wraps it with ``contextlib`` (which
copies the function's metadata onto a new wrapper) and enters it through an exit stack:
about a tenth of what a small request costs the hub. The hub's hooks are plain generator
functions (``...; yield; ...``), so :class:`LeanExtensionsRunner` finds them once per
extension class and drives the generators itself, with ``contextlib``'s and
``ExitStack``'s semantics as Strawberry uses them: hooks enter in order and exit
last-first; an exception is thrown into each hook in turn, and a hook may replace it
(raise) or hide it from the hooks entered before it (return), though, as with Strawberry,
the phase never swallows it; a hook that yields twice is an error.

A phase with any other kind of hook (an ``async`` generator, a plain callable) is left to
Strawberry's own context manager.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Final, Literal

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

Hook = Callable[[SchemaExtension], Generator[None, None, None]]
_OTHER: Final = object()
"""A hook that is not a plain generator function."""


_HOOKS: dict[tuple[type, str], Any] = {}


def plain_hook(cls: type[SchemaExtension], name: str) -> Any:
    """``cls``'s hook for phase ``name``: the generator function, None, or ``_OTHER``."""
    key = (cls, name)
    if key not in _HOOKS:
        hook = getattr(cls, name)
        if hook is getattr(SchemaExtension, name):
            _HOOKS[key] = None
        else:
            _HOOKS[key] = hook if inspect.isgeneratorfunction(hook) else _OTHER
    return _HOOKS[key]


class Phase:
    """One phase's hooks as a (sync and async) context manager."""

    __slots__ = ("_calls", "_open")

    def __init__(self, calls: list[tuple[Hook, SchemaExtension]]) -> None:
        self._calls = calls
        self._open: list[Generator[None, None, None]] = []

    def __enter__(self) -> None:
        # As an exit stack entered in a ``with`` statement: a hook that fails here leaves
        # those entered before it to the garbage collector, as Strawberry does.
        for hook, extension in self._calls:
            generator = hook(extension)
            next(generator)
            self._open.append(generator)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        left = close(self._open, exc)
        self._open = []
        # Strawberry's managers never suppress: a hook that swallows the exception only
        # hides it from the hooks entered before it.
        if left is None or left is exc:
            return False
        raise left

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)


def close(generators: list[Generator[None, None, None]], exc: BaseException | None) -> Any:
    """Finish ``generators`` last-first, each seeing the exception the later ones left.

    Returns the exception left at the end (None: none, or it was suppressed).
    """
    for generator in reversed(generators):
        try:
            if exc is None:
                next(generator)
            else:
                generator.throw(exc)
        except StopIteration:
            exc = None
            continue
        except BaseException as raised:  # handed on, as ExitStack does
            exc = raised
            continue
        generator.close()
        exc = RuntimeError(
            "generator didn't stop" if exc is None else "generator didn't stop after throw()"
        )
    return exc


class LeanExtensionsRunner(SchemaExtensionsRunner):
    """Strawberry's runner, with plain generator hooks driven directly."""

    def _phase(self, name: str, fallback: type[ExtensionContextManagerBase]) -> Any:
        calls: list[tuple[Hook, SchemaExtension]] = []
        for extension in self.extensions:
            hook = plain_hook(type(extension), name)
            if hook is None:
                continue
            if hook is _OTHER:
                return fallback(self.extensions)
            calls.append((hook, extension))
        return Phase(calls)

    def operation(self) -> Any:
        return self._phase("on_operation", OperationContextManager)

    def parsing(self) -> Any:
        return self._phase("on_parse", ParsingContextManager)

    def validation(self) -> Any:
        return self._phase("on_validate", ValidationContextManager)

    def executing(self) -> Any:
        return self._phase("on_execute", ExecutingContextManager)
