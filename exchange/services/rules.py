"""Earning rules of a point currency, and the earns they decide.

The issuer of a currency writes its rules (:func:`create_rule`, :func:`update_rule`,
:func:`deactivate_rule`); every merchant that awards the currency by rules uses the active
ones, in rule id order, in the default time zone of :mod:`exchange.domain.earning`.

:func:`earn_for_purchase` and :func:`earn_for_action` decide the points *inside* the
transaction that posts the earn:

1. the idempotency key is claimed (a retry replays the stored decision);
2. the member's cap tallies for the local day and month are locked (``earn_tallies``, day
   row before month row, created on first use), so concurrent earns of one member in one
   currency queue there and each reads the totals the previous one left;
3. the rules are evaluated (:func:`exchange.domain.earning.evaluate_purchase` /
   :func:`~exchange.domain.earning.evaluate_action`);
4. a positive award is posted through :func:`exchange.services.points.post_earn` with the
   applied rules in the entry's details, and added to the tallies;
5. the decision is stored in ``rule_awards`` under the key.

A decision of 0 points (a small purchase, a reached cap) is not an error: it posts no entry
and answers ``points = 0`` with the rules that took part. Tallies count the points awarded
by rules only (not manual awards or adjustments) and a later reversal does not give cap
room back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from exchange.domain import earning
from exchange.domain.earning import (
    ActionRule,
    Cap,
    Multiplier,
    Rule,
    RuleError,
    RuleSet,
    SpendRule,
)
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.money import AmountError, parse_decimal, points_from_decimal
from exchange.ledger.engine import Conn
from exchange.services.actors import Actor
from exchange.services.tx import Pool, transaction

MAX_NAME = 200
MAX_ACTIVE_RULES = 100
"""The most active rules one currency may have."""

KIND_SPEND = "spend"
KIND_ACTION = "action"
KIND_MULTIPLIER = "multiplier"
KIND_CAP = "cap"

_FIELD_OF_CODE = {
    "NON_POSITIVE_POINTS": "points",
    "BAD_UNIT_AMOUNT": "unitAmount",
    "BAD_ACTION_NAME": "action",
    "BAD_FACTOR": "factor",
    "BAD_WINDOW": "endsOn",
    "BAD_WEEKDAY": "weekdays",
    "BAD_PERIOD": "period",
    "NON_POSITIVE_CAP": "maxPoints",
}


# --- drafts: rule parameters as a client gives them (points as decimals of the currency) --


@dataclass(frozen=True)
class SpendDraft:
    points_per_unit: Decimal
    """Points (in whole points of the currency, e.g. ``1`` or ``0.5``) per full unit spent."""
    unit_amount: Decimal


@dataclass(frozen=True)
class ActionDraft:
    action: str
    points: Decimal


@dataclass(frozen=True)
class MultiplierDraft:
    factor: Decimal
    starts_on: date | None = None
    ends_on: date | None = None
    weekdays: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CapDraft:
    period: str
    max_points: Decimal


RuleDraft = SpendDraft | ActionDraft | MultiplierDraft | CapDraft

_DRAFT_KIND: dict[type[Any], str] = {
    SpendDraft: KIND_SPEND,
    ActionDraft: KIND_ACTION,
    MultiplierDraft: KIND_MULTIPLIER,
    CapDraft: KIND_CAP,
}


class RuleRefusal(Refusal):
    """A rule was refused for one or more reasons (all of them in :attr:`problems`)."""

    def __init__(self, problems: Sequence[Refusal]) -> None:
        first = problems[0]
        super().__init__(first.code, first.message, first.field)
        self.problems: tuple[Refusal, ...] = tuple(problems)


# --- stored rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRule:
    """An earning rule as stored, with its parameters in smallest units."""

    id: int
    currency_code: str
    scale: int
    kind: str
    name: str
    params: dict[str, Any]
    active: bool
    created_at: datetime
    created_by: str
    updated_at: datetime | None

    def to_domain(self) -> Rule:
        return rule_from_params(str(self.id), self.name, self.kind, self.params)


def _opt_date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def rule_from_params(rule_id: str, name: str, kind: str, params: dict[str, Any]) -> Rule:
    """The domain rule of stored parameters."""
    if kind == KIND_SPEND:
        return SpendRule(
            rule_id=rule_id,
            name=name,
            points_per_unit=int(params["pointsPerUnit"]),
            unit_amount=Decimal(str(params["unitAmount"])),
        )
    if kind == KIND_ACTION:
        return ActionRule(
            rule_id=rule_id, name=name, action=str(params["action"]), points=int(params["points"])
        )
    if kind == KIND_MULTIPLIER:
        days = params.get("weekdays")
        return Multiplier(
            rule_id=rule_id,
            name=name,
            factor=Decimal(str(params["factor"])),
            starts_on=_opt_date(params.get("startsOn")),
            ends_on=_opt_date(params.get("endsOn")),
            weekdays=None if days is None else frozenset(int(d) for d in days),
        )
    if kind == KIND_CAP:
        period = str(params["period"])
        assert period in earning.CAP_PERIODS
        return Cap(
            rule_id=rule_id,
            name=name,
            period="day" if period == "day" else "month",
            max_points=int(params["maxPoints"]),
        )
    raise ValueError(f"unknown rule kind {kind!r}")


def params_of(rule: Rule) -> dict[str, Any]:
    """The JSON parameters of a domain rule: points as integers, decimals as strings."""
    match rule:
        case SpendRule():
            return {
                "pointsPerUnit": rule.points_per_unit,
                "unitAmount": decimal_text(rule.unit_amount),
            }
        case ActionRule():
            return {"action": rule.action, "points": rule.points}
        case Multiplier():
            return {
                "factor": decimal_text(rule.factor),
                "startsOn": None if rule.starts_on is None else rule.starts_on.isoformat(),
                "endsOn": None if rule.ends_on is None else rule.ends_on.isoformat(),
                "weekdays": None if rule.weekdays is None else sorted(rule.weekdays),
            }
        case Cap():
            return {"period": rule.period, "maxPoints": rule.max_points}
    raise ValueError(f"not an earning rule: {rule!r}")


def decimal_text(d: Decimal) -> str:
    """A decimal without trailing zeros or exponent: ``Decimal("1.50")`` → ``"1.5"``."""
    return format(d.normalize(), "f")


# --- validation ---------------------------------------------------------------------------


def check_name(name: str) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(clean) <= MAX_NAME or not clean.isprintable():
        raise Refusal("INVALID_NAME", f"a name of 1 to {MAX_NAME} printable characters", "name")
    return clean


def _points(value: Decimal, scale: int, field: str) -> int:
    try:
        return points_from_decimal(plain_decimal(value), scale)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, field) from exc


def plain_decimal(value: Decimal) -> str:
    return format(value, "f") if value.is_finite() else "NaN"


def _positive_decimal(value: Decimal, field: str, what: str) -> Decimal:
    try:
        d = parse_decimal(plain_decimal(value), what=what)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, field) from exc
    if d <= 0:
        raise Refusal("INVALID_AMOUNT", f"{what} must be greater than zero", field)
    return d


def draft_to_rule(draft: RuleDraft, *, rule_id: str, name: str, scale: int) -> Rule:
    """The domain rule of a client's draft; points converted to smallest units."""
    prefix = _DRAFT_KIND[type(draft)]  # the input field holding the draft
    match draft:
        case SpendDraft():
            return SpendRule(
                rule_id=rule_id,
                name=name,
                points_per_unit=_points(draft.points_per_unit, scale, f"{prefix}.pointsPerUnit"),
                unit_amount=_positive_decimal(
                    draft.unit_amount, f"{prefix}.unitAmount", "unitAmount"
                ),
            )
        case ActionDraft():
            return ActionRule(
                rule_id=rule_id,
                name=name,
                action=draft.action,
                points=_points(draft.points, scale, f"{prefix}.points"),
            )
        case MultiplierDraft():
            return Multiplier(
                rule_id=rule_id,
                name=name,
                factor=draft.factor,
                starts_on=draft.starts_on,
                ends_on=draft.ends_on,
                weekdays=None if draft.weekdays is None else frozenset(draft.weekdays),
            )
        case CapDraft():
            return Cap(
                rule_id=rule_id,
                name=name,
                period="day" if draft.period == "day" else "month",
                max_points=_points(draft.max_points, scale, f"{prefix}.maxPoints"),
            )
    raise ValueError(f"not a rule draft: {draft!r}")


