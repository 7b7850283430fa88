"""Settle (spec operation 7): a payment between the hub and a merchant, confirmed."""

from __future__ import annotations

from exchange.domain import errors
from exchange.domain.entries import Leg
from exchange.domain.errors import Forbidden, Refusal
from exchange.domain.money import MAX_POINTS, micro_to_decimal
from exchange.ledger import engine
from exchange.ledger.accounts import settlement_account, settlement_asset
from exchange.ledger.engine import Conn, EntryDraft
from exchange.services import clock
from exchange.services.actors import ADMIN, FINANCE, Actor
from exchange.services.tx import Claim, Outcome, Pool, idempotent

PAID_TO_MERCHANT = "paid_to_merchant"
PAID_BY_MERCHANT = "paid_by_merchant"


async def settle(
    pool: Pool,
    actor: Actor,
    *,
    merchant_id: int,
    direction: str,
    amount_micro: int,
    external_ref: str,
    idempotency_key: str,
    batch_id: int | None = None,
) -> Outcome:
    """Record a confirmed payment: the merchant's position moves toward zero.

    ``paid_to_merchant``: the hub paid the merchant what it was owed, so
    ``settlement(M) −x, hub:clearing +x``; ``paid_by_merchant`` is the opposite.
    """
    if actor.role not in (FINANCE, ADMIN):
        raise Forbidden("only finance confirms payments")
    if direction not in (PAID_TO_MERCHANT, PAID_BY_MERCHANT):
        raise Refusal("INVALID_DIRECTION", "direction must be paid_to_merchant or paid_by_merchant")
    if not 0 < amount_micro <= MAX_POINTS * 1000:
        raise Refusal(errors.INVALID_AMOUNT, "the amount must be greater than zero", "amount")
    ref = external_ref.strip()
    if not 1 <= len(ref) <= 200 or not ref.isprintable():
        raise Refusal(
            "INVALID_REFERENCE", "an external reference of 1 to 200 characters", "externalRef"
        )
    request = {
        "merchant": merchant_id,
        "direction": direction,
        "amount": amount_micro,
        "ref": ref,
        "batch": batch_id,
    }

    async def body(conn: Conn, claim: Claim) -> int:
        asset = await settlement_asset(conn)
        try:
            account = await settlement_account(conn, merchant_id)
        except LookupError as exc:
            raise Refusal("NOT_FOUND", "merchant not found", "merchantId") from exc
        sign = -1 if direction == PAID_TO_MERCHANT else 1
        posted = await engine.post(
            conn,
            EntryDraft(
                kind="settle",
                initiator=claim.initiator,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                effective_at=clock.now(),
                legs=[
                    Leg(account, asset.id, sign * amount_micro),
                    Leg(asset.clearing_id, asset.id, -sign * amount_micro),
                ],
                merchant_id=merchant_id,
                details={
                    "direction": direction,
                    "amount": micro_to_decimal(amount_micro),
                    "externalRef": ref,
                    **({"batch": batch_id} if batch_id is not None else {}),
                },
            ),
        )
        return posted.entry_id

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="settle",
        request=request,
        body=body,
    )
