"""Conversion arithmetic: the hub's fee is never negative and round trips never make value."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.conversion import convert
from exchange.domain.money import AmountError, value_micro

rates = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("50"), places=7, allow_nan=False
).filter(lambda d: d > 0)
scales = st.integers(0, 4)
fees = st.integers(0, 500)


@given(
    n=st.integers(1, 10**9),
    rx=rates,
    sx=scales,
    ry=rates,
    sy=scales,
    fee=fees,
)
def test_a_conversion_never_pays_more_than_it_takes(
    n: int, rx: Decimal, sx: int, ry: Decimal, sy: int, fee: int
) -> None:
    try:
        c = convert(n, from_rate=rx, from_scale=sx, to_rate=ry, to_scale=sy, fee_bp=fee)
    except AmountError:
        return
    assert c.fee_micro >= 0
    assert c.to_value_micro + c.fee_micro == c.value_micro
    assert c.to_value_micro == value_micro(c.to_amount, ry, sy)
    budget = Decimal(c.value_micro) * (10_000 - fee) / 10_000
    assert c.to_value_micro <= budget
    # The next unit would have been worth more than the budget: m is as large as allowed.
    assert value_micro(c.to_amount + 1, ry, sy) > budget or (
        # or only half-even rounding of the next unit's worth hides the excess
        Decimal(c.to_amount + 1) * ry * Decimal(10) ** (6 - sy) > budget
    )


@given(n=st.integers(1, 10**9), rx=rates, sx=scales, ry=rates, sy=scales, fee=fees)
def test_a_round_trip_never_ends_with_more_value(
    n: int, rx: Decimal, sx: int, ry: Decimal, sy: int, fee: int
) -> None:
    try:
        there = convert(n, from_rate=rx, from_scale=sx, to_rate=ry, to_scale=sy, fee_bp=fee)
        back = convert(
            there.to_amount, from_rate=ry, from_scale=sy, to_rate=rx, to_scale=sx, fee_bp=fee
        )
    except AmountError:
        return
    assert back.to_value_micro <= value_micro(n, rx, sx)
    assert back.to_value_micro <= there.to_value_micro <= there.value_micro


def test_worked_example() -> None:
    c = convert(
        1200,
        from_rate=Decimal("0.01"),
        from_scale=0,
        to_rate=Decimal("0.005"),
        to_scale=2,
        fee_bp=100,
    )
    assert (c.value_micro, c.to_amount, c.to_value_micro, c.fee_micro) == (
        12_000_000,
        237_600,
        11_880_000,
        120_000,
    )


def test_too_small_to_convert_is_refused() -> None:
    with pytest.raises(AmountError) as exc:
        convert(
            1, from_rate=Decimal("0.01"), from_scale=0, to_rate=Decimal("5"), to_scale=0, fee_bp=100
        )
    assert exc.value.code == "AMOUNT_TOO_SMALL"
