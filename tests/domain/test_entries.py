"""Legs of a drafted entry: combined per account, zero legs dropped, in account order."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.entries import Leg, imbalances, merge_legs

legs = st.lists(
    st.builds(
        Leg,
        account_id=st.integers(1, 6),
        asset_id=st.integers(1, 3),
        amount=st.integers(-5, 5),
    ),
    max_size=6,
)


def _definition(given_legs: list[Leg]) -> list[Leg]:
    merged: dict[tuple[int, int], int] = defaultdict(int)
    for leg in given_legs:
        merged[(leg.account_id, leg.asset_id)] += leg.amount
    return [Leg(acc, asset, amount) for (acc, asset), amount in sorted(merged.items()) if amount]


@given(legs)
def test_merged_legs_are_the_sum_per_account_in_order(given_legs: list[Leg]) -> None:
    """Two legs (an earn's) take a shortcut; every size must give the definition's legs."""
    assert merge_legs(given_legs) == _definition(given_legs)
    assert merge_legs(iter(given_legs)) == _definition(given_legs)


@given(legs)
def test_imbalances_are_the_nonzero_sums_per_asset(given_legs: list[Leg]) -> None:
    """Two legs (an earn's) take a shortcut; every size must give the definition's sums."""
    sums: dict[int, int] = defaultdict(int)
    for leg in given_legs:
        sums[leg.asset_id] += leg.amount
    expected = {asset: total for asset, total in sums.items() if total}
    assert imbalances(given_legs) == expected
    assert imbalances(iter(given_legs)) == expected


@given(legs)
def test_merging_keeps_every_assets_sum(given_legs: list[Leg]) -> None:
    assert imbalances(merge_legs(given_legs)) == imbalances(given_legs)


def test_two_legs_come_back_in_account_order() -> None:
    wallet, outstanding = Leg(9, 1, 10), Leg(4, 1, -10)
    assert merge_legs([wallet, outstanding]) == [outstanding, wallet]
    assert merge_legs([outstanding, wallet]) == [outstanding, wallet]
    assert merge_legs([Leg(4, 1, 10), Leg(4, 1, -10)]) == []
    assert merge_legs([Leg(4, 1, 0), Leg(5, 1, 3)]) == [Leg(5, 1, 3)]
