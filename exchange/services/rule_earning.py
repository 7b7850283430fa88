"""Earning by rules: a purchase or an action evaluated against the currency's rules.

The evaluation, the cap tallies and the ledger earn happen in one transaction, so caps
hold under concurrent earns (see docs/domain-rules.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from exchange.domain import earning, errors
from exchange.domain.earning import (
    AppliedRule,
    EarnDecision,
    RuleSet,
)
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.money import AmountError, parse_decimal
from exchange.ledger import idempotency
from exchange.ledger.accounts import Currency
from exchange.ledger.engine import Conn
from exchange.services import clock
from exchange.services.actors import Actor
from exchange.services.points import check_points_field, post_earn, usable_currency
from exchange.services.rules import decimal_text, plain_decimal, rule_set
from exchange.services.tx import Claim, Pool, transaction

MAX_ORDER_REF = 128

MAX_SPENT_DIGITS = 24
"""Digits (integer part) an amount spent may have."""


# --- earning by rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedRuleRecord:
    """What one rule contributed to an award (points in smallest units)."""

    rule_id: int
    name: str
    kind: str
    points: int
    factor: Decimal | None


@dataclass(frozen=True)
class Award:
    """The outcome of a rule-based earn."""

    currency_code: str
    scale: int
    points: int
    """Points awarded in smallest units; 0 when the rules gave nothing (then no entry)."""
    applied: tuple[AppliedRuleRecord, ...]
    capped_by: int | None
    """The cap rule that reduced the award, if any."""
    entry_id: int | None
    replayed: bool


def _applied_json(applied: Sequence[AppliedRule]) -> list[dict[str, Any]]:
    return [
        {
            "ruleId": int(a.rule_id),
            "name": a.name,
            "kind": str(a.kind),
            "points": a.points,
            "factor": None if a.factor is None else decimal_text(a.factor),
        }
        for a in applied
    ]


def _applied_records(raw: Sequence[dict[str, Any]]) -> tuple[AppliedRuleRecord, ...]:
    return tuple(
        AppliedRuleRecord(
            rule_id=int(a["ruleId"]),
            name=str(a["name"]),
            kind=str(a["kind"]),
            points=int(a["points"]),
            factor=None if a.get("factor") is None else Decimal(str(a["factor"])),
        )
        for a in raw
    )


async def lock_tallies(
    conn: Conn, member_id: int, currency_id: int, tz: str, at: datetime
) -> tuple[date, date, int, int]:
    """Lock (creating if needed) the member's day and month tallies; return their totals."""
    day = earning.period_window(tz, at, "day")[0].date()
    month = earning.period_window(tz, at, "month")[0].date()
    await conn.execute(
        "INSERT INTO earn_tallies (member_id, currency_id, period, period_start)"
        " VALUES (%s, %s, 'day', %s), (%s, %s, 'month', %s) ON CONFLICT DO NOTHING",
        (member_id, currency_id, day, member_id, currency_id, month),
    )
    cur = await conn.execute(
        "SELECT period, points FROM earn_tallies"
        " WHERE member_id = %s AND currency_id = %s"
        "   AND ((period = 'day' AND period_start = %s)"
        "     OR (period = 'month' AND period_start = %s))"
        " ORDER BY period FOR UPDATE",
        (member_id, currency_id, day, month),
    )
    totals = {str(p): int(n) for p, n in await cur.fetchall()}
    return day, month, totals["day"], totals["month"]


async def _add_tallies(
    conn: Conn, member_id: int, currency_id: int, day: date, month: date, points: int
) -> None:
    await conn.execute(
        "UPDATE earn_tallies SET points = points + %s WHERE member_id = %s AND currency_id = %s"
        " AND ((period = 'day' AND period_start = %s) OR (period = 'month' AND period_start = %s))",
        (points, member_id, currency_id, day, month),
    )


