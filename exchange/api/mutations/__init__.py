"""The mutations of the API, one module per family, and the root query fields they add.

``exchange.api.schema`` merges :data:`MUTATION_TYPES` into the ``Mutation`` root type and
:data:`QUERY_TYPES` into ``Query``. Every mutation takes one ``input`` and answers a
``<Name>Payload`` with ``userErrors``; value-moving ones take an ``idempotencyKey`` and say
whether they ``replayed`` (``docs/api-conventions.md``).
"""

from __future__ import annotations

from exchange.api.finance import FinanceMutation, FinanceQuery
from exchange.api.mutations.admin import AdminMutations, ApiKey
from exchange.api.mutations.bulk import BulkMutation
from exchange.api.mutations.conversion import ConversionMutations
from exchange.api.mutations.currencies import CurrencyMutations, EarningRuleQueries
from exchange.api.mutations.customers import CustomerMutations
from exchange.api.mutations.points import PointsMutations
from exchange.api.mutations.rule_types import EarningRule

MUTATION_TYPES: tuple[type, ...] = (
    AdminMutations,
    CurrencyMutations,
    CustomerMutations,
    PointsMutations,
    BulkMutation,
    ConversionMutations,
    FinanceMutation,
)
QUERY_TYPES: tuple[type, ...] = (EarningRuleQueries, FinanceQuery)
NODE_TYPES: tuple[type, ...] = (ApiKey, EarningRule)
"""Node types defined here, for the schema's ``types`` (so ``node(id:)`` resolves them)."""

__all__ = ["MUTATION_TYPES", "NODE_TYPES", "QUERY_TYPES"]
