"""Multilateral netting: worked examples and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.netting import (
    HUB_ACCOUNTS,
    HUB_FEES,
    Direction,
    EntryLegs,
    InvalidEntries,
    allocate,
    bilateral_obligations,
    entry_positions,
    gross_total,
    minor_unit_micro,
    net_bilateral,
    net_positions,
    net_total,
    netting_efficiency,
    payment_instructions,
    validate_entries,
)

CNY = 2  # minor-unit digits


def entry(entry_id: int, *legs: tuple[str, int]) -> EntryLegs:
    return EntryLegs(entry_id, tuple(legs))


# --- obligations and positions --------------------------------------------------------------


def test_an_earn_at_another_merchant_makes_it_owe_the_issuer() -> None:
    earn = entry(1, ("CAFE", -1_500_000), ("AIR", 1_500_000))
    assert bilateral_obligations([earn]) == {("CAFE", "AIR"): 1_500_000}
    assert net_positions([earn]) == {"AIR": 1_500_000, "CAFE": -1_500_000}


def test_a_conversion_owes_the_receiving_issuer_and_the_hub_fee() -> None:
    convert = entry(1, ("AIR", -1_000_000), ("BOOK", 990_000), (HUB_FEES, 10_000))
    assert bilateral_obligations([convert]) == {("AIR", "BOOK"): 990_000, ("AIR", HUB_FEES): 10_000}


def test_legs_of_one_party_in_one_entry_are_netted_first() -> None:
    # A conversion between two currencies of the same issuer: it owes only the fee.
    convert = entry(1, ("AIR", -1_000_000), ("AIR", 990_000), (HUB_FEES, 10_000))
    assert entry_positions(convert) == {"AIR": -10_000, HUB_FEES: 10_000}
    assert bilateral_obligations([convert]) == {("AIR", HUB_FEES): 10_000}


def test_several_payers_and_payees_are_matched_greedily_in_party_order() -> None:
    assert allocate({"D": 25, "B": -20, "C": 25, "A": -30}) == [
        ("A", "C", 25),
        ("A", "D", 5),
        ("B", "D", 20),
    ]
    assert allocate({"A": -3, "B": -1, "C": 2, "D": 2}) == [
        ("A", "C", 2),
        ("A", "D", 1),
        ("B", "D", 1),
    ]


def test_opposite_obligations_are_gross_there_and_net_in_net_bilateral() -> None:
    entries = [entry(1, ("A", -5), ("B", 5)), entry(2, ("B", -3), ("A", 3))]
    gross = bilateral_obligations(entries)
    assert gross == {("A", "B"): 5, ("B", "A"): 3}
    assert net_bilateral(gross) == {("A", "B"): 2}
    assert net_bilateral({("A", "B"): 4, ("B", "A"): 4}) == {}
    assert net_positions(entries) == {"A": -2, "B": 2}
    assert netting_efficiency(gross_total(gross), net_total(net_positions(entries))) == Decimal(
        "0.75"
    )


def test_a_cycle_nets_to_nothing() -> None:
    entries = [
        entry(1, ("A", -100), ("B", 100)),
        entry(2, ("B", -100), ("C", 100)),
        entry(3, ("C", -100), ("A", 100)),
    ]
    positions = net_positions(entries)
    assert positions == {"A": 0, "B": 0, "C": 0}
    assert payment_instructions(positions, CNY, {}).instructions == ()
    assert netting_efficiency(gross_total(bilateral_obligations(entries)), 0) == 1


def test_outputs_are_sorted() -> None:
    entries = [entry(2, ("Z", -1), ("A", 1)), entry(1, ("M", -1), ("B", 1))]
    assert list(net_positions(entries)) == ["A", "B", "M", "Z"]
    assert list(bilateral_obligations(entries)) == [("M", "B"), ("Z", "A")]


def test_invalid_entries_are_reported_together() -> None:
    entries = [
        entry(1, ("A", -5), ("B", 4)),
        entry(2, ("A", -5), ("B", 5)),
        entry(2, ("A", -5), ("B", 5)),
        entry(3, ("", 0), ("B", True)),
    ]
    assert [(e.code, e.entry_id) for e in validate_entries(entries)] == [
        ("UNBALANCED", 1),
        ("DUPLICATE_ENTRY", 2),
        ("BAD_PARTY", 3),
        ("BAD_AMOUNT", 3),
    ]
    with pytest.raises(InvalidEntries) as caught:
        net_positions(entries)
    assert len(caught.value.errors) == 4
    with pytest.raises(InvalidEntries):
        bilateral_obligations(entries)


# --- payment instructions -------------------------------------------------------------------


def test_instructions_round_toward_zero_and_carry_the_rest() -> None:
    positions = {"AIR": 1_234_567, "CAFE": -1_239_999, HUB_FEES: 5_432}
    result = payment_instructions(positions, CNY, {})
    assert [(i.party, i.direction, i.amount_micro, i.amount) for i in result.instructions] == [
        ("AIR", Direction.FROM_HUB, 1_230_000, Decimal("1.23")),
        ("CAFE", Direction.TO_HUB, 1_230_000, Decimal("1.23")),
    ]
    assert str(result.instructions[0].amount) == "1.23"
    assert result.carry == {"AIR": 4_567, "CAFE": -9_999}
    assert result.hub_fees == 5_432
    assert result.hub_rounding == 4_567 - 9_999
    assert result.hub_net == 0 == result.hub_fees + result.hub_clearing + result.hub_rounding


def test_the_carry_is_paid_in_the_next_batch() -> None:
    first = payment_instructions({"AIR": 1_234_567}, CNY, {})
    second = payment_instructions({"AIR": 5_433}, CNY, first.carry)
    assert [(i.party, i.amount) for i in second.instructions] == [("AIR", Decimal("0.01"))]
    assert second.carry == {}
    # A merchant without activity still gets its carry back once it reaches a minor unit.
    third = payment_instructions({}, CNY, {"CAFE": -10_000})
    assert [(i.party, i.direction, i.amount) for i in third.instructions] == [
        ("CAFE", Direction.TO_HUB, Decimal("0.01"))
    ]


def test_without_hub_accounts_hub_rounding_is_minus_the_sum_of_instructions() -> None:
    # A is owed 0.019 and gets 0.01; B and C owe 0.0095 each and pay nothing yet:
    # the hub pays out 0.01 it has not collected.
    result = payment_instructions({"A": 19_000, "B": -9_500, "C": -9_500}, CNY, {})
    assert [(i.party, i.signed_micro) for i in result.instructions] == [("A", 10_000)]
    assert result.carry == {"A": 9_000, "B": -9_500, "C": -9_500}
    assert result.hub_rounding == -10_000 == -sum(i.signed_micro for i in result.instructions)
    # Next batch, nothing new: B and C still owe less than a minor unit each.
    again = payment_instructions({}, CNY, result.carry)
    assert again.instructions == ()
    assert again.hub_rounding == 0


def test_hub_accounts_get_no_instruction_and_carry_nothing() -> None:
    result = payment_instructions({"A": -1_000_000, HUB_FEES: 1_000_000}, CNY, {})
    assert [i.party for i in result.instructions] == ["A"]
    with pytest.raises(ValueError):
        payment_instructions({}, CNY, {HUB_FEES: 1})


@pytest.mark.parametrize(("digits", "micro"), [(0, 1_000_000), (2, 10_000), (3, 1_000), (6, 1)])
def test_minor_units(digits: int, micro: int) -> None:
    assert minor_unit_micro(digits) == micro


@pytest.mark.parametrize("digits", [-1, 7, True])
def test_bad_minor_units_are_refused(digits: int) -> None:
    with pytest.raises(ValueError):
        payment_instructions({"A": 1}, digits, {})


def test_zero_digit_currency_amounts_have_no_places() -> None:
    result = payment_instructions({"A": 12_999_999}, 0, {})
    assert result.instructions[0].amount == Decimal(12)
    assert str(result.instructions[0].amount) == "12"
    assert result.carry == {"A": 999_999}


# --- efficiency -----------------------------------------------------------------------------


def test_efficiency_examples() -> None:
    assert netting_efficiency(0, 0) == 0
    assert netting_efficiency(8, 2) == Decimal("0.75")
    assert netting_efficiency(8, 8) == 0
    assert netting_efficiency(3, 1) == Decimal("0.666667")  # 1 - 0.333333
    assert netting_efficiency(3, 2) == Decimal("0.333333")  # 1 - 0.666667
    assert netting_efficiency(2_000_000, 1) == Decimal("1.000000")  # 0.0000005 rounds to even 0
    assert netting_efficiency(2_000_000, 3) == Decimal("0.999998")  # 0.0000015 rounds to 0.000002


@pytest.mark.parametrize(("gross", "net"), [(1, 2), (-1, 0), (5, -1)])
def test_efficiency_refuses_impossible_figures(gross: int, net: int) -> None:
    with pytest.raises(ValueError):
        netting_efficiency(gross, net)


# --- properties -----------------------------------------------------------------------------

PARTIES = ["AIR", "BOOK", "CAFE", "DELI", "EAT", HUB_FEES]
MERCHANTS = [p for p in PARTIES if p not in HUB_ACCOUNTS]


amounts = st.integers(-10, 10) | st.integers(-(10**12), 10**12)


@st.composite
def entry_lists(draw: st.DrawFn) -> list[EntryLegs]:
    result = []
    for entry_id in range(draw(st.integers(0, 12))):
        legs = draw(
            st.lists(
                st.tuples(st.sampled_from(PARTIES), amounts),
                min_size=1,
                max_size=5,
            )
        )
        legs.append((draw(st.sampled_from(PARTIES)), -sum(a for _, a in legs)))
        result.append(EntryLegs(entry_id, tuple(legs)))
    return result


digits = st.integers(0, 6)


@st.composite
def carries(draw: st.DrawFn, minor_unit_digits: int) -> dict[str, int]:
    quantum = minor_unit_micro(minor_unit_digits)
    return draw(st.dictionaries(st.sampled_from(MERCHANTS), st.integers(-quantum + 1, quantum - 1)))


@given(entries=entry_lists())
def test_net_positions_sum_to_zero(entries: list[EntryLegs]) -> None:
    assert sum(net_positions(entries).values()) == 0


@given(entries=entry_lists())
def test_bilateral_obligations_reproduce_net_positions(entries: list[EntryLegs]) -> None:
    obligations = bilateral_obligations(entries)
    assert all(
        amount > 0 and debtor != creditor for (debtor, creditor), amount in obligations.items()
    )
    for party, position in net_positions(entries).items():
        owed_to = sum(a for (_, creditor), a in obligations.items() if creditor == party)
        owes = sum(a for (debtor, _), a in obligations.items() if debtor == party)
        assert owed_to - owes == position


@given(entries=entry_lists())
def test_each_entry_is_allocated_exactly_and_minimally(entries: list[EntryLegs]) -> None:
    for one in entries:
        nets = entry_positions(one)
        split = allocate(nets)
        debtors = [p for p, a in nets.items() if a < 0]
        creditors = [p for p, a in nets.items() if a > 0]
        assert len(split) <= max(0, len(debtors) + len(creditors) - 1)
        for party, amount in nets.items():
            paid = sum(a for d, _, a in split if d == party)
            received = sum(a for _, c, a in split if c == party)
            assert received - paid == amount
            assert paid == 0 or received == 0


@given(entries=entry_lists())
def test_net_bilateral_keeps_each_pairs_difference(entries: list[EntryLegs]) -> None:
    gross = bilateral_obligations(entries)
    net = net_bilateral(gross)
    for a in PARTIES:
        for b in PARTIES:
            assert net.get((a, b), 0) - net.get((b, a), 0) == gross.get((a, b), 0) - gross.get(
                (b, a), 0
            )
            assert not (net.get((a, b)) and net.get((b, a)))


@given(entries=entry_lists(), data=st.data())
def test_order_of_entries_and_legs_does_not_matter(
    entries: list[EntryLegs], data: st.DataObject
) -> None:
    shuffled = [
        EntryLegs(e.entry_id, tuple(data.draw(st.permutations(e.legs))))
        for e in data.draw(st.permutations(entries))
    ]
    assert bilateral_obligations(shuffled) == bilateral_obligations(entries)
    assert list(bilateral_obligations(shuffled)) == list(bilateral_obligations(entries))
    assert list(net_positions(shuffled).items()) == list(net_positions(entries).items())


@given(entries=entry_lists(), minor_unit_digits=digits, data=st.data())
def test_instructions_and_carry_reproduce_positions_exactly(
    entries: list[EntryLegs], minor_unit_digits: int, data: st.DataObject
) -> None:
    carried = data.draw(carries(minor_unit_digits))
    positions = net_positions(entries)
    result = payment_instructions(positions, minor_unit_digits, carried)
    quantum = minor_unit_micro(minor_unit_digits)
    signed = {i.party: i.signed_micro for i in result.instructions}
    for party in set(positions) | set(carried):
        if party in HUB_ACCOUNTS:
            assert party not in signed
            assert party not in result.carry
            continue
        total = positions.get(party, 0) + carried.get(party, 0)
        paid = signed.get(party, 0)
        assert paid + result.carry.get(party, 0) == total
        assert abs(result.carry.get(party, 0)) < quantum
        assert abs(paid) <= abs(total)  # toward zero: never more than owed either way
        assert paid * total >= 0
        assert paid % quantum == 0
    for instruction in result.instructions:
        assert instruction.amount_micro > 0
        assert instruction.amount == Decimal(instruction.amount_micro).scaleb(-6)
        assert instruction.amount.as_tuple().exponent == -minor_unit_digits
        assert (instruction.direction is Direction.TO_HUB) == (instruction.signed_micro < 0)
    assert 0 not in result.carry.values()
    assert list(result.carry) == sorted(result.carry)
    assert [i.party for i in result.instructions] == sorted(signed)
    assert sum(signed.values()) + result.hub_fees + result.hub_clearing + result.hub_rounding == 0
    assert result.hub_net == result.hub_fees + result.hub_clearing + result.hub_rounding


@given(entries=entry_lists(), minor_unit_digits=digits, data=st.data())
def test_netting_never_needs_more_payments_than_parties(
    entries: list[EntryLegs], minor_unit_digits: int, data: st.DataObject
) -> None:
    carried = data.draw(carries(minor_unit_digits))
    positions = net_positions(entries)
    result = payment_instructions(positions, minor_unit_digits, carried)
    merchants = (set(positions) | set(carried)) - HUB_ACCOUNTS
    assert len(result.instructions) <= len(merchants)
    assert len({i.party for i in result.instructions}) == len(result.instructions)


@given(batches=st.lists(entry_lists(), max_size=6), minor_unit_digits=digits)
def test_rounding_remainders_are_never_lost_across_batches(
    batches: list[list[EntryLegs]], minor_unit_digits: int
) -> None:
    carry: dict[str, int] = {}
    paid: dict[str, int] = {}
    owed: dict[str, int] = {}
    for batch in batches:
        positions = net_positions(batch)
        result = payment_instructions(positions, minor_unit_digits, carry)
        for party, amount in positions.items():
            owed[party] = owed.get(party, 0) + amount
        for instruction in result.instructions:
            paid[instruction.party] = paid.get(instruction.party, 0) + instruction.signed_micro
        carry = result.carry
    for party in MERCHANTS:
        assert paid.get(party, 0) + carry.get(party, 0) == owed.get(party, 0)


@given(entries=entry_lists())
def test_efficiency_is_between_zero_and_one(entries: list[EntryLegs]) -> None:
    gross = gross_total(bilateral_obligations(entries))
    net = net_total(net_positions(entries))
    assert 0 <= net <= gross
    efficiency = netting_efficiency(gross, net)
    assert 0 <= efficiency <= 1
    if gross:
        assert abs(efficiency - (1 - Decimal(net) / Decimal(gross))) <= Decimal("0.0000005")