@dataclass(frozen=True)
class _Subject:
    kind: str
    amount_spent: Decimal | None = None
    order_ref: str | None = None
    action: str | None = None

    def details(self) -> dict[str, Any]:
        if self.kind == "purchase":
            assert self.amount_spent is not None
            out: dict[str, Any] = {
                "source": "purchase",
                "amountSpent": plain_decimal(self.amount_spent),
            }
            if self.order_ref is not None:
                out["orderRef"] = self.order_ref
            return out
        return {"source": "action", "action": self.action}


Decide = Callable[[RuleSet, datetime, int, int], EarnDecision]


async def _replay(conn: Conn, initiator: str, key: str) -> Award:
    cur = await conn.execute(
        "SELECT c.code, c.scale, a.points, a.applied, a.capped_by, a.entry_id"
        "  FROM rule_awards a JOIN currencies c ON c.id = a.currency_id"
        " WHERE a.initiator = %s AND a.idempotency_key = %s",
        (initiator, key),
    )
    row = await cur.fetchone()
    if row is None:  # the key was used by another kind of request (caught by the claim)
        raise Refusal(
            errors.IDEMPOTENCY_KEY_REUSED,
            "this idempotencyKey was already used for a different request",
            "idempotencyKey",
        )
    return Award(
        currency_code=str(row[0]),
        scale=int(row[1]),
        points=int(row[2]),
        applied=_applied_records(row[3]),
        capped_by=None if row[4] is None else int(row[4]),
        entry_id=None if row[5] is None else int(row[5]),
        replayed=True,
    )


async def _earn_by_rules(
    pool: Pool,
    actor: Actor,
    *,
    member_id: int,
    currency_code: str,
    idempotency_key: str,
    operation: str,
    request: dict[str, Any],
    subject: _Subject,
    decide: Decide,
) -> Award:
    if not actor.is_merchant or actor.merchant_id is None:
        raise Forbidden("only a merchant awards points")
    merchant_id = actor.merchant_id
    initiator = actor.initiator
    idempotency.check_key(idempotency_key)
    digest = idempotency.fingerprint(operation, request)
    claim = Claim(initiator, idempotency_key, digest)

    async def body(conn: Conn) -> Award:
        now = clock.now()
        currency: Currency = await usable_currency(conn, currency_code, now, issuing=True)
        rules = await rule_set(conn, currency.id)
        day, month, today, this_month = await lock_tallies(
            conn, member_id, currency.id, rules.tz, now
        )
        decision = decide(rules, now, today, this_month)
        applied = _applied_json(decision.applied)
        capped_by = None if decision.capped_by is None else int(decision.capped_by)
        entry_id: int | None = None
        if decision.points > 0:
            check_points_field(decision.points)
            details = {
                **subject.details(),
                "appliedRules": applied,
                **({"cappedBy": capped_by} if capped_by is not None else {}),
            }
            entry_id = await post_earn(
                conn,
                claim,
                merchant_id=merchant_id,
                member_id=member_id,
                currency=currency,
                points=decision.points,
                now=now,
                details=details,
            )
            await _add_tallies(conn, member_id, currency.id, day, month, decision.points)
        await conn.execute(
            "INSERT INTO rule_awards (initiator, idempotency_key, kind, merchant_id, member_id,"
            " currency_id, amount_spent, order_ref, action, points, applied, capped_by,"
            " entry_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                initiator,
                idempotency_key,
                subject.kind,
                merchant_id,
                member_id,
                currency.id,
                subject.amount_spent,
                subject.order_ref,
                subject.action,
                decision.points,
                json.dumps(applied),
                capped_by,
                entry_id,
            ),
        )
        return Award(
            currency_code=currency.code,
            scale=currency.scale,
            points=decision.points,
            applied=_applied_records(applied),
            capped_by=capped_by,
            entry_id=entry_id,
            replayed=False,
        )

    async def attempt(conn: Conn) -> Award | Refusal:
        prior = await idempotency.claim(conn, initiator, idempotency_key, operation, digest)
        if prior is not None:
            if prior.refusal is not None:
                return prior.refusal
            return await _replay(conn, initiator, idempotency_key)
        try:
            async with conn.transaction():  # a savepoint: a refusal leaves no trace
                return await body(conn)
        except Refusal as refusal:
            await idempotency.record_refusal(conn, initiator, idempotency_key, refusal)
            return refusal

    outcome = await transaction(pool, attempt)
    if isinstance(outcome, Refusal):
        raise outcome
    return outcome


