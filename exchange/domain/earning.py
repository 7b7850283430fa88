"""Earning rules of a point currency: how many points a purchase or an action earns.

A currency's rules form a :class:`RuleSet`. Four kinds of rule exist:

* :class:`SpendRule` -- points per amount spent ("1 point per 10 yuan"), rounded down;
* :class:`ActionRule` -- a fixed number of points for an action (sign-in, referral, review);
* :class:`Multiplier` -- a factor on purchase points inside a date and/or weekday window
  ("member day x1.5 on Wednesdays", "x3 from 2026-12-01 to 2026-12-03");
* :class:`Cap` -- the most points one member may earn per day or per month.

All points here are integers in the currency's *smallest unit* (a currency with scale 2 and
a rule of 100 points per unit awards 1.00 point per unit). Amounts spent are exact decimals
in the purchase currency. No float is ever used.

Evaluation order (see ``docs/domain-rules.md``):

1. base points: the sum over every spend rule of ``floor(spent / unit_amount) * points_per_unit``
   (each rule rounds down on its own), or the sum of the points of every action rule whose
   action matches;
2. multiplier (purchases only): the single highest applicable multiplier, never a product of
   several; the result ``floor(base * factor)``;
3. caps: the award is reduced so that neither the member's day total nor month total exceeds
   any cap; it may become 0.

Days, months and weekdays are those of the rule set's time zone (``Asia/Shanghai`` unless
told otherwise). Rule problems are reported all at once by :func:`validate_rules`;
bad inputs to the evaluation functions (negative amount, naive time) raise ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Asia/Shanghai"
"""Time zone of day, month and weekday boundaries when a rule set names none."""

MAX_FACTOR = Decimal(100)
"""The largest multiplier factor accepted."""

ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""Allowed action names: a lower-case letter, then up to 31 lower-case letters, digits, ``_``."""

CapPeriod = Literal["day", "month"]
"""The period of a cap."""

CAP_PERIODS: tuple[str, ...] = get_args(CapPeriod)


class RuleKind(StrEnum):
    """The kind of a rule, as recorded in :class:`AppliedRule`."""

    SPEND = "spend"
    ACTION = "action"
    MULTIPLIER = "multiplier"
    CAP = "cap"


@dataclass(frozen=True, kw_only=True)
class SpendRule:
    """``points_per_unit`` points for every full ``unit_amount`` spent, rounded down."""

    rule_id: str
    """Stable identifier given by the caller (the database id as text)."""
    name: str
    """Human-readable name, shown in statements and earn payloads."""
    points_per_unit: int
    """Points, in the currency's smallest unit, per full unit spent. Positive."""
    unit_amount: Decimal
    """The amount that earns ``points_per_unit`` (10 for "1 point per 10 yuan"). Positive."""

    kind: ClassVar[RuleKind] = RuleKind.SPEND
    """The rule's kind."""


@dataclass(frozen=True, kw_only=True)
class ActionRule:
    """A fixed number of points for an action such as ``sign_in``, ``referral`` or ``review``."""

    rule_id: str
    """Stable identifier given by the caller (the database id as text)."""
    name: str
    """Human-readable name."""
    action: str
    """The action's name, matching :data:`ACTION_NAME`."""
    points: int
    """Points, in the currency's smallest unit, awarded for the action. Positive."""

    kind: ClassVar[RuleKind] = RuleKind.ACTION
    """The rule's kind."""


@dataclass(frozen=True, kw_only=True)
class Multiplier:
    """A factor on purchase points, applicable inside its window.

    The window is the conjunction of an optional inclusive date range and an optional set of
    ISO weekdays (1 = Monday ... 7 = Sunday), both read in the rule set's time zone. A
    multiplier with neither applies every day.
    """

    rule_id: str
    """Stable identifier given by the caller (the database id as text)."""
    name: str
    """Human-readable name ("member day")."""
    factor: Decimal
    """The factor, ``0 < factor <= 100`` (1.5, 3, 5)."""
    starts_on: date | None = None
    """First local date on which the multiplier applies; ``None``: no lower bound."""
    ends_on: date | None = None
    """Last local date (inclusive) on which it applies; ``None``: no upper bound."""
    weekdays: frozenset[int] | None = None
    """ISO weekdays on which it applies (3 = Wednesday); ``None``: every weekday."""

    kind: ClassVar[RuleKind] = RuleKind.MULTIPLIER
    """The rule's kind."""

    def applies_on(self, day: date) -> bool:
        """Whether the local date ``day`` is inside this multiplier's window."""
        if self.starts_on is not None and day < self.starts_on:
            return False
        if self.ends_on is not None and day > self.ends_on:
            return False
        return self.weekdays is None or day.isoweekday() in self.weekdays


