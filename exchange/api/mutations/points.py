"""Merchant mutations that move points: earn by purchase, award, redeem, reverse, adjust."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from strawberry import relay

from exchange.api.context import Info, require_actor
from exchange.api.errors import UserError
from exchange.api.mutations.common import (
    check_optional_text,
    check_text,
    customer,
    decode_id,
    entry_node,
    entry_row,
    errors_of,
    fixed_currency,
    global_id,
    mutation,
    outcome_entry,
    parse_money,
    parse_points,
    parse_signed_points,
)
from exchange.api.mutations.rule_types import AppliedRule
from exchange.api.nodes import Entry
from exchange.api.scalars import points_value
from exchange.domain import errors
from exchange.domain.errors import NotFound, Refusal
from exchange.services import points as points_service
from exchange.services import reversal, rule_earning
from exchange.services.actors import ADMIN, MERCHANT, Actor
from exchange.services.rule_earning import Award

MAX_REASON = 500
MAX_ORDER_REF = 128
IDEMPOTENCY_KEY_DESCRIPTION = (
    "1–128 of A–Z a–z 0–9 . _ : -; a retry with the same key replays the first result."
)


def _merchant_id(actor: Actor) -> int:
    assert actor.merchant_id is not None
    return actor.merchant_id


def _positive_spent(value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise Refusal(errors.INVALID_AMOUNT, "amountSpent must be greater than zero", "amountSpent")
    return rule_earning.check_spent(value)


# -- earn by purchase ------------------------------------------------------------------------


@strawberry.input(description="A purchase that earns points under the currency's rules.")
class EarnForPurchaseInput:
    customer_ref: str = strawberry.field(description="Your own reference for the customer.")
    currency: str = strawberry.field(description="The code of the point currency to award.")
    amount_spent: Decimal = strawberry.field(description='The purchase amount, e.g. "128.50".')
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY_DESCRIPTION)
    order_ref: str | None = strawberry.field(
        default=None, description="Your order number (kept on the entry)."
    )


@strawberry.type(description="Points awarded by rules. `points` may be 0: then no entry.")
class EarnForPurchasePayload:
    entry: Entry | None = strawberry.field(
        default=None, description="The earn entry; null when the rules gave 0 points."
    )
    points: Decimal | None = strawberry.field(default=None, description="Points awarded.")
    applied_rules: list[AppliedRule] = strawberry.field(
        default_factory=list, description="The rules that took part and what each contributed."
    )
    capped_by: relay.GlobalID | None = strawberry.field(
        default=None, description="The cap rule that reduced the award, if one did."
    )
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _award_payload(info: Info, award: Award) -> EarnForPurchasePayload:
    return EarnForPurchasePayload(
        entry=await entry_node(info, award.entry_id),
        points=points_value(award.points, award.scale),
        applied_rules=[AppliedRule.from_record(a, award.scale) for a in award.applied],
        capped_by=None if award.capped_by is None else global_id("EarningRule", award.capped_by),
        replayed=award.replayed,
    )


# -- award -------------------------------------------------------------------------------------


@strawberry.input(
    description="Award points for an action (`action`: points from the currency's action"
    " rules) or a given number of points with a `reason`. Exactly one of the two."
)
class AwardPointsInput:
    customer_ref: str
    currency: str
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY_DESCRIPTION)
    points: Decimal | None = strawberry.field(
        default=None, description="Points to award (with `reason`; not with `action`)."
    )
    action: str | None = strawberry.field(
        default=None, description="An action named by the currency's rules, e.g. `sign_in`."
    )
    reason: str | None = strawberry.field(default=None, description="Why, for a given amount.")


@strawberry.type(description="Points awarded.")
class AwardPointsPayload:
    entry: Entry | None = None
    points: Decimal | None = None
    applied_rules: list[AppliedRule] = strawberry.field(default_factory=list)
    capped_by: relay.GlobalID | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# -- redeem ------------------------------------------------------------------------------------


@strawberry.input(description="A member spends points with you (optionally as points + cash).")
class RedeemPointsInput:
    customer_ref: str
    currency: str
    points: Decimal = strawberry.field(description="The most points to use.")
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY_DESCRIPTION)
    order_total: Decimal | None = strawberry.field(
        default=None,
        description="The order's total (settlement currency): only the points needed to cover"
        " it are used, and `cashDue` is what is left to pay in cash.",
    )


@strawberry.type(description="Points redeemed.")
class RedeemPointsPayload:
    entry: Entry | None = None
    points_used: Decimal | None = None
    value: Decimal | None = strawberry.field(
        default=None, description="Value of the points used (settlement currency)."
    )
    cash_due: Decimal | None = strawberry.field(
        default=None, description="With `orderTotal`: what is left to pay in cash."
    )
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# -- reverse -----------------------------------------------------------------------------------


@strawberry.input(description="Undo one of your entries in whole or in part (a refund).")
class ReverseEntryInput:
    entry_id: strawberry.ID = strawberry.field(description="The entry's ID.")
    reason: str
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY_DESCRIPTION)
    points: Decimal | None = strawberry.field(
        default=None, description="Points to reverse; null: everything not yet reversed."
    )


@strawberry.type(description="The reversal entry.")
class ReverseEntryPayload:
    entry: Entry | None = None
    reversed_entry: Entry | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


# -- adjust ------------------------------------------------------------------------------------


@strawberry.input(description="A goodwill grant (positive) or a correction (negative).")
class AdjustPointsInput:
    customer_ref: str
    currency: str = strawberry.field(description="A currency you issue.")
    points: Decimal = strawberry.field(description='Signed: "50" grants, "-20" takes back.')
    reason: str
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY_DESCRIPTION)


@strawberry.type(description="The adjustment entry.")
class AdjustPointsPayload:
    entry: Entry | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _detail_points(details: dict[str, Any], scale: int) -> Decimal | None:
    raw = details.get("points")
    return points_value(abs(int(raw)), scale) if isinstance(raw, int) else None


def _detail_money(details: dict[str, Any], key: str) -> Decimal | None:
    raw = details.get(key)
    return Decimal(raw) if isinstance(raw, str) else None


@strawberry.type
class PointsMutations:
    @mutation(
        description="Award the points a purchase earns under the currency's earning rules"
        " (merchant). A purchase the rules give 0 points for is not an error: `points` is"
        ' "0" and `entry` null.'
    )
    async def earn_for_purchase(
        self,
        info: Info,
        input: EarnForPurchaseInput,
    ) -> EarnForPurchasePayload:
        actor = require_actor(info, MERCHANT)
        try:
            currency = await fixed_currency(info, input.currency)
            member_id = await customer(info, _merchant_id(actor), input.customer_ref)
            spent = _positive_spent(input.amount_spent)
            order_ref = check_optional_text(input.order_ref, "orderRef", max_len=MAX_ORDER_REF)
            award = await rule_earning.earn_for_purchase(
                info.context.pool,
                actor,
                member_id,
                currency.code,
                spent,
                input.idempotency_key,
                order_ref,
            )
        except Refusal as refusal:
            return EarnForPurchasePayload(user_errors=errors_of(refusal))
        return await _award_payload(info, award)

    @mutation(
        description="Award points for an action under the currency's action rules, or a given"
        " number of points with a reason (merchant). A merchant that does not issue the"
        " currency buys the points from its issuer."
    )
    async def award_points(
        self,
        info: Info,
        input: AwardPointsInput,
    ) -> AwardPointsPayload:
        actor = require_actor(info, MERCHANT)
        pool = info.context.pool
        try:
            currency = await fixed_currency(info, input.currency)
            member_id = await customer(info, _merchant_id(actor), input.customer_ref)
            if (input.action is None) == (input.reason is None):
                raise Refusal(
                    "INVALID_INPUT", "give either an action or a reason (with points)", "action"
                )
            if input.action is not None:
                if input.points is not None:
                    raise Refusal(
                        "INVALID_INPUT", "an action's points come from its rules", "points"
                    )
                action = check_text(input.action, "action", max_len=64)
                award = await rule_earning.earn_for_action(
                    pool, actor, member_id, currency.code, action, input.idempotency_key
                )
                made = await _award_payload(info, award)
                return AwardPointsPayload(
                    entry=made.entry,
                    points=made.points,
                    applied_rules=made.applied_rules,
                    capped_by=made.capped_by,
                    replayed=made.replayed,
                )
            assert input.reason is not None
            reason = check_text(input.reason, "reason", max_len=MAX_REASON).strip()
            if input.points is None:
                raise Refusal(errors.INVALID_AMOUNT, "points are required with a reason", "points")
            n = parse_points(input.points, currency.scale)
            outcome = await points_service.earn(
                pool,
                actor,
                member_id=member_id,
                currency_code=currency.code,
                points=n,
                idempotency_key=input.idempotency_key,
                details={"reason": reason},
            )
        except Refusal as refusal:
            return AwardPointsPayload(user_errors=errors_of(refusal))
        return AwardPointsPayload(
            entry=await outcome_entry(info, outcome),
            points=points_value(n, currency.scale),
            replayed=outcome.replayed,
        )

    @mutation(
        description="A member spends points with you, for goods or as the points part of a"
        " points + cash payment (merchant). Points of another issuer are reimbursed by it."
    )
    async def redeem_points(
        self,
        info: Info,
        input: RedeemPointsInput,
    ) -> RedeemPointsPayload:
        actor = require_actor(info, MERCHANT)
        try:
            currency = await fixed_currency(info, input.currency)
            member_id = await customer(info, _merchant_id(actor), input.customer_ref)
            n = parse_points(input.points, currency.scale)
            total = (
                None if input.order_total is None else parse_money(input.order_total, "orderTotal")
            )
            outcome = await points_service.redeem(
                info.context.pool,
                actor,
                member_id=member_id,
                currency_code=currency.code,
                points=n,
                idempotency_key=input.idempotency_key,
                order_total_micro=total,
            )
        except Refusal as refusal:
            return RedeemPointsPayload(user_errors=errors_of(refusal))
        row = await entry_row(info, outcome.entry_id)
        assert row is not None
        return RedeemPointsPayload(
            entry=await entry_node(info, outcome.entry_id),
            points_used=_detail_points(row.details, currency.scale),
            value=_detail_money(row.details, "value"),
            cash_due=_detail_money(row.details, "cashDue"),
            replayed=outcome.replayed,
        )

    @mutation(
        description="Reverse one of your entries in whole or in part, at its original amounts"
        " and rates (merchant, or admin for any entry). Reversing an earn whose points were"
        " spent leaves a points debt that later earns repay first."
    )
    async def reverse_entry(
        self,
        info: Info,
        input: ReverseEntryInput,
    ) -> ReverseEntryPayload:
        actor = require_actor(info, MERCHANT, ADMIN)
        try:
            entry_id = decode_id(str(input.entry_id), "Entry", "entryId")
            original = await entry_row(info, entry_id)
            if original is None or (actor.role != ADMIN and original.initiator != actor.initiator):
                raise NotFound("entry", "entryId")
            reason = check_text(input.reason, "reason", max_len=MAX_REASON)
            n: int | None = None
            if input.points is not None:
                code = original.details.get("currency", original.details.get("from"))
                if not isinstance(code, str):
                    raise Refusal(
                        errors.NOT_REVERSIBLE, f"a {original.kind} entry cannot be reversed"
                    )
                currency = await fixed_currency(info, code, "entryId")
                n = parse_points(input.points, currency.scale)
            outcome = await reversal.reverse(
                info.context.pool,
                actor,
                entry_id=entry_id,
                points=n,
                idempotency_key=input.idempotency_key,
                reason=reason,
            )
        except Refusal as refusal:
            return ReverseEntryPayload(user_errors=errors_of(refusal))
        return ReverseEntryPayload(
            entry=await entry_node(info, outcome.entry_id),
            reversed_entry=await entry_node(info, entry_id),
            replayed=outcome.replayed,
        )

    @mutation(
        description="Grant (positive) or take back (negative) points of a currency you issue,"
        " with a reason (merchant)."
    )
    async def adjust_points(
        self,
        info: Info,
        input: AdjustPointsInput,
    ) -> AdjustPointsPayload:
        actor = require_actor(info, MERCHANT)
        try:
            currency = await fixed_currency(info, input.currency)
            member_id = await customer(info, _merchant_id(actor), input.customer_ref)
            n = parse_signed_points(input.points, currency.scale)
            reason = check_text(input.reason, "reason", max_len=MAX_REASON)
            outcome = await points_service.adjust(
                info.context.pool,
                actor,
                member_id=member_id,
                currency_code=currency.code,
                points=n,
                reason=reason,
                idempotency_key=input.idempotency_key,
            )
        except Refusal as refusal:
            return AdjustPointsPayload(user_errors=errors_of(refusal))
        return AdjustPointsPayload(
            entry=await entry_node(info, outcome.entry_id), replayed=outcome.replayed
        )
