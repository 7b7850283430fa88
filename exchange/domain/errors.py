"""Refusals: typed, expected outcomes of a request (as opposed to bugs).

A refusal carries a stable ``code`` that the API returns as a ``userErrors`` code, the
input ``field`` it concerns (if any) and a human message. Codes are part of the API.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request was refused for a business or validation reason; nothing was changed."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"Refusal({self.code!r}, {self.message!r}, field={self.field!r})"


class NotFound(Refusal):
    """The object does not exist or is not visible to the caller (indistinguishable)."""

    def __init__(self, what: str, field: str | None = None) -> None:
        super().__init__("NOT_FOUND", f"{what} not found", field)


class Forbidden(Refusal):
    def __init__(self, message: str = "not allowed for this caller") -> None:
        super().__init__("FORBIDDEN", message)


# Codes recorded against an idempotency key: the same key replays the same refusal.
INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
QUOTE_EXPIRED = "QUOTE_EXPIRED"
QUOTE_USED = "QUOTE_ALREADY_EXECUTED"
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
EXPOSURE_LIMIT = "EXPOSURE_LIMIT"
CURRENCY_INACTIVE = "CURRENCY_INACTIVE"
INVALID_AMOUNT = "INVALID_AMOUNT"
REVERSAL_EXCEEDS_ORIGINAL = "REVERSAL_EXCEEDS_ORIGINAL"
NOT_REVERSIBLE = "NOT_REVERSIBLE"
MERCHANT_SUSPENDED = "MERCHANT_SUSPENDED"