@dataclass(frozen=True, kw_only=True)
class Cap:
    """The most points one member may earn in one local day or month.

    Caps count the points awarded by this rule set (one currency, one awarding merchant).
    """

    rule_id: str
    """Stable identifier given by the caller (the database id as text)."""
    name: str
    """Human-readable name."""
    period: CapPeriod
    """``"day"`` or ``"month"``, in the rule set's time zone."""
    max_points: int
    """Maximum total, in the currency's smallest unit, per member per period. Positive."""

    kind: ClassVar[RuleKind] = RuleKind.CAP
    """The rule's kind."""


Rule = SpendRule | ActionRule | Multiplier | Cap
"""Any earning rule."""


@dataclass(frozen=True, kw_only=True)
class RuleSet:
    """The earning rules of one currency at one awarding merchant."""

    rules: tuple[Rule, ...] = ()
    """The rules, in the caller's order (ties between equal multipliers or caps go to the first)."""
    tz: str = DEFAULT_TZ
    """IANA time zone of the day, month and weekday boundaries."""

    @property
    def spend_rules(self) -> tuple[SpendRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, SpendRule))

    @property
    def action_rules(self) -> tuple[ActionRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, ActionRule))

    @property
    def multipliers(self) -> tuple[Multiplier, ...]:
        return tuple(r for r in self.rules if isinstance(r, Multiplier))

    @property
    def caps(self) -> tuple[Cap, ...]:
        return tuple(r for r in self.rules if isinstance(r, Cap))


@dataclass(frozen=True)
class RuleError:
    """One problem with a rule set; :func:`validate_rules` reports all of them."""

    code: str
    """Short upper-case code, e.g. ``BAD_FACTOR``."""
    rule_id: str | None
    """The offending rule, or ``None`` for a problem of the whole set (its time zone)."""
    message: str
    """Explanation for a person."""

    def __str__(self) -> str:
        where = f"rule {self.rule_id}" if self.rule_id is not None else "rule set"
        return f"{self.code} ({where}): {self.message}"


class InvalidRuleSet(ValueError):
    """Raised when evaluating a rule set that :func:`validate_rules` rejects."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors: tuple[RuleError, ...] = tuple(errors)


@dataclass(frozen=True)
class AppliedRule:
    """What one rule did to an award; the ``points`` of an award's rules sum to its points."""

    rule_id: str
    """The rule's identifier."""
    name: str
    """The rule's name."""
    kind: RuleKind
    """The rule's kind."""
    points: int
    """Points this rule contributed: base points for spend and action rules, the points the
    multiplier added, or minus the points a cap removed."""
    factor: Decimal | None = None
    """The factor, for a multiplier; ``None`` otherwise."""


@dataclass(frozen=True)
class EarnDecision:
    """The outcome of evaluating a rule set for one purchase or action."""

    points: int
    """Points to award, in the currency's smallest unit; never negative (may be 0)."""
    base_points: int
    """Points before multiplier and caps."""
    applied: tuple[AppliedRule, ...]
    """The rules that took part, in evaluation order: spend or action rules, then the
    multiplier (if one applied), then the cap that reduced the award (if any)."""
    capped_by: str | None = None
    """Rule id of the cap that reduced the award, or ``None``."""


# --- inputs ---------------------------------------------------------------------------------


