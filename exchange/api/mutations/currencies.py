"""Issuers: register a point currency, change its rate, stop or resume issuing it, and
write its earning rules."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import strawberry

from exchange.api.context import Info, require_actor
from exchange.api.errors import UserError
from exchange.api.fields import field
from exchange.api.mutations.common import (
    check_code,
    check_list,
    check_text,
    decode_id,
    errors_of,
    mutation,
    parse_rate,
    points_currency,
)
from exchange.api.mutations.rule_types import CapPeriod, EarningRule
from exchange.api.nodes import Currency, ExpiryKind, currency_by_id
from exchange.domain.errors import Refusal
from exchange.domain.expiry import ExpiryPolicy
from exchange.services import catalog, merchants, rules
from exchange.services.actors import MERCHANT
from exchange.services.rules import (
    ActionDraft,
    CapDraft,
    MultiplierDraft,
    RuleDraft,
    SpendDraft,
)
from exchange.services.tx import reading

MAX_WEEKDAYS = 7


@strawberry.input(description="When the points of a currency expire.")
class ExpiryInput:
    kind: ExpiryKind
    period: int | None = strawberry.field(
        default=None,
        description="DAYS: days after earning; MONTHS_END: the end of the Nth month after the"
        " month of earning; none for NEVER.",
    )


@strawberry.input(description="A new point currency that you issue.")
class RegisterCurrencyInput:
    code: str = strawberry.field(description="A–Z, then 1–15 of A–Z, 0–9 and _, e.g. `TEA`.")
    name: str
    rate: Decimal = strawberry.field(
        description='Value of one point in the settlement currency, e.g. "0.01".'
    )
    expiry: ExpiryInput
    scale: int = strawberry.field(default=0, description="Decimal places of a point (0–6).")


@strawberry.type
class CurrencyPayload:
    currency: Currency | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="A new rate for a currency you issue.")
class ChangeRateInput:
    currency: str
    rate: Decimal
    effective_at: datetime | None = strawberry.field(
        default=None, description="When it takes effect (now if null; never in the past)."
    )


@strawberry.type(description="The currency; `rateHistory` lists every change.")
class ChangeRatePayload:
    currency: Currency | None = None
    effective_at: datetime | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetCurrencyActiveInput:
    currency: str
    active: bool = strawberry.field(description="False stops issuing the currency's points.")


# -- earning rules -----------------------------------------------------------------------------


@strawberry.input(
    description="Points per amount spent: `floor(spent / unitAmount) × pointsPerUnit`."
)
class SpendRuleInput:
    points_per_unit: Decimal = strawberry.field(description="Points (in the currency's scale).")
    unit_amount: Decimal = strawberry.field(description='E.g. "10" for 1 point per 10 yuan.')


@strawberry.input(description="Fixed points for an action.")
class ActionRuleInput:
    action: str = strawberry.field(description="`[a-z][a-z0-9_]{0,31}`, e.g. `sign_in`.")
    points: Decimal


@strawberry.input(description="A factor on purchase points inside a window (the highest wins).")
class MultiplierRuleInput:
    factor: Decimal = strawberry.field(description='0 < factor ≤ 100, e.g. "1.5".')
    starts_on: date | None = None
    ends_on: date | None = None
    weekdays: list[int] | None = strawberry.field(
        default=None, description="ISO weekdays, 1 = Monday … 7 = Sunday."
    )


@strawberry.input(description="The most points a member may earn by rules per day or month.")
class CapRuleInput:
    period: CapPeriod
    max_points: Decimal


@strawberry.input(description="A new earning rule: give exactly one of the four kinds.")
class CreateEarningRuleInput:
    currency: str = strawberry.field(description="A currency you issue.")
    name: str
    spend: SpendRuleInput | None = None
    action: ActionRuleInput | None = None
    multiplier: MultiplierRuleInput | None = None
    cap: CapRuleInput | None = None


@strawberry.input(description="Rename a rule or change its parameters (not its kind).")
class UpdateEarningRuleInput:
    rule_id: strawberry.ID
    name: str | None = None
    spend: SpendRuleInput | None = None
    action: ActionRuleInput | None = None
    multiplier: MultiplierRuleInput | None = None
    cap: CapRuleInput | None = None


@strawberry.input
class DeactivateEarningRuleInput:
    rule_id: strawberry.ID


@strawberry.type
class EarningRulePayload:
    rule: EarningRule | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _draft(
    spend: SpendRuleInput | None,
    action: ActionRuleInput | None,
    multiplier: MultiplierRuleInput | None,
    cap: CapRuleInput | None,
    *,
    required: bool,
) -> RuleDraft | None:
    given = [x for x in (spend, action, multiplier, cap) if x is not None]
    if len(given) > 1 or (required and not given):
        raise Refusal(
            "INVALID_INPUT", "give exactly one of spend, action, multiplier or cap", "kind"
        )
    if spend is not None:
        return SpendDraft(points_per_unit=spend.points_per_unit, unit_amount=spend.unit_amount)
    if action is not None:
        check_text(action.action, "action.action", max_len=64)
        return ActionDraft(action=action.action, points=action.points)
    if multiplier is not None:
        days = multiplier.weekdays
        if days is not None:
            check_list(days, "multiplier.weekdays", max_len=MAX_WEEKDAYS)
        return MultiplierDraft(
            factor=multiplier.factor,
            starts_on=multiplier.starts_on,
            ends_on=multiplier.ends_on,
            weekdays=None if days is None else tuple(days),
        )
    if cap is not None:
        return CapDraft(period=cap.period.value, max_points=cap.max_points)
    return None


@strawberry.type
class CurrencyMutations:
    @mutation(description="Issue a new point currency at an initial rate (merchant).")
    async def register_currency(
        self,
        info: Info,
        input: RegisterCurrencyInput,
    ) -> CurrencyPayload:
        actor = require_actor(info, MERCHANT)
        try:
            check_code(input.code, "code")
            check_text(input.name, "name")
            rate = parse_rate(input.rate)
            currency_id = await catalog.register_currency(
                info.context.pool,
                actor,
                code=input.code,
                name=input.name,
                scale=input.scale,
                rate=rate,
                expiry=ExpiryPolicy(input.expiry.kind.value, input.expiry.period),
                stripes=info.context.settings.balance_stripes,
            )
        except Refusal as refusal:
            return CurrencyPayload(user_errors=errors_of(refusal))
        return CurrencyPayload(currency=await currency_by_id(info, currency_id))

    @mutation(
        description="Change the rate of a currency you issue, now or from a future time"
        " (merchant). Every change is kept: see `Currency.rateHistory`."
    )
    async def change_rate(
        self,
        info: Info,
        input: ChangeRateInput,
    ) -> ChangeRatePayload:
        actor = require_actor(info, MERCHANT)
        try:
            check_code(input.currency, "currency")
            rate = parse_rate(input.rate)
            at = await catalog.set_rate(
                info.context.pool,
                actor,
                code=input.currency,
                rate=rate,
                effective_at=input.effective_at,
            )
            row = await points_currency(info, input.currency)
        except Refusal as refusal:
            return ChangeRatePayload(user_errors=errors_of(refusal))
        return ChangeRatePayload(currency=Currency.from_row(row), effective_at=at)

    @mutation(
        description="Stop (false) or resume (true) issuing a currency you issue (merchant)."
        " Points already issued can still be redeemed and converted away."
    )
    async def set_currency_active(
        self,
        info: Info,
        input: SetCurrencyActiveInput,
    ) -> CurrencyPayload:
        actor = require_actor(info, MERCHANT)
        try:
            check_code(input.currency, "currency")
            currency_id = await merchants.set_currency_active(
                info.context.pool, actor, code=input.currency, active=input.active
            )
        except Refusal as refusal:
            return CurrencyPayload(user_errors=errors_of(refusal))
        return CurrencyPayload(currency=await currency_by_id(info, currency_id))

    @mutation(
        description="Add an earning rule to a currency you issue (merchant). Every problem is"
        " reported at once in `userErrors`."
    )
    async def create_earning_rule(
        self,
        info: Info,
        input: CreateEarningRuleInput,
    ) -> EarningRulePayload:
        actor = require_actor(info, MERCHANT)
        try:
            check_code(input.currency, "currency")
            check_text(input.name, "name")
            draft = _draft(input.spend, input.action, input.multiplier, input.cap, required=True)
            assert draft is not None
            stored = await rules.create_rule(
                info.context.pool, actor, currency_code=input.currency, name=input.name, draft=draft
            )
        except Refusal as refusal:
            return EarningRulePayload(user_errors=errors_of(refusal))
        return EarningRulePayload(rule=EarningRule.from_stored(stored))

    @mutation(
        description="Rename an earning rule or change its parameters (merchant). Earns already"
        " made keep the record of the rule as it was."
    )
    async def update_earning_rule(
        self,
        info: Info,
        input: UpdateEarningRuleInput,
    ) -> EarningRulePayload:
        actor = require_actor(info, MERCHANT)
        try:
            rule_id = decode_id(str(input.rule_id), "EarningRule", "ruleId")
            if input.name is not None:
                check_text(input.name, "name")
            draft = _draft(input.spend, input.action, input.multiplier, input.cap, required=False)
            stored = await rules.update_rule(
                info.context.pool, actor, rule_id=rule_id, name=input.name, draft=draft
            )
        except Refusal as refusal:
            return EarningRulePayload(user_errors=errors_of(refusal))
        return EarningRulePayload(rule=EarningRule.from_stored(stored))

    @mutation(
        description="Stop applying an earning rule (merchant). Deactivating twice is harmless."
    )
    async def deactivate_earning_rule(
        self,
        info: Info,
        input: DeactivateEarningRuleInput,
    ) -> EarningRulePayload:
        actor = require_actor(info, MERCHANT)
        try:
            rule_id = decode_id(str(input.rule_id), "EarningRule", "ruleId")
            stored = await rules.deactivate_rule(info.context.pool, actor, rule_id=rule_id)
        except Refusal as refusal:
            return EarningRulePayload(user_errors=errors_of(refusal))
        return EarningRulePayload(rule=EarningRule.from_stored(stored))


@strawberry.type
class EarningRuleQueries:
    @field(
        description="The earning rules of a currency, in the order they apply. Active rules are"
        " visible to every caller; the issuer may ask for inactive ones too."
    )
    async def earning_rules(
        self, info: Info, currency: str, include_inactive: bool = False
    ) -> list[EarningRule]:
        actor = require_actor(info)
        if len(currency) > 64:
            return []
        row = await info.context.loaders.currency_by_code.load(currency)
        if row is None or row.kind != "points":
            return []
        own = actor.is_merchant and actor.merchant_id == row.issuer_id
        async with reading(info.context.pool) as conn:
            stored = await rules.rules_of_currency(
                conn, row.id, active_only=not (include_inactive and own)
            )
        return [EarningRule.from_stored(r) for r in stored]
