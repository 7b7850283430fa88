"""Errors of the GraphQL API: typed ``userErrors`` and the few top-level error codes.

Two kinds, as ``docs/api-conventions.md`` describes:

- **User errors** are data. A mutation that refuses returns ``userErrors: [UserError!]!``
  with a stable :class:`ErrorCode`; nothing was changed. :func:`user_errors_from` turns a
  service :class:`~exchange.domain.errors.Refusal` into them.
- **Top-level errors** are :class:`PublicError` subclasses, each with a stable
  ``extensions.code``. Anything else that escapes a resolver is a bug: it is logged and
  answered as ``"Internal error."`` with code ``INTERNAL`` (see :func:`should_mask_error`).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.exceptions import StrawberryInputCoercionError

from exchange.domain.errors import Refusal
from exchange.domain.money import AmountError

logger = logging.getLogger("exchange.api")

INTERNAL_MESSAGE = "Internal error."


@strawberry.enum(description="Why a mutation refused. Clients must tolerate codes added later.")
class ErrorCode(enum.Enum):
    # Amounts, rates, points
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    AMOUNT_TOO_SMALL = "AMOUNT_TOO_SMALL"
    INVALID_RATE = "INVALID_RATE"
    INVALID_FEE = "INVALID_FEE"
    EXPOSURE_LIMIT = "EXPOSURE_LIMIT"
    # Currencies and merchants
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    CURRENCY_INACTIVE = "CURRENCY_INACTIVE"
    SAME_CURRENCY = "SAME_CURRENCY"
    MERCHANT_SUSPENDED = "MERCHANT_SUSPENDED"
    INVALID_CODE = "INVALID_CODE"
    INVALID_NAME = "INVALID_NAME"
    INVALID_SCALE = "INVALID_SCALE"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    INVALID_TIME = "INVALID_TIME"
    CODE_TAKEN = "CODE_TAKEN"
    # Members
    INVALID_CUSTOMER_REF = "INVALID_CUSTOMER_REF"
    CUSTOMER_REF_TAKEN = "CUSTOMER_REF_TAKEN"
    ALREADY_LINKED = "ALREADY_LINKED"
    # Quotes, reversals, settlement
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    QUOTE_ALREADY_EXECUTED = "QUOTE_ALREADY_EXECUTED"
    REVERSAL_EXCEEDS_ORIGINAL = "REVERSAL_EXCEEDS_ORIGINAL"
    NOT_REVERSIBLE = "NOT_REVERSIBLE"
    INVALID_REASON = "INVALID_REASON"
    INVALID_DIRECTION = "INVALID_DIRECTION"
    INVALID_REFERENCE = "INVALID_REFERENCE"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"
    NO_INSTRUCTION = "NO_INSTRUCTION"
    # Idempotency
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    # Credentials
    INVALID_ROLE = "INVALID_ROLE"
    INVALID_MERCHANT = "INVALID_MERCHANT"
    INVALID_LABEL = "INVALID_LABEL"
    INVALID_SUBJECT = "INVALID_SUBJECT"
    INVALID_TTL = "INVALID_TTL"
    # Earning rules
    BAD_ACTION_NAME = "BAD_ACTION_NAME"
    BAD_FACTOR = "BAD_FACTOR"
    BAD_PERIOD = "BAD_PERIOD"
    BAD_TIMEZONE = "BAD_TIMEZONE"
    BAD_UNIT_AMOUNT = "BAD_UNIT_AMOUNT"
    BAD_WEEKDAY = "BAD_WEEKDAY"
    BAD_WINDOW = "BAD_WINDOW"
    DUPLICATE_RULE_ID = "DUPLICATE_RULE_ID"
    EMPTY_RULE_ID = "EMPTY_RULE_ID"
    NON_POSITIVE_CAP = "NON_POSITIVE_CAP"
    NON_POSITIVE_POINTS = "NON_POSITIVE_POINTS"
    UNKNOWN_RULE = "UNKNOWN_RULE"
    # General
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    INVALID_INPUT = "INVALID_INPUT"


_CODES: dict[str, ErrorCode] = {code.value: code for code in ErrorCode}


def error_code(code: str) -> ErrorCode:
    """The enum member for a service code; an unknown code is ``INVALID_INPUT``."""
    found = _CODES.get(code)
    if found is None:
        logger.warning("unmapped refusal code %r answered as INVALID_INPUT", code)
        return ErrorCode.INVALID_INPUT
    return found


@strawberry.type(description="Why a mutation refused; nothing was changed.")
class UserError:
    code: ErrorCode
    field: str | None = strawberry.field(
        default=None, description="The input field concerned, if any (camelCase)."
    )
    message: str = ""


def user_errors_from(refusal: Refusal | AmountError) -> list[UserError]:
    """The ``userErrors`` of a refused request."""
    field = getattr(refusal, "field", None)
    return [UserError(code=error_code(refusal.code), field=field, message=refusal.message)]


# -- top-level errors --------------------------------------------------------------------------


class PublicError(GraphQLError):
    """A top-level error shown to clients as is, with a stable ``extensions.code``."""

    code = "INTERNAL"
    default_message = "Error."

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        super().__init__(
            message or self.default_message, extensions={"code": self.code, **extensions}
        )


class Unauthenticated(PublicError):
    code = "UNAUTHENTICATED"
    default_message = "Authentication required."


class Forbidden(PublicError):
    code = "FORBIDDEN"
    default_message = "Not allowed for this caller."


class QueryTooDeep(PublicError):
    code = "QUERY_TOO_DEEP"
    default_message = "The query is nested too deeply."


class TooManyAliases(PublicError):
    code = "TOO_MANY_ALIASES"
    default_message = "The query has too many aliases."


class QueryTooLarge(PublicError):
    code = "QUERY_TOO_LARGE"
    default_message = "The query has too many tokens."


class QueryTooCostly(PublicError):
    code = "QUERY_TOO_COSTLY"
    default_message = "The query costs too much."


class RateLimited(PublicError):
    code = "RATE_LIMITED"
    default_message = "The cost budget of this credential is exhausted; retry later."


class InvalidArgument(PublicError):
    code = "INVALID_ARGUMENT"
    default_message = "Invalid argument."


class InternalError(PublicError):
    code = "INTERNAL"
    default_message = INTERNAL_MESSAGE


VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
TOP_LEVEL_CODES = (
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "QUERY_TOO_DEEP",
    "TOO_MANY_ALIASES",
    "QUERY_TOO_LARGE",
    "QUERY_TOO_COSTLY",
    "RATE_LIMITED",
    "INVALID_ARGUMENT",
    "INTERNAL",
    VALIDATION_FAILED,
)

_TOKEN_LIMIT_PREFIX = "Syntax Error: Document contains more than"  # noqa: S105


def should_mask_error(error: GraphQLError) -> bool:
    """Mask an error unless it is one of ours or a GraphQL (parse/validation/input) error."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def public_error(error: GraphQLError) -> GraphQLError:
    """The error as the client sees it: masked when internal, always with a code."""
    if should_mask_error(error):
        return GraphQLError(
            INTERNAL_MESSAGE,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL"},
        )
    extensions = dict(error.extensions or {})
    if "code" not in extensions:
        if error.message.startswith(_TOKEN_LIMIT_PREFIX):
            extensions["code"] = QueryTooLarge.code
        elif error.path is None or isinstance(error.original_error, StrawberryInputCoercionError):
            extensions["code"] = VALIDATION_FAILED
        else:
            extensions["code"] = InvalidArgument.code
        error.extensions = extensions
    return error