def _check_draft(draft: RuleDraft) -> list[Refusal]:
    """Problems the domain validation cannot see (it would accept them silently)."""
    problems: list[Refusal] = []
    if isinstance(draft, MultiplierDraft):
        if draft.weekdays is not None and len(draft.weekdays) != len(set(draft.weekdays)):
            problems.append(
                Refusal("BAD_WEEKDAY", "each weekday at most once", "multiplier.weekdays")
            )
        if not draft.factor.is_finite():
            problems.append(Refusal("BAD_FACTOR", "factor must be finite", "multiplier.factor"))
    if isinstance(draft, CapDraft) and draft.period not in earning.CAP_PERIODS:
        problems.append(
            Refusal(
                "BAD_PERIOD", f"period is one of {', '.join(earning.CAP_PERIODS)}", "cap.period"
            )
        )
    return problems


def rule_problems(rules: RuleSet, new_id: str, kind: str) -> list[Refusal]:
    """The domain validation's problems with the rule ``new_id`` as refusals."""
    prefix = kind
    out: list[Refusal] = []
    for problem in earning.validate_rules(rules):
        if problem.rule_id not in (new_id, None):
            continue  # stored rules were valid when written
        out.append(_refusal_of(problem, prefix))
    return out


def _refusal_of(problem: RuleError, prefix: str) -> Refusal:
    field = _FIELD_OF_CODE.get(problem.code)
    return Refusal(problem.code, problem.message, f"{prefix}.{field}" if field else None)


