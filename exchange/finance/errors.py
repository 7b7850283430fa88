"""Refusal codes of the finance operations (``userErrors`` codes of the API)."""

from __future__ import annotations

from exchange.domain.errors import Forbidden
from exchange.services.actors import ADMIN, FINANCE, Actor

INVALID_TIME = "INVALID_TIME"
"""A cut-off in the future or before the previous batch's cut-off."""
NO_INSTRUCTION = "NO_INSTRUCTION"
"""The batch has no payment instruction for the merchant (nothing to confirm there)."""
AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
"""A payment confirmed for more or less than its instruction."""
ALREADY_CONFIRMED = "ALREADY_CONFIRMED"
"""The instruction was already confirmed paid, under another external reference."""

FINANCE_ROLES = (FINANCE, ADMIN)


def require_finance(actor: Actor, what: str) -> None:
    if actor.role not in FINANCE_ROLES:
        raise Forbidden(f"only finance {what}")
