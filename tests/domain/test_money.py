"""Parsing and rounding of money, rates and points."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.money import (
    AmountError,
    decimal_to_micro,
    micro_to_decimal,
    parse_decimal,
    parse_rate,
    points_from_decimal,
    points_to_decimal,
    scale_amount,
    value_micro,
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e3",
        "NaN",
        "Infinity",
        " 1",
        "1 ",
        "01",
        "1.",
        ".5",
        "1,5",
        "１",
        "0x10",
        "1.2.3",
        "9" * 31,
    ],
)
def test_malformed_decimals_are_refused(text: str) -> None:
    with pytest.raises(AmountError):
        parse_decimal(text)


def test_points_respect_the_scale() -> None:
    assert points_from_decimal("12.5", 2) == 1250
    assert points_to_decimal(1250, 2) == "12.50"
    with pytest.raises(AmountError):
        points_from_decimal("0.001", 2)
    with pytest.raises(AmountError):
        points_from_decimal("0", 0)
    with pytest.raises(AmountError):
        points_from_decimal("1" + "0" * 16, 0)


def test_rates_must_be_positive_and_bounded() -> None:
    assert parse_rate("0.01") == Decimal("0.01")
    for bad in ("0", "0.0000000000001", "1234567890123456789"):
        with pytest.raises(AmountError):
            parse_rate(bad)


def test_value_rounds_half_even_once() -> None:
    # 1 unit at 0.0000025 per point = 2.5 micro -> 2; 3 units = 7.5 micro -> 8
    assert value_micro(1, Decimal("0.0000025"), 0) == 2
    assert value_micro(3, Decimal("0.0000025"), 0) == 8


@given(st.integers(-(10**15), 10**15))
def test_micro_round_trips(micro: int) -> None:
    text = micro_to_decimal(abs(micro))
    assert decimal_to_micro(text) == abs(micro)


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6), st.data())
def test_cumulative_shares_add_up_to_the_whole(
    amount: int, whole: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, whole), max_size=6)))
    points = [0, *cuts, whole]
    parts = [
        scale_amount(amount, b, whole) - scale_amount(amount, a, whole)
        for a, b in zip(points, points[1:], strict=False)
    ]
    assert sum(parts) == amount
    assert scale_amount(-amount, whole // 2, whole) == -scale_amount(amount, whole // 2, whole)
