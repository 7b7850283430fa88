"""The GraphQL schema (minimal: the hub's version)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import strawberry


def hub_version() -> str:
    try:
        return version("exchange")
    except PackageNotFoundError:
        return "0+unknown"


@strawberry.type
class Query:
    hub_version: str = strawberry.field(
        resolver=hub_version, description="The version of the hub software."
    )


schema = strawberry.Schema(query=Query)