# --- reading --------------------------------------------------------------------------------

_RULE_SQL = """
SELECT r.id, c.code, c.scale, r.kind, r.name, r.params, r.active, r.created_at, r.created_by,
       r.updated_at
  FROM earning_rules r JOIN currencies c ON c.id = r.currency_id
"""


def _stored(row: Any) -> StoredRule:
    return StoredRule(
        id=int(row[0]),
        currency_code=str(row[1]),
        scale=int(row[2]),
        kind=str(row[3]),
        name=str(row[4]),
        params=dict(row[5]),
        active=bool(row[6]),
        created_at=row[7],
        created_by=str(row[8]),
        updated_at=row[9],
    )


async def rules_of_currency(
    conn: Conn, currency_id: int, *, active_only: bool = True
) -> list[StoredRule]:
    cur = await conn.execute(
        _RULE_SQL + " WHERE r.currency_id = %s AND (r.active OR NOT %s) ORDER BY r.id",
        (currency_id, active_only),
    )
    return [_stored(row) for row in await cur.fetchall()]


async def rule_set(conn: Conn, currency_id: int) -> RuleSet:
    """The active rules of a currency, in id order."""
    stored = await rules_of_currency(conn, currency_id)
    return RuleSet(rules=tuple(r.to_domain() for r in stored))


async def list_rules(
    pool: Pool, actor: Actor, currency_code: str, *, include_inactive: bool = False
) -> list[StoredRule]:
    """The rules of a currency the calling merchant issues (unknown or foreign: not found)."""
    merchant_id = _merchant(actor)

    async def work(conn: Conn) -> list[StoredRule]:
        currency_id, _scale = await _own_currency(conn, merchant_id, currency_code)
        return await rules_of_currency(conn, currency_id, active_only=not include_inactive)

    return await transaction(pool, work)


async def get_rule(pool: Pool, actor: Actor, rule_id: int) -> StoredRule | None:
    """A rule of a currency the calling merchant issues, or ``None``."""
    merchant_id = _merchant(actor)

    async def work(conn: Conn) -> StoredRule | None:
        return await _own_rule(conn, merchant_id, rule_id, lock=False)

    return await transaction(pool, work)


# --- writing --------------------------------------------------------------------------------


def _merchant(actor: Actor) -> int:
    if not actor.is_merchant or actor.merchant_id is None:
        raise Forbidden("only a merchant manages earning rules")
    return actor.merchant_id