def check_order_ref(order_ref: str | None) -> str | None:
    if order_ref is None:
        return None
    ref = order_ref.strip() if isinstance(order_ref, str) else ""
    if not 1 <= len(ref) <= MAX_ORDER_REF or not ref.isprintable():
        raise Refusal(
            "INVALID_REFERENCE",
            f"an order reference of 1 to {MAX_ORDER_REF} printable characters",
            "orderRef",
        )
    return ref


def check_spent(amount_spent: Decimal) -> Decimal:
    """A finite amount spent, ``>= 0``, of at most 24 integer digits."""
    try:
        spent = parse_decimal(plain_decimal(amount_spent), what="amountSpent")
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, "amountSpent") from exc
    if spent.adjusted() >= MAX_SPENT_DIGITS:
        raise Refusal("INVALID_AMOUNT", "amountSpent is too large", "amountSpent")
    return spent


async def earn_for_purchase(
    pool: Pool,
    actor: Actor,
    member_id: int,
    currency_code: str,
    amount_spent: Decimal,
    idempotency_key: str,
    order_ref: str | None = None,
) -> Award:
    """Award the points a purchase earns under the currency's active rules."""
    spent = check_spent(amount_spent)
    ref = check_order_ref(order_ref)
    request = {
        "member": member_id,
        "currency": currency_code,
        "spent": decimal_text(spent),
        "orderRef": ref,
    }

    def decide(rules: RuleSet, at: datetime, today: int, month: int) -> EarnDecision:
        return earning.evaluate_purchase(rules, spent, at, today, month)

    return await _earn_by_rules(
        pool,
        actor,
        member_id=member_id,
        currency_code=currency_code,
        idempotency_key=idempotency_key,
        operation="earn_purchase",
        request=request,
        subject=_Subject("purchase", amount_spent=spent, order_ref=ref),
        decide=decide,
    )


async def earn_for_action(
    pool: Pool,
    actor: Actor,
    member_id: int,
    currency_code: str,
    action: str,
    idempotency_key: str,
) -> Award:
    """Award the fixed points of an action (``sign_in``, ``review`` …) under the active rules.

    An action no active rule names is refused (``NOT_FOUND`` on ``action``).
    """
    if not isinstance(action, str) or earning.ACTION_NAME.fullmatch(action) is None:
        raise Refusal(
            "BAD_ACTION_NAME", f"action must match {earning.ACTION_NAME.pattern}", "action"
        )
    request = {"member": member_id, "currency": currency_code, "action": action}

    def decide(rules: RuleSet, at: datetime, today: int, month: int) -> EarnDecision:
        if not any(r.action == action for r in rules.action_rules):
            raise NotFound(f"earning rule for action {action!r}", "action")
        return earning.evaluate_action(rules, action, at, today, month)

    return await _earn_by_rules(
        pool,
        actor,
        member_id=member_id,
        currency_code=currency_code,
        idempotency_key=idempotency_key,
        operation="earn_action",
        request=request,
        subject=_Subject("action", action=action),
        decide=decide,
    )


async def awarded_in_period(
    conn: Conn, member_id: int, currency_id: int, period: str, period_start: date
) -> int:
    """Points a member was awarded by rules in one tallied period (0 when none)."""
    cur = await conn.execute(
        "SELECT points FROM earn_tallies WHERE member_id = %s AND currency_id = %s"
        " AND period = %s AND period_start = %s",
        (member_id, currency_id, period, period_start),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])