def parse_amount(value: Decimal | int) -> Decimal:
    """An amount spent as an exact, finite, non-negative ``Decimal``.

    Accepts a ``Decimal`` or an ``int``; raises ``ValueError`` for anything else (floats,
    booleans and strings included: text is parsed at the edge, e.g. by
    :func:`exchange.domain.money.parse_decimal`), for NaN, infinities and negative amounts.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"amount must be a Decimal or int, not {type(value).__name__}")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"amount must be finite, not {amount}")
    if amount < 0:
        raise ValueError(f"amount must not be negative, not {amount}")
    return amount


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    return at


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return value


# --- validation -----------------------------------------------------------------------------


def _is_points(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_decimal(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def _check_spend(rule: SpendRule) -> list[RuleError]:
    errors = []
    if not _is_points(rule.points_per_unit):
        errors.append(
            RuleError("NON_POSITIVE_POINTS", rule.rule_id, "points_per_unit must be an integer > 0")
        )
    if not _is_positive_decimal(rule.unit_amount):
        errors.append(
            RuleError("BAD_UNIT_AMOUNT", rule.rule_id, "unit_amount must be a finite Decimal > 0")
        )
    return errors


def _check_action(rule: ActionRule) -> list[RuleError]:
    errors = []
    if not isinstance(rule.action, str) or ACTION_NAME.fullmatch(rule.action) is None:
        errors.append(
            RuleError(
                "BAD_ACTION_NAME",
                rule.rule_id,
                f"action {rule.action!r} must match {ACTION_NAME.pattern}",
            )
        )
    if not _is_points(rule.points):
        errors.append(
            RuleError("NON_POSITIVE_POINTS", rule.rule_id, "points must be an integer > 0")
        )
    return errors


def _check_multiplier(rule: Multiplier) -> list[RuleError]:
    errors = []
    if not _is_positive_decimal(rule.factor) or rule.factor > MAX_FACTOR:
        errors.append(
            RuleError("BAD_FACTOR", rule.rule_id, f"factor must be a Decimal in (0, {MAX_FACTOR}]")
        )
    if rule.starts_on is not None and rule.ends_on is not None and rule.ends_on < rule.starts_on:
        errors.append(RuleError("BAD_WINDOW", rule.rule_id, "ends_on is before starts_on"))
    if rule.weekdays is not None and (
        not rule.weekdays
        or any(
            isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7 for d in rule.weekdays
        )
    ):
        errors.append(
            RuleError(
                "BAD_WEEKDAY",
                rule.rule_id,
                "weekdays must be a non-empty set of ISO weekdays 1 (Monday) to 7 (Sunday)",
            )
        )
    return errors


def _check_cap(rule: Cap) -> list[RuleError]:
    errors = []
    if rule.period not in CAP_PERIODS:
        errors.append(
            RuleError("BAD_PERIOD", rule.rule_id, f"period must be one of {', '.join(CAP_PERIODS)}")
        )
    if not _is_points(rule.max_points):
        errors.append(
            RuleError("NON_POSITIVE_CAP", rule.rule_id, "max_points must be an integer > 0")
        )
    return errors


def _check_rule(rule: Rule) -> list[RuleError]:
    match rule:
        case SpendRule():
            return _check_spend(rule)
        case ActionRule():
            return _check_action(rule)
        case Multiplier():
            return _check_multiplier(rule)
        case Cap():
            return _check_cap(rule)
    return [RuleError("UNKNOWN_RULE", None, f"not an earning rule: {type(rule).__name__}")]


def _check_timezone(tz: str) -> list[RuleError]:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return [RuleError("BAD_TIMEZONE", None, f"unknown IANA time zone {tz!r}")]
    return []


def validate_rules(rules: RuleSet) -> list[RuleError]:
    """Every problem of a rule set, in rule order (the time zone's first); empty when valid.

    Codes: ``BAD_TIMEZONE``, ``EMPTY_RULE_ID``, ``DUPLICATE_RULE_ID``, ``NON_POSITIVE_POINTS``,
    ``BAD_UNIT_AMOUNT``, ``BAD_ACTION_NAME``, ``BAD_FACTOR``, ``BAD_WINDOW``, ``BAD_WEEKDAY``,
    ``BAD_PERIOD``, ``NON_POSITIVE_CAP``, ``UNKNOWN_RULE``.
    """
    errors = _check_timezone(rules.tz)
    seen: set[str] = set()
    for rule in rules.rules:
        rule_id = getattr(rule, "rule_id", None)
        if not isinstance(rule_id, str) or not rule_id.strip():
            errors.append(RuleError("EMPTY_RULE_ID", None, "every rule needs a non-empty rule_id"))
        elif rule_id in seen:
            errors.append(RuleError("DUPLICATE_RULE_ID", rule_id, "rule_id used twice"))
        else:
            seen.add(rule_id)
        errors.extend(_check_rule(rule))
    return errors


def _require_valid(rules: RuleSet) -> None:
    errors = validate_rules(rules)
    if errors:
        raise InvalidRuleSet(errors)


# --- time -----------------------------------------------------------------------------------


def local_date(tz: str, at: datetime) -> date:
    """The date of the aware time ``at`` in the IANA time zone ``tz``."""
    return _aware(at).astimezone(ZoneInfo(tz)).date()


def period_window(tz: str, at: datetime, period: CapPeriod) -> tuple[datetime, datetime]:
    """The half-open window ``[start, end)`` of the local day or month containing ``at``.

    Both bounds are aware datetimes in ``tz``: a caller sums the points already awarded in
    this window to obtain ``already_awarded_today`` or ``already_awarded_this_month``.
    """
    zone = ZoneInfo(tz)
    day = local_date(tz, at)
    if period == "day":
        first, following = day, day + timedelta(days=1)
    elif period == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"period must be one of {', '.join(CAP_PERIODS)}, not {period!r}")
    return datetime.combine(first, time(), zone), datetime.combine(following, time(), zone)


# --- evaluation -----------------------------------------------------------------------------


def spend_points(rule: SpendRule, spent: Decimal) -> int:
    """``floor(spent / unit_amount) * points_per_unit``, computed exactly."""
    spent_num, spent_den = parse_amount(spent).as_integer_ratio()
    unit_num, unit_den = rule.unit_amount.as_integer_ratio()
    units = (spent_num * unit_den) // (spent_den * unit_num)
    return units * rule.points_per_unit


def multiply(points: int, factor: Decimal) -> int:
    """``floor(points * factor)``, computed exactly (points are never negative here)."""
    num, den = factor.as_integer_ratio()
    return (points * num) // den


def applicable_multiplier(rules: RuleSet, at: datetime) -> Multiplier | None:
    """The highest multiplier whose window contains the local date of ``at``, if any.

    Several applicable multipliers never stack: the highest factor wins, the first in rule
    order among equal factors.
    """
    day = local_date(rules.tz, at)
    best: Multiplier | None = None
    for multiplier in rules.multipliers:
        if multiplier.applies_on(day) and (best is None or multiplier.factor > best.factor):
            best = multiplier
    return best


def _apply_caps(
    caps: tuple[Cap, ...], points: int, already_today: int, already_month: int
) -> tuple[int, Cap | None]:
    allowed, binding = points, None
    for cap in caps:
        used = already_today if cap.period == "day" else already_month
        room = max(0, cap.max_points - used)
        if room < allowed:
            allowed, binding = room, cap
    return allowed, binding


def _decide(
    rules: RuleSet,
    base: tuple[AppliedRule, ...],
    multiplier: Multiplier | None,
    already_today: int,
    already_month: int,
) -> EarnDecision:
    base_points = sum(a.points for a in base)
    applied = list(base)
    points = base_points
    if multiplier is not None:
        points = multiply(base_points, multiplier.factor)
        applied.append(
            AppliedRule(
                multiplier.rule_id,
                multiplier.name,
                RuleKind.MULTIPLIER,
                points - base_points,
                multiplier.factor,
            )
        )
    capped, cap = _apply_caps(rules.caps, points, already_today, already_month)
    if cap is not None:
        applied.append(AppliedRule(cap.rule_id, cap.name, RuleKind.CAP, capped - points))
    return EarnDecision(
        points=capped,
        base_points=base_points,
        applied=tuple(applied),
        capped_by=cap.rule_id if cap is not None else None,
    )


def evaluate_purchase(
    rules: RuleSet,
    spent: Decimal,
    at: datetime,
    already_awarded_today: int,
    already_awarded_this_month: int,
) -> EarnDecision:
    """The points a purchase of ``spent`` at the aware time ``at`` earns.

    ``already_awarded_today`` and ``already_awarded_this_month`` are the points this member
    was already awarded under this rule set in the local day and month of ``at`` (see
    :func:`period_window`). Raises :class:`InvalidRuleSet` for invalid rules and
    ``ValueError`` for a negative, NaN or infinite amount, a naive time or negative totals.
    """
    _require_valid(rules)
    amount = parse_amount(spent)
    _aware(at)
    today = _count("already_awarded_today", already_awarded_today)
    month = _count("already_awarded_this_month", already_awarded_this_month)
    base = tuple(
        AppliedRule(r.rule_id, r.name, RuleKind.SPEND, spend_points(r, amount))
        for r in rules.spend_rules
    )
    return _decide(rules, base, applicable_multiplier(rules, at), today, month)


def evaluate_action(
    rules: RuleSet,
    action: str,
    at: datetime,
    already_awarded_today: int,
    already_awarded_this_month: int,
) -> EarnDecision:
    """The points the action ``action`` at the aware time ``at`` earns.

    Every action rule for ``action`` contributes its points; multipliers do not apply to
    actions; caps do. An action no rule names earns 0 points with no applied rules. Raises
    :class:`InvalidRuleSet` for invalid rules and ``ValueError`` for a malformed action
    name, a naive time or negative totals.
    """
    _require_valid(rules)
    if not isinstance(action, str) or ACTION_NAME.fullmatch(action) is None:
        raise ValueError(f"action {action!r} must match {ACTION_NAME.pattern}")
    _aware(at)
    today = _count("already_awarded_today", already_awarded_today)
    month = _count("already_awarded_this_month", already_awarded_this_month)
    base = tuple(
        AppliedRule(r.rule_id, r.name, RuleKind.ACTION, r.points)
        for r in rules.action_rules
        if r.action == action
    )
    return _decide(rules, base, None, today, month)