async def _own_currency(conn: Conn, merchant_id: int, code: str) -> tuple[int, int]:
    """Id and scale of a points currency ``merchant_id`` issues, locked for rule changes."""
    cur = await conn.execute(
        "SELECT id, scale FROM currencies WHERE code = %s AND issuer_id = %s AND kind = 'points'"
        " FOR NO KEY UPDATE",
        (code, merchant_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound("currency", "currency")
    return int(row[0]), int(row[1])


async def _own_rule(conn: Conn, merchant_id: int, rule_id: int, *, lock: bool) -> StoredRule | None:
    cur = await conn.execute(
        _RULE_SQL + " WHERE r.id = %s AND c.issuer_id = %s" + (" FOR UPDATE OF r" if lock else ""),
        (rule_id, merchant_id),
    )
    row = await cur.fetchone()
    return None if row is None else _stored(row)


async def create_rule(
    pool: Pool, actor: Actor, *, currency_code: str, name: str, draft: RuleDraft
) -> StoredRule:
    """The issuer adds an active earning rule to its currency."""
    merchant_id = _merchant(actor)
    clean = check_name(name)
    early = _check_draft(draft)
    if early:
        raise RuleRefusal(early)
    kind = _DRAFT_KIND[type(draft)]

    async def work(conn: Conn) -> StoredRule:
        currency_id, scale = await _own_currency(conn, merchant_id, currency_code)
        existing = await rules_of_currency(conn, currency_id)
        if len(existing) >= MAX_ACTIVE_RULES:
            raise Refusal(
                "INVALID_INPUT",
                f"a currency has at most {MAX_ACTIVE_RULES} active rules",
                "currency",
            )
        new_id = "new"
        rule = draft_to_rule(draft, rule_id=new_id, name=clean, scale=scale)
        candidate = RuleSet(rules=(*(r.to_domain() for r in existing), rule))
        problems = rule_problems(candidate, new_id, kind)
        if problems:
            raise RuleRefusal(problems)
        cur = await conn.execute(
            "INSERT INTO earning_rules (currency_id, kind, name, params, created_by)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (currency_id, kind, clean, json.dumps(params_of(rule)), actor.initiator),
        )
        row = await cur.fetchone()
        assert row is not None
        stored = await _own_rule(conn, merchant_id, int(row[0]), lock=False)
        assert stored is not None
        return stored

    return await transaction(pool, work)


async def update_rule(
    pool: Pool,
    actor: Actor,
    *,
    rule_id: int,
    name: str | None = None,
    draft: RuleDraft | None = None,
) -> StoredRule:
    """The issuer renames a rule or changes its parameters (not its kind).

    Earns already posted keep the record of the rule as it was when they were decided.
    """
    merchant_id = _merchant(actor)
    clean = None if name is None else check_name(name)
    if draft is not None:
        early = _check_draft(draft)
        if early:
            raise RuleRefusal(early)

    async def work(conn: Conn) -> StoredRule:
        stored = await _own_rule(conn, merchant_id, rule_id, lock=True)
        if stored is None:
            raise NotFound("earning rule", "ruleId")
        if draft is not None and _DRAFT_KIND[type(draft)] != stored.kind:
            raise Refusal("INVALID_INPUT", f"this rule is a {stored.kind} rule", "kind")
        new_name = clean or stored.name
        rule = (
            rule_from_params(str(stored.id), new_name, stored.kind, stored.params)
            if draft is None
            else draft_to_rule(draft, rule_id=str(stored.id), name=new_name, scale=stored.scale)
        )
        if stored.active:
            cur = await conn.execute(
                "SELECT currency_id FROM earning_rules WHERE id = %s", (stored.id,)
            )
            row = await cur.fetchone()
            assert row is not None
            others = [
                r.to_domain() for r in await rules_of_currency(conn, int(row[0])) if r.id != rule_id
            ]
            problems = rule_problems(RuleSet(rules=(*others, rule)), str(stored.id), stored.kind)
        else:
            problems = rule_problems(RuleSet(rules=(rule,)), str(stored.id), stored.kind)
        if problems:
            raise RuleRefusal(problems)
        await conn.execute(
            "UPDATE earning_rules SET name = %s, params = %s, updated_at = now(),"
            " updated_by = %s WHERE id = %s",
            (new_name, json.dumps(params_of(rule)), actor.initiator, stored.id),
        )
        updated = await _own_rule(conn, merchant_id, rule_id, lock=False)
        assert updated is not None
        return updated

    return await transaction(pool, work)


async def set_rule_active(pool: Pool, actor: Actor, *, rule_id: int, active: bool) -> StoredRule:
    """Deactivate (or reactivate) a rule; deactivating twice is harmless."""
    merchant_id = _merchant(actor)

    async def work(conn: Conn) -> StoredRule:
        stored = await _own_rule(conn, merchant_id, rule_id, lock=True)
        if stored is None:
            raise NotFound("earning rule", "ruleId")
        if stored.active != active:
            await conn.execute(
                "UPDATE earning_rules SET active = %s, updated_at = now(), updated_by = %s"
                " WHERE id = %s",
                (active, actor.initiator, rule_id),
            )
        updated = await _own_rule(conn, merchant_id, rule_id, lock=False)
        assert updated is not None
        return updated

    return await transaction(pool, work)


async def deactivate_rule(pool: Pool, actor: Actor, *, rule_id: int) -> StoredRule:
    return await set_rule_active(pool, actor, rule_id=rule_id, active=False)
