"""The hub's ASGI app for the bench when ``awardPointsBatch`` is not in the schema yet.

``exchange.api.bulk.BulkMutation`` is merged into the ``Mutation`` root by the mutations
package; until it is, the bench serves the same app with it added (uvicorn workers import
this module first, so the schema is built with it). Otherwise identical to
``exchange.app:app_from_env``.
"""

from __future__ import annotations

from starlette.applications import Starlette


def has_batch_mutation() -> bool:
    from exchange.api import mutations
    from exchange.api.bulk import BulkMutation

    return BulkMutation in getattr(mutations, "MUTATION_TYPES", ())


def app_from_env() -> Starlette:
    from exchange.api import mutations
    from exchange.api.bulk import BulkMutation

    if BulkMutation not in mutations.MUTATION_TYPES:
        mutations.MUTATION_TYPES = (*mutations.MUTATION_TYPES, BulkMutation)
    from exchange.app import app_from_env as exchange_app

    return exchange_app()
