"""Earning rules: worked examples from the accounting spec and properties."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.domain.earning import (
    ActionRule,
    AppliedRule,
    Cap,
    CapPeriod,
    InvalidRuleSet,
    Multiplier,
    RuleKind,
    RuleSet,
    SpendRule,
    evaluate_action,
    evaluate_purchase,
    local_date,
    parse_amount,
    period_window,
    validate_rules,
)

SHANGHAI_NOON_TUESDAY = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
SHANGHAI_NOON_WEDNESDAY = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)

PER_TEN_YUAN = SpendRule(
    rule_id="1", name="1 per 10 yuan", points_per_unit=1, unit_amount=Decimal(10)
)
MEMBER_DAY = Multiplier(
    rule_id="2", name="member day", factor=Decimal("1.5"), weekdays=frozenset({3})
)
TRIPLE = Multiplier(
    rule_id="3",
    name="December triple",
    factor=Decimal(3),
    starts_on=date(2026, 12, 1),
    ends_on=date(2026, 12, 3),
)
SIGN_IN = ActionRule(rule_id="4", name="daily sign-in", action="sign_in", points=5)
DAY_CAP = Cap(rule_id="5", name="100 a day", period="day", max_points=100)
MONTH_CAP = Cap(rule_id="6", name="1000 a month", period="month", max_points=1000)


def purchase(rules: RuleSet, spent: str, at: datetime = SHANGHAI_NOON_TUESDAY) -> int:
    return evaluate_purchase(rules, Decimal(spent), at, 0, 0).points


# --- spend rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "points"),
    [("0", 0), ("9.99", 0), ("10", 1), ("10.00", 1), ("99.99", 9), ("100", 10), ("123.45", 12)],
)
def test_one_point_per_ten_yuan_rounds_down(spent: str, points: int) -> None:
    assert purchase(RuleSet(rules=(PER_TEN_YUAN,)), spent) == points


def test_one_point_per_yuan() -> None:
    rule = SpendRule(rule_id="1", name="1 per yuan", points_per_unit=1, unit_amount=Decimal(1))
    assert purchase(RuleSet(rules=(rule,)), "57.80") == 57


def test_points_are_in_the_smallest_unit() -> None:
    # A currency with scale 2: 100 smallest units are one point, so 1 point per 10 yuan
    # is 100 smallest units per 10 yuan.
    rule = SpendRule(rule_id="1", name="1 per 10", points_per_unit=100, unit_amount=Decimal(10))
    assert purchase(RuleSet(rules=(rule,)), "25") == 200


def test_several_spend_rules_add_up_each_rounding_down_on_its_own() -> None:
    third = SpendRule(rule_id="a", name="1 per 3", points_per_unit=1, unit_amount=Decimal(3))
    other = SpendRule(rule_id="b", name="1 per 3 again", points_per_unit=1, unit_amount=Decimal(3))
    decision = evaluate_purchase(
        RuleSet(rules=(third, other)), Decimal(5), SHANGHAI_NOON_TUESDAY, 0, 0
    )
    assert decision.points == 2  # 1 + 1, not floor(10 / 3) = 3
    assert [(a.rule_id, a.points) for a in decision.applied] == [("a", 1), ("b", 1)]


def test_a_purchase_records_every_spend_rule_even_when_it_earns_nothing() -> None:
    decision = evaluate_purchase(
        RuleSet(rules=(PER_TEN_YUAN,)), Decimal(5), SHANGHAI_NOON_TUESDAY, 0, 0
    )
    assert decision.points == 0
    assert [(a.rule_id, a.kind, a.points) for a in decision.applied] == [("1", RuleKind.SPEND, 0)]


# --- multipliers ----------------------------------------------------------------------------


def test_member_day_multiplies_by_one_and_a_half_on_wednesdays_rounding_down() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, MEMBER_DAY))
    wednesday = evaluate_purchase(rules, Decimal(150), SHANGHAI_NOON_WEDNESDAY, 0, 0)
    assert (wednesday.base_points, wednesday.points) == (15, 22)  # 22.5 rounded down
    assert [(a.rule_id, a.kind, a.points, a.factor) for a in wednesday.applied] == [
        ("1", RuleKind.SPEND, 15, None),
        ("2", RuleKind.MULTIPLIER, 7, Decimal("1.5")),
    ]
    assert purchase(rules, "150", SHANGHAI_NOON_TUESDAY) == 15


def test_weekday_is_read_in_the_rule_sets_time_zone() -> None:
    shanghai = RuleSet(rules=(PER_TEN_YUAN, MEMBER_DAY))
    utc = RuleSet(rules=(PER_TEN_YUAN, MEMBER_DAY), tz="UTC")
    tuesday_17_utc = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # Wednesday 01:00 in Shanghai
    assert purchase(shanghai, "100", tuesday_17_utc) == 15
    assert purchase(utc, "100", tuesday_17_utc) == 10
    wednesday_1630_utc = datetime(2026, 11, 25, 16, 30, tzinfo=UTC)  # Thursday 00:30 Shanghai
    assert purchase(shanghai, "100", wednesday_1630_utc) == 10
    assert purchase(utc, "100", wednesday_1630_utc) == 15


@pytest.mark.parametrize(
    ("day", "points"),
    [
        (date(2026, 11, 30), 10),
        (date(2026, 12, 1), 30),
        (date(2026, 12, 3), 30),
        (date(2026, 12, 4), 10),
    ],
)
def test_date_window_is_inclusive(day: date, points: int) -> None:
    at = datetime(day.year, day.month, day.day, 4, 0, tzinfo=UTC)
    assert purchase(RuleSet(rules=(PER_TEN_YUAN, TRIPLE)), "100", at) == points


def test_the_highest_applicable_multiplier_wins_they_never_stack() -> None:
    wednesday_in_window = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    for order in ((PER_TEN_YUAN, MEMBER_DAY, TRIPLE), (PER_TEN_YUAN, TRIPLE, MEMBER_DAY)):
        decision = evaluate_purchase(RuleSet(rules=order), Decimal(150), wednesday_in_window, 0, 0)
        assert decision.points == 45  # x3, not x4.5
        assert [a.rule_id for a in decision.applied] == ["1", "3"]


def test_multipliers_do_not_apply_to_actions() -> None:
    rules = RuleSet(rules=(SIGN_IN, MEMBER_DAY))
    assert evaluate_action(rules, "sign_in", SHANGHAI_NOON_WEDNESDAY, 0, 0).points == 5


# --- actions --------------------------------------------------------------------------------


def test_fixed_point_actions() -> None:
    referral = ActionRule(rule_id="7", name="referral", action="referral", points=50)
    rules = RuleSet(rules=(SIGN_IN, referral, PER_TEN_YUAN))
    sign_in = evaluate_action(rules, "sign_in", SHANGHAI_NOON_TUESDAY, 0, 0)
    assert (sign_in.points, sign_in.base_points) == (5, 5)
    assert [(a.rule_id, a.kind, a.points) for a in sign_in.applied] == [("4", RuleKind.ACTION, 5)]
    assert evaluate_action(rules, "referral", SHANGHAI_NOON_TUESDAY, 0, 0).points == 50


def test_an_action_without_a_rule_earns_nothing() -> None:
    decision = evaluate_action(RuleSet(rules=(SIGN_IN,)), "review", SHANGHAI_NOON_TUESDAY, 0, 0)
    assert (decision.points, decision.applied, decision.capped_by) == (0, (), None)


@pytest.mark.parametrize("action", ["", "Sign_in", "1st", "sign-in", "a" * 33])
def test_a_malformed_action_name_is_refused(action: str) -> None:
    with pytest.raises(ValueError):
        evaluate_action(RuleSet(rules=(SIGN_IN,)), action, SHANGHAI_NOON_TUESDAY, 0, 0)


# --- caps -----------------------------------------------------------------------------------


def test_day_cap_reduces_the_award_to_what_is_left() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, DAY_CAP))
    decision = evaluate_purchase(rules, Decimal(200), SHANGHAI_NOON_TUESDAY, 95, 95)
    assert (decision.base_points, decision.points, decision.capped_by) == (20, 5, "5")
    assert decision.applied[-1] == AppliedRule("5", "100 a day", RuleKind.CAP, -15)


def test_a_reached_cap_leaves_nothing() -> None:
    rules = RuleSet(rules=(SIGN_IN, DAY_CAP))
    decision = evaluate_action(rules, "sign_in", SHANGHAI_NOON_TUESDAY, 100, 100)
    assert (decision.points, decision.capped_by) == (0, "5")
    decision = evaluate_action(rules, "sign_in", SHANGHAI_NOON_TUESDAY, 130, 130)
    assert (decision.points, decision.capped_by) == (0, "5")


def test_month_cap_applies_when_it_is_the_tighter() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, DAY_CAP, MONTH_CAP))
    decision = evaluate_purchase(rules, Decimal(500), SHANGHAI_NOON_TUESDAY, 0, 990)
    assert (decision.points, decision.capped_by) == (10, "6")
    decision = evaluate_purchase(rules, Decimal(500), SHANGHAI_NOON_TUESDAY, 80, 500)
    assert (decision.points, decision.capped_by) == (20, "5")


def test_an_award_within_the_caps_is_not_capped() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, DAY_CAP, MONTH_CAP))
    decision = evaluate_purchase(rules, Decimal(500), SHANGHAI_NOON_TUESDAY, 50, 950)
    assert (decision.points, decision.capped_by) == (50, None)
    assert all(a.kind is not RuleKind.CAP for a in decision.applied)


def test_caps_apply_after_the_multiplier() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, MEMBER_DAY, DAY_CAP))
    decision = evaluate_purchase(rules, Decimal(1000), SHANGHAI_NOON_WEDNESDAY, 0, 0)
    assert (decision.base_points, decision.points, decision.capped_by) == (100, 100, "5")
    assert [a.points for a in decision.applied] == [100, 50, -50]


def test_period_windows_are_local_days_and_months() -> None:
    at = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # 2027-01-01 04:00 in Shanghai
    assert local_date("Asia/Shanghai", at) == date(2027, 1, 1)
    start, end = period_window("Asia/Shanghai", at, "day")
    assert (start.isoformat(), end.isoformat()) == (
        "2027-01-01T00:00:00+08:00",
        "2027-01-02T00:00:00+08:00",
    )
    start, end = period_window("Asia/Shanghai", at, "month")
    assert (start.isoformat(), end.isoformat()) == (
        "2027-01-01T00:00:00+08:00",
        "2027-02-01T00:00:00+08:00",
    )
    assert start <= at < end


# --- validation and inputs ------------------------------------------------------------------


def test_validate_rules_reports_every_problem() -> None:
    rules = RuleSet(
        tz="Mars/Olympus_Mons",
        rules=(
            SpendRule(rule_id="s", name="s", points_per_unit=0, unit_amount=Decimal(0)),
            SpendRule(rule_id="s", name="dup", points_per_unit=1, unit_amount=Decimal("NaN")),
            ActionRule(rule_id="a", name="a", action="Sign-In", points=-1),
            Multiplier(
                rule_id="m",
                name="m",
                factor=Decimal(101),
                starts_on=date(2026, 12, 3),
                ends_on=date(2026, 12, 1),
                weekdays=frozenset({0, 8}),
            ),
            Multiplier(rule_id="z", name="z", factor=Decimal(0), weekdays=frozenset()),
            Cap(rule_id="c", name="c", period="week", max_points=0),  # type: ignore[arg-type]
            Cap(rule_id="", name="no id", period="day", max_points=10),
        ),
    )
    codes = [(e.code, e.rule_id) for e in validate_rules(rules)]
    assert codes == [
        ("BAD_TIMEZONE", None),
        ("NON_POSITIVE_POINTS", "s"),
        ("BAD_UNIT_AMOUNT", "s"),
        ("DUPLICATE_RULE_ID", "s"),
        ("BAD_UNIT_AMOUNT", "s"),
        ("BAD_ACTION_NAME", "a"),
        ("NON_POSITIVE_POINTS", "a"),
        ("BAD_FACTOR", "m"),
        ("BAD_WINDOW", "m"),
        ("BAD_WEEKDAY", "m"),
        ("BAD_FACTOR", "z"),
        ("BAD_WEEKDAY", "z"),
        ("BAD_PERIOD", "c"),
        ("NON_POSITIVE_CAP", "c"),
        ("EMPTY_RULE_ID", None),
    ]
    assert all(e.code.isupper() and e.message for e in validate_rules(rules))


def test_a_valid_rule_set_has_no_errors() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, MEMBER_DAY, TRIPLE, SIGN_IN, DAY_CAP, MONTH_CAP))
    assert validate_rules(rules) == []
    assert (
        validate_rules(RuleSet(rules=(Multiplier(rule_id="x", name="x", factor=Decimal(100)),)))
        == []
    )


def test_evaluating_invalid_rules_raises_with_every_error() -> None:
    bad = SpendRule(rule_id="1", name="bad", points_per_unit=1, unit_amount=Decimal(0))
    with pytest.raises(InvalidRuleSet) as caught:
        evaluate_purchase(RuleSet(rules=(bad, bad)), Decimal(10), SHANGHAI_NOON_TUESDAY, 0, 0)
    assert [e.code for e in caught.value.errors] == [
        "BAD_UNIT_AMOUNT",
        "DUPLICATE_RULE_ID",
        "BAD_UNIT_AMOUNT",
    ]


@pytest.mark.parametrize(
    "value",
    [
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("-0.01"),
        -1,
        1.5,
        True,
        "10",
    ],
)
def test_parse_amount_refuses_what_is_not_a_finite_non_negative_decimal(value: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(value)  # type: ignore[arg-type]


def test_parse_amount_accepts_decimals_and_ints() -> None:
    assert parse_amount(Decimal("12.50")) == Decimal("12.50")
    assert parse_amount(7) == Decimal(7)
    assert parse_amount(Decimal("-0")) == 0


@pytest.mark.parametrize("spent", [Decimal("NaN"), Decimal("Infinity"), Decimal(-10)])
def test_purchase_refuses_bad_amounts(spent: Decimal) -> None:
    with pytest.raises(ValueError):
        evaluate_purchase(RuleSet(rules=(PER_TEN_YUAN,)), spent, SHANGHAI_NOON_TUESDAY, 0, 0)


def test_naive_times_and_negative_totals_are_refused() -> None:
    rules = RuleSet(rules=(PER_TEN_YUAN, SIGN_IN))
    with pytest.raises(ValueError):
        evaluate_purchase(rules, Decimal(10), datetime(2026, 11, 24, 12, 0), 0, 0)  # noqa: DTZ001
    with pytest.raises(ValueError):
        evaluate_purchase(rules, Decimal(10), SHANGHAI_NOON_TUESDAY, -1, 0)
    with pytest.raises(ValueError):
        evaluate_action(rules, "sign_in", SHANGHAI_NOON_TUESDAY, 0, -1)


# --- properties -----------------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False)
factors = st.decimals(
    min_value=Decimal("0.01"), max_value=100, places=2, allow_nan=False, allow_infinity=False
)
units = st.decimals(
    min_value=Decimal("0.01"), max_value=1000, places=2, allow_nan=False, allow_infinity=False
)
moments = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def spend_rules(draw: st.DrawFn, rule_id: str = "spend") -> SpendRule:
    return SpendRule(
        rule_id=rule_id,
        name=rule_id,
        points_per_unit=draw(st.integers(1, 1000)),
        unit_amount=draw(units),
    )


@given(rule=spend_rules(), spent=amounts, at=moments)
def test_spend_points_are_the_floor_of_the_exact_quotient(
    rule: SpendRule, spent: Decimal, at: datetime
) -> None:
    points = evaluate_purchase(RuleSet(rules=(rule,)), spent, at, 0, 0).points
    assert isinstance(points, int)
    assert points == math.floor(Fraction(spent) / Fraction(rule.unit_amount)) * rule.points_per_unit


@given(rule=spend_rules(), factor=factors, spent=amounts, at=moments)
def test_multiplied_points_are_integers_rounded_down(
    rule: SpendRule, factor: Decimal, spent: Decimal, at: datetime
) -> None:
    always = Multiplier(rule_id="m", name="m", factor=factor)
    decision = evaluate_purchase(RuleSet(rules=(rule, always)), spent, at, 0, 0)
    exact = decision.base_points * Fraction(factor)
    assert isinstance(decision.points, int)
    assert decision.points <= exact < decision.points + 1
    assert decision.applied[-1].factor == factor


PERIODS: tuple[CapPeriod, ...] = ("day", "month")


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    rules: list[SpendRule | ActionRule | Multiplier | Cap] = [draw(spend_rules("spend"))]
    rules.append(
        ActionRule(rule_id="act", name="act", action="sign_in", points=draw(st.integers(1, 500)))
    )
    for index, factor in enumerate(draw(st.lists(factors, max_size=3))):
        weekdays = draw(st.none() | st.frozensets(st.integers(1, 7), min_size=1))
        rules.append(Multiplier(rule_id=f"m{index}", name="m", factor=factor, weekdays=weekdays))
    for index, period in enumerate(draw(st.lists(st.sampled_from(PERIODS), max_size=3))):
        rules.append(
            Cap(rule_id=f"c{index}", name="c", period=period, max_points=draw(st.integers(1, 5000)))
        )
    tz = draw(st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York"]))
    return RuleSet(rules=tuple(rules), tz=tz)


events = st.lists(
    st.tuples(
        st.one_of(amounts, st.just("sign_in")),
        st.integers(0, 80 * 24 * 60),  # minutes after the start
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(rules=rule_sets(), start=moments, sequence=events)
def test_caps_are_never_exceeded_and_points_never_negative(
    rules: RuleSet, start: datetime, sequence: list[tuple[Decimal | str, int]]
) -> None:
    awarded: list[tuple[date, int]] = []
    for what, minutes in sorted(sequence, key=lambda e: e[1]):
        at = start + timedelta(minutes=minutes)
        day = local_date(rules.tz, at)
        today = sum(p for d, p in awarded if d == day)
        month = sum(p for d, p in awarded if (d.year, d.month) == (day.year, day.month))
        if isinstance(what, str):
            decision = evaluate_action(rules, what, at, today, month)
        else:
            decision = evaluate_purchase(rules, what, at, today, month)
        assert decision.points >= 0
        assert sum(a.points for a in decision.applied) == decision.points
        assert (decision.capped_by is None) == all(
            a.kind is not RuleKind.CAP for a in decision.applied
        )
        awarded.append((day, decision.points))
        for cap in rules.caps:
            total = today if cap.period == "day" else month
            assert total + decision.points <= max(cap.max_points, total)


@given(
    rules=rule_sets(),
    spent=amounts,
    at=moments,
    today=st.integers(0, 10_000),
    month=st.integers(0, 10_000),
)
def test_caps_only_ever_reduce_and_a_cap_binds_exactly(
    rules: RuleSet, spent: Decimal, at: datetime, today: int, month: int
) -> None:
    month = max(month, today)
    without_caps = RuleSet(
        rules=tuple(r for r in rules.rules if not isinstance(r, Cap)), tz=rules.tz
    )
    uncapped = evaluate_purchase(without_caps, spent, at, today, month)
    capped = evaluate_purchase(rules, spent, at, today, month)
    assert 0 <= capped.points <= uncapped.points
    rooms = [max(0, c.max_points - (today if c.period == "day" else month)) for c in rules.caps]
    assert capped.points == min([uncapped.points, *rooms])
    assert (capped.capped_by is not None) == (capped.points < uncapped.points)
