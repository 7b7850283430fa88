"""What every mutation resolver shares: input checks, refusals as ``userErrors``, lookups.

Resolvers check their input first (:func:`check_text`, :func:`check_list`, the amount
parsers), turning every problem into a :class:`Refusal`; :func:`errors_of` makes the
payload's ``userErrors`` of it. Nothing is written before the checks pass.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast

import strawberry
from strawberry import relay

from exchange.api.context import Info
from exchange.api.errors import UserError, user_errors_from
from exchange.api.loaders import CurrencyRow, EntryRow, posted_entry_row
from exchange.api.nodes import Entry
from exchange.domain import errors
from exchange.domain.errors import NotFound, Refusal
from exchange.domain.money import (
    MAX_POINTS,
    AmountError,
    decimal_to_micro,
    points_from_decimal,
)
from exchange.ledger.facts import CurrencyFacts
from exchange.services.members import check_ref, member_by_ref
from exchange.services.points import known_currency
from exchange.services.rules import RuleRefusal
from exchange.services.tx import Outcome

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

MAX_LIST = 100
"""The most elements any list argument may have."""
MAX_TEXT = 200
"""Default longest free-text input (names, labels, reasons have their own limits)."""
MAX_CODE = 64
"""Longest code-like input (currency and merchant codes, actions)."""
MAX_MONEY_MICRO = MAX_POINTS * 1_000
"""The largest settlement amount accepted as input, in micro-units."""


def mutation(*, description: str) -> Callable[[F], F]:
    """``strawberry.mutation`` as a typed decorator (it is typed as returning ``Any``)."""
    return cast("Callable[[F], F]", strawberry.mutation(description=description))


def errors_of(refusal: Refusal | AmountError) -> list[UserError]:
    """The ``userErrors`` of a refusal (all problems of a refused earning rule)."""
    if isinstance(refusal, RuleRefusal):
        out: list[UserError] = []
        for problem in refusal.problems:
            out.extend(user_errors_from(problem))
        return out
    return user_errors_from(refusal)


def has_control(text: str) -> bool:
    """True when ``text`` holds a control, format, surrogate or unassigned character."""
    if text.isprintable():
        # A printable text (Python's definition, checked in C) holds no character of an
        # "Other" category (Cc, Cf, Cs, Co, Cn) and no separator but the space. A text that
        # is not printable may still hold only separators: look at each character.
        return False
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def check_text(value: str, field: str, *, max_len: int = MAX_TEXT, required: bool = True) -> str:
    """A free-text input without control characters, at most ``max_len`` characters."""
    if len(value) > max_len:
        raise Refusal("INVALID_INPUT", f"{field} is longer than {max_len} characters", field)
    if has_control(value):
        raise Refusal("INVALID_INPUT", f"{field} contains control characters", field)
    if required and not value.strip():
        raise Refusal("INVALID_INPUT", f"{field} must not be empty", field)
    return value


def check_optional_text(value: str | None, field: str, *, max_len: int = MAX_TEXT) -> str | None:
    return None if value is None else check_text(value, field, max_len=max_len)


def check_list(values: Sequence[T], field: str, *, max_len: int = MAX_LIST) -> Sequence[T]:
    if len(values) > max_len:
        raise Refusal("INVALID_INPUT", f"{field} has more than {max_len} elements", field)
    return values


def check_code(value: str, field: str) -> str:
    """A code-like input (currency, merchant code): short, no control characters."""
    return check_text(value, field, max_len=MAX_CODE)


def _plain(value: Decimal) -> str:
    return format(value, "f")


def parse_points(value: Decimal, scale: int, field: str = "points") -> int:
    """A positive points amount of a currency of ``scale``, in smallest units.

    Zero, negative, more decimals than the scale and more than ``MAX_POINTS`` smallest
    units are ``INVALID_AMOUNT``.
    """
    if not value.is_finite() or value <= 0:
        raise Refusal(errors.INVALID_AMOUNT, f"{field} must be greater than zero", field)
    try:
        return points_from_decimal(_plain(value), scale)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, field) from exc


def parse_signed_points(value: Decimal, scale: int, field: str = "points") -> int:
    """A non-zero signed points amount (an adjustment), in smallest units."""
    if not value.is_finite() or value == 0:
        raise Refusal(errors.INVALID_AMOUNT, f"{field} must not be zero", field)
    n = parse_points(abs(value), scale, field)
    return n if value > 0 else -n


def parse_money(value: Decimal, field: str, *, allow_zero: bool = False) -> int:
    """A settlement-currency amount in micro-units (at most six decimals)."""
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise Refusal(
            errors.INVALID_AMOUNT,
            f"{field} must be {'zero or more' if allow_zero else 'greater than zero'}",
            field,
        )
    try:
        micro = decimal_to_micro(_plain(value))
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, field) from exc
    if micro > MAX_MONEY_MICRO:
        raise Refusal(errors.INVALID_AMOUNT, f"{field} is too large", field)
    return micro


def parse_rate(value: Decimal, field: str = "rate") -> Decimal:
    """A rate: an exact positive decimal (the catalogue checks digits and decimals)."""
    if not value.is_finite() or value <= 0:
        raise Refusal("INVALID_RATE", "rate must be greater than zero", field)
    return value


async def points_currency(info: Info, code: str, field: str = "currency") -> CurrencyRow:
    """A point currency by code; unknown (or the settlement currency): ``UNKNOWN_CURRENCY``."""
    check_code(code, field)
    row = await info.context.loaders.currency_by_code.load(code)
    if row is None or row.kind != "points":
        raise Refusal(errors.UNKNOWN_CURRENCY, f"no currency {code!r}", field)
    return row


async def fixed_currency(info: Info, code: str, field: str = "currency") -> CurrencyFacts:
    """The fixed facts (code, scale, issuer) of a point currency, from the process's cache.

    Unknown (or the settlement currency): ``UNKNOWN_CURRENCY``. For what changes (rate,
    active) use :func:`points_currency`, or let the service read it in its transaction.
    """
    check_code(code, field)
    found = await known_currency(info.context.pool, code)
    if found is None:
        raise Refusal(errors.UNKNOWN_CURRENCY, f"no currency {code!r}", field)
    return found


async def customer(info: Info, merchant_id: int, customer_ref: str) -> int:
    """The member behind the merchant's own customer reference (else ``NOT_FOUND``).

    Links are never changed or removed, so a found one is kept in the process's cache.
    """
    check_text(customer_ref, "customerRef", max_len=256)
    return await member_by_ref(info.context.pool, merchant_id, check_ref(customer_ref))


def decode_id(value: str, type_name: str, field: str) -> int:
    """The database id inside a Relay global ID of ``type_name`` (else ``NOT_FOUND``)."""
    if len(value) > 200:
        raise NotFound(type_name, field)
    try:
        gid = relay.GlobalID.from_id(value)
        number = int(gid.node_id)
    except (ValueError, TypeError):
        raise NotFound(type_name, field) from None
    if gid.type_name != type_name or not 0 < number < 2**63:
        raise NotFound(type_name, field)
    return number


def global_id(type_name: str, number: int) -> relay.GlobalID:
    return relay.GlobalID(type_name, str(number))


async def entry_row(info: Info, entry_id: int | None) -> EntryRow | None:
    if entry_id is None:
        return None
    return await info.context.loaders.entry.load(entry_id)


async def entry_node(info: Info, entry_id: int | None) -> Entry | None:
    """An entry the caller just wrote (or replayed), as a node."""
    row = await entry_row(info, entry_id)
    return None if row is None else Entry.from_row(row, party=True)


async def outcome_entry(info: Info, outcome: Outcome) -> Entry | None:
    """The entry of a service outcome, as a node: built from what was written when the
    outcome carries it (no read back), else loaded."""
    posted = outcome.posted
    if posted is not None and posted.draft is not None:
        row = posted_entry_row(posted.entry_id, posted.recorded_at, posted.draft)
        info.context.loaders.entry.prime(row.id, row)
    return await entry_node(info, outcome.entry_id)
