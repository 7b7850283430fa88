"""Member mutations: quote a conversion between two point currencies, then execute it."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from exchange.api.context import Info, require_actor
from exchange.api.errors import UserError
from exchange.api.mutations.common import (
    decode_id,
    entry_node,
    errors_of,
    fixed_currency,
    mutation,
    parse_points,
)
from exchange.api.nodes import Entry, Quote, load_quote
from exchange.domain.errors import Refusal
from exchange.services import conversion
from exchange.services.actors import MEMBER


@strawberry.input(description="Points of one currency to convert into another.")
class QuoteConversionInput:
    from_currency: str
    to_currency: str
    points: Decimal = strawberry.field(description="Points of `fromCurrency` to give up.")


@strawberry.type(description="A quote: both rates and the fee locked until `expiresAt`.")
class QuoteConversionPayload:
    quote: Quote | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="Execute a quote (once, before it expires).")
class ExecuteConversionInput:
    quote_id: strawberry.ID = strawberry.field(description="The quote's ID.")
    idempotency_key: str = strawberry.field(
        description="1–128 of A–Z a–z 0–9 . _ : -; a retry with the same key replays the result."
    )


@strawberry.type(description="The conversion entry.")
class ExecuteConversionPayload:
    entry: Entry | None = None
    quote: Quote | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ConversionMutations:
    @mutation(
        description="Quote converting your points of one currency into another (member). The"
        " quote locks both rates and the hub's fee for a short time."
    )
    async def quote_conversion(
        self,
        info: Info,
        input: QuoteConversionInput,
    ) -> QuoteConversionPayload:
        actor = require_actor(info, MEMBER)
        settings = info.context.settings
        try:
            source = await fixed_currency(info, input.from_currency, "fromCurrency")
            target = await fixed_currency(info, input.to_currency, "toCurrency")
            n = parse_points(input.points, source.scale)
            made = await conversion.create_quote(
                info.context.pool,
                actor,
                from_code=source.code,
                to_code=target.code,
                points=n,
                ttl_s=settings.quote_ttl_s,
                default_fee_bp=settings.conversion_fee_bp,
            )
        except Refusal as refusal:
            return QuoteConversionPayload(user_errors=errors_of(refusal))
        return QuoteConversionPayload(
            quote=Quote.build(
                quote_id=made.id,
                from_code=made.from_currency,
                to_code=made.to_currency,
                from_scale=source.scale,
                to_scale=target.scale,
                from_amount=made.from_amount,
                to_amount=made.to_amount,
                from_rate=made.from_rate,
                to_rate=made.to_rate,
                fee_bp=made.fee_bp,
                value_micro=made.value_micro,
                to_value_micro=made.to_value_micro,
                fee_micro=made.fee_micro,
                created_at=made.created_at,
                expires_at=made.expires_at,
                executed_entry_id=None,
            )
        )

    @mutation(description="Execute one of your quotes (member).")
    async def execute_conversion(
        self,
        info: Info,
        input: ExecuteConversionInput,
    ) -> ExecuteConversionPayload:
        actor = require_actor(info, MEMBER)
        try:
            quote_id = decode_id(str(input.quote_id), "Quote", "quoteId")
            outcome = await conversion.execute_quote(
                info.context.pool,
                actor,
                quote_id=quote_id,
                idempotency_key=input.idempotency_key,
            )
        except Refusal as refusal:
            return ExecuteConversionPayload(user_errors=errors_of(refusal))
        return ExecuteConversionPayload(
            entry=await entry_node(info, outcome.entry_id),
            quote=await load_quote(info, quote_id),
            replayed=outcome.replayed,
        )
