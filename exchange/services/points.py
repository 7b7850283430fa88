"""Earn, redeem and adjust (spec operations 1, 2 and 6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.domain import errors
from exchange.domain.entries import Leg
from exchange.domain.errors import Forbidden, Refusal
from exchange.domain.lots import allocate, credit_split
from exchange.domain.money import (
    AmountError,
    check_points,
    floor_points_for_value,
    micro_to_decimal,
    rate_to_text,
)
from exchange.ledger import engine, express, idempotency
from exchange.ledger.accounts import (
    Currency,
    currency_by_code,
    currency_by_code_query,
    currency_from_row,
    issuer_liability_micro,
    settlement_account,
    settlement_asset,
    wallet,
)
from exchange.ledger.claims import Claimed, claim_and_lock_wallet
from exchange.ledger.engine import Conn, EntryDraft, NewLot, Posted
from exchange.ledger.facts import CurrencyFacts, Facts, facts_of
from exchange.ledger.idempotency import Prior
from exchange.services import clock
from exchange.services.actors import ADMIN, Actor
from exchange.services.expiry import expire_overdue
from exchange.services.express_batches import ALONE, batches_of
from exchange.services.tx import (
    Claim,
    Outcome,
    Pool,
    autocommitted,
    idempotent,
    idempotent_queued,
    reading,
)


@dataclass(frozen=True)
class Spend:
    """What a redemption actually took, for points-plus-cash checkouts."""

    points: int
    value_micro: int
    cash_due_micro: int


def check_points_field(n: int, field: str = "points") -> None:
    try:
        check_points(n)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, field) from exc


async def usable_currency(conn: Conn, code: str, at: datetime, *, issuing: bool) -> Currency:
    """The currency ``code``; refused when unknown, or (when issuing) inactive."""
    return check_usable(await currency_by_code(conn, code, at), code, issuing=issuing)


def check_usable(currency: Currency | None, code: str, *, issuing: bool) -> Currency:
    """``currency`` (looked up by ``code``) if usable; refused when unknown or inactive."""
    if currency is None:
        raise Refusal(errors.UNKNOWN_CURRENCY, f"no currency {code!r}", "currency")
    if currency.rate is None:
        raise Refusal(errors.CURRENCY_INACTIVE, f"{code} has no rate in force yet", "currency")
    if issuing and not (currency.active and currency.issuer_active):
        raise Refusal(errors.CURRENCY_INACTIVE, f"{code} is not issuing points", "currency")
    return currency


async def check_exposure(conn: Conn, currency: Currency, adding_micro: int, at: datetime) -> None:
    limit = currency.issuer_exposure_limit_micro
    if limit is None:
        return
    liability = await issuer_liability_micro(conn, currency.issuer_id, at)
    if liability + adding_micro > limit:
        raise Refusal(
            errors.EXPOSURE_LIMIT,
            f"{currency.issuer_code}'s outstanding liability would exceed its exposure limit"
            f" of {micro_to_decimal(limit)}",
            "points",
        )


async def credit_wallet(
    conn: Conn,
    member_id: int,
    currency: Currency,
    n: int,
    locked: tuple[int, int] | None = None,
) -> tuple[int, NewLot]:
    """Create-or-lock the member's wallet and plan the lot an ``n``-point credit opens.

    ``locked``: the wallet's ``(id, balance)`` when the caller has locked it already.
    """
    found = locked or await engine.lock_member_wallet(conn, member_id, currency.id)
    if found is None:
        created = await wallet(conn, member_id, currency.id, create=True)
        assert created is not None
        found = created, (await engine.lock_wallets(conn, [created]))[created]
    wallet_id, balance = found
    repay, _ = credit_split(balance, n)
    return wallet_id, NewLot(wallet_id, n, None, repays_debt=repay)


async def debit_wallet(
    conn: Conn, member_id: int, currency: Currency, n: int, now: datetime
) -> tuple[int, list[tuple[int, int]]]:
    """Lock the member's wallet in ``currency`` and plan an ``n``-point debit of it."""
    found = await engine.lock_member_wallet(conn, member_id, currency.id)
    if found is None:
        raise Refusal(errors.INSUFFICIENT_POINTS, f"no {currency.code} points to spend", "points")
    wallet_id, balance = found
    moves = await plan_debit(conn, wallet_id, balance, member_id, currency, n, now)
    return wallet_id, moves


async def plan_debit(
    conn: Conn,
    wallet_id: int,
    balance: int,
    member_id: int,
    currency: Currency,
    n: int,
    now: datetime,
) -> list[tuple[int, int]]:
    """Check ``n`` points are available in a locked wallet and plan the lot moves.

    Refuses with ``INSUFFICIENT_POINTS`` before writing anything; otherwise expires the
    wallet's overdue lots first and takes ``n`` points soonest-expiring first. Only the
    lots that takes are read (:func:`engine.lots_for_debit`).
    """
    lots = await engine.lots_for_debit(conn, wallet_id, n, now)
    live = [lot for lot in lots if not lot.overdue(now)]
    available = sum(lot.remaining for lot in live) if balance >= 0 else 0
    if available < n:
        raise Refusal(
            errors.INSUFFICIENT_POINTS,
            f"{n} {currency.code} points asked, {available} available",
            "points",
        )
    await expire_overdue(
        conn,
        wallet_id=wallet_id,
        member_id=member_id,
        currency_id=currency.id,
        lots=lots,
        now=now,
    )
    taken = allocate(live, n)
    assert sum(t for _, t in taken) == n
    return [(lot_id, -t) for lot_id, t in taken]


def _rates(*currencies: Currency) -> dict[str, str]:
    return {c.code: rate_to_text(c.rate) for c in currencies if c.rate is not None}


async def post_earn(
    conn: Conn,
    claim: Claim,
    *,
    merchant_id: int,
    member_id: int,
    currency: Currency,
    points: int,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> int:
    """Post an earn of ``points`` (already decided) in the caller's transaction.

    Shared by :func:`earn` and the rule-based earns of :mod:`exchange.services.rules`, which
    decide the points inside the same transaction (caps).
    """
    draft = await draft_earn(
        conn,
        claim,
        merchant_id=merchant_id,
        member_id=member_id,
        currency=currency,
        points=points,
        now=now,
        details=details,
    )
    return (await engine.post(conn, draft)).entry_id


async def draft_earn(
    conn: Conn,
    claim: Claim,
    *,
    merchant_id: int,
    member_id: int,
    currency: Currency,
    points: int,
    now: datetime,
    details: dict[str, Any] | None = None,
    wallet: tuple[int, int] | None = None,
    facts: Facts | None = None,
) -> EntryDraft:
    """The entry of an earn, its wallet locked (``wallet``: locked by the caller already).

    ``facts``: the database's cached fixed facts, to find settlement accounts without a
    statement.
    """
    v = currency.value(points)
    await check_exposure(conn, currency, v, now)
    wallet_id, lot = await credit_wallet(conn, member_id, currency, points, wallet)
    settlement = None
    if merchant_id != currency.issuer_id:
        if facts is None:
            asset, payer = await settlement_asset(conn), await settlement_account(conn, merchant_id)
        else:
            asset = await facts.settlement_asset(conn)
            payer = await facts.settlement_account(conn, merchant_id)
        settlement = (asset.id, payer)
    return earn_draft(
        claim,
        merchant_id=merchant_id,
        member_id=member_id,
        currency=currency,
        points=points,
        now=now,
        details=details,
        wallet_id=wallet_id,
        repays_debt=lot.repays_debt,
        settlement=settlement,
    )


def earn_draft(
    claim: Claim,
    *,
    merchant_id: int,
    member_id: int,
    currency: Currency,
    points: int,
    now: datetime,
    details: dict[str, Any] | None,
    wallet_id: int,
    repays_debt: int,
    settlement: tuple[int, int] | None,
) -> EntryDraft:
    """The entry of an earn into wallet ``wallet_id`` once everything it needs is known.

    ``settlement``: ``(settlement asset id, the awarding merchant's settlement account)``
    when the merchant is not the issuer (it then owes the issuer the points' value).
    """
    v = currency.value(points)
    lot = NewLot(wallet_id, points, currency.expiry.expires_at(now), repays_debt)
    legs = [
        Leg(currency.outstanding_id, currency.id, -points),
        Leg(wallet_id, currency.id, points),
    ]
    if merchant_id != currency.issuer_id:
        assert settlement is not None
        asset_id, payer = settlement
        legs += [Leg(payer, asset_id, -v), Leg(currency.issuer_settlement_id, asset_id, v)]
    return EntryDraft(
        kind="earn",
        initiator=claim.initiator,
        idempotency_key=claim.key,
        fingerprint=claim.fingerprint,
        effective_at=now,
        legs=legs,
        merchant_id=merchant_id,
        member_id=member_id,
        rates=_rates(currency),
        details={
            "currency": currency.code,
            "points": points,
            "value": micro_to_decimal(v),
            **(details or {}),
        },
        new_lots=[lot],
    )


async def earn(
    pool: Pool,
    actor: Actor,
    *,
    member_id: int,
    currency_code: str,
    points: int,
    idempotency_key: str,
    details: dict[str, Any] | None = None,
) -> Outcome:
    """Merchant ``actor`` awards ``points`` of a currency to a member.

    When the awarding merchant is not the issuer it buys the points: it owes the issuer
    their value at the current rate.
    """
    if not actor.is_merchant:
        raise Forbidden("only a merchant awards points")
    check_points_field(points)
    merchant_id = actor.merchant_id
    assert merchant_id is not None
    extra = details or {}
    request = {"member": member_id, "currency": currency_code, "points": points, **extra}

    now = clock.now()
    facts = facts_of(pool)
    known = await known_currency(pool, currency_code)
    if known is not None:
        e = _Earn(
            pool,
            actor,
            merchant_id,
            facts,
            known,
            member_id,
            points,
            idempotency_key,
            extra,
            request,
            now,
        )
        return await _earn_express(e) or await _earn_queued(e)

    async def body(conn: Conn, claim: Claim) -> int:
        # The currency was read with the claim (one round trip for both).
        currency = check_usable(currency_from_row(claim.read), currency_code, issuing=True)
        return await post_earn(
            conn,
            claim,
            merchant_id=merchant_id,
            member_id=member_id,
            currency=currency,
            points=points,
            now=now,
            details=extra,
        )

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="earn",
        request=request,
        body=body,
        read=currency_by_code_query(currency_code, now),
    )


async def known_currency(pool: Pool, code: str) -> CurrencyFacts | None:
    """The fixed facts of point currency ``code``, cached (``None``: no such currency)."""
    facts = facts_of(pool)
    found = facts.cached_currency(code)
    if found is None:
        async with reading(pool) as conn:
            found = await facts.currency(conn, code)
    return found


@dataclass(frozen=True)
class _Earn:
    """One :func:`earn` of a currency whose fixed facts are cached."""

    pool: Pool
    actor: Actor
    merchant_id: int
    facts: Facts
    known: CurrencyFacts
    member_id: int
    points: int
    idempotency_key: str
    extra: dict[str, Any]
    request: dict[str, Any]
    now: datetime

    async def draft(
        self, conn: Conn, claim: Claim, currency: Currency, wallet: tuple[int, int] | None
    ) -> EntryDraft:
        return await draft_earn(
            conn,
            claim,
            merchant_id=self.merchant_id,
            member_id=self.member_id,
            currency=currency,
            points=self.points,
            now=self.now,
            details=self.extra,
            wallet=wallet,
            facts=self.facts,
        )


async def _earn_queued(e: _Earn) -> Outcome:
    """:func:`earn` of a currency whose fixed facts are cached: two round trips.

    The first claims the key, reads the currency's state and locks the wallet; the second
    writes the entry and commits.
    """

    async def claim(conn: Conn, digest: bytes) -> tuple[Prior | None, Claimed | None]:
        prior, found = await claim_and_lock_wallet(
            conn,
            initiator=e.actor.initiator,
            key=e.idempotency_key,
            operation="earn",
            digest=digest,
            facts=e.known,
            member_id=e.member_id,
            at=e.now,
        )
        if found is not None:
            e.facts.saw_state(found.currency)
        return prior, found

    async def body(conn: Conn, claim: Claim, found: Claimed) -> engine.PendingPost:
        currency = check_usable(found.currency, e.known.code, issuing=True)
        return await engine.post_queued(conn, await e.draft(conn, claim, currency, found.wallet))

    return await idempotent_queued(
        e.pool,
        initiator=e.actor.initiator,
        key=e.idempotency_key,
        operation="earn",
        request=e.request,
        claim=claim,
        body=body,
    )


async def _earn_express(e: _Earn) -> Outcome | None:
    """:func:`earn` in one statement, built on the currency as last seen (see
    :mod:`exchange.ledger.express`), shared with the other express earns of the moment (see
    :mod:`exchange.services.express_batches`).

    ``None``: no usable guess, or the guess failed (nothing was written): take the ordinary
    path, which also stores any refusal under the key.
    """
    currency = e.facts.last_state(e.known.id)
    if (
        currency is None
        or not (currency.active and currency.issuer_active)
        or currency.rate is None
        or currency.issuer_exposure_limit_micro is not None
    ):
        return None
    idempotency.check_key(e.idempotency_key)
    claim = Claim(e.actor.initiator, e.idempotency_key, idempotency.fingerprint("earn", e.request))
    guess = express.Guess(currency_id=currency.id, rate=currency.rate)
    settlement = None
    if e.merchant_id != currency.issuer_id:
        settlement = e.facts.cached_settlement(e.merchant_id)
        if settlement is None:  # the single statement looks the accounts up (and caches them)
            return await autocommitted(e.pool, _Alone(e, claim, currency, guess).run)
    draft = earn_draft(
        claim,
        merchant_id=e.merchant_id,
        member_id=e.member_id,
        currency=currency,
        points=e.points,
        now=e.now,
        details=e.extra,
        wallet_id=express.WALLET,
        repays_debt=0,
        settlement=settlement,
    )
    try:
        result = await batches_of(e.pool).post(draft, guess, "earn")
    except express.Stale as stale:
        if stale.state:
            e.facts.forget_state(currency.id)
        return None
    if isinstance(result, Posted):
        return Outcome(entry_id=result.entry_id, replayed=False, posted=result)
    if result is ALONE:
        return await autocommitted(e.pool, _Alone(e, claim, currency, guess).run)
    assert result is None
    async with reading(e.pool) as conn:
        return await _replayed(conn, claim)


async def _replayed(conn: Conn, claim: Claim) -> Outcome:
    """The outcome stored under an express earn's key, claimed before it."""
    prior = await idempotency.prior(conn, claim.initiator, claim.key, "earn", claim.fingerprint)
    if prior.refusal is not None:
        raise prior.refusal
    assert prior.entry_id is not None
    return Outcome(entry_id=prior.entry_id, replayed=True)


@dataclass(frozen=True)
class _Alone:
    """An express earn in its own statement (``None``: the guess failed)."""

    e: _Earn
    claim: Claim
    currency: Currency
    guess: express.Guess

    async def run(self, conn: Conn) -> Outcome | None:
        draft = await self.e.draft(conn, self.claim, self.currency, (express.WALLET, 0))
        try:
            posted = await express.post_earn(conn, draft, "earn", self.guess)
        except express.Stale as stale:
            if stale.state:
                self.e.facts.forget_state(self.currency.id)
            return None
        if posted is not None:
            return Outcome(entry_id=posted.entry_id, replayed=False, posted=posted)
        return await _replayed(conn, self.claim)


async def redeem(
    pool: Pool,
    actor: Actor,
    *,
    member_id: int,
    currency_code: str,
    points: int,
    idempotency_key: str,
    order_total_micro: int | None = None,
    details: dict[str, Any] | None = None,
) -> Outcome:
    """A member spends points at merchant ``actor`` (goods, a discount, or points + cash).

    With ``order_total_micro`` the redemption covers at most the order: it takes the
    points needed (never more than ``points``) and records the cash still due. When the
    accepting merchant is not the issuer, the issuer reimburses it the points' value.
    """
    if not actor.is_merchant:
        raise Forbidden("only a merchant accepts points")
    check_points_field(points)
    if order_total_micro is not None and order_total_micro <= 0:
        raise Refusal(errors.INVALID_AMOUNT, "orderTotal must be greater than zero", "orderTotal")
    merchant_id = actor.merchant_id
    assert merchant_id is not None
    extra = details or {}
    request = {
        "member": member_id,
        "currency": currency_code,
        "points": points,
        "orderTotal": order_total_micro,
        **extra,
    }

    now = clock.now()

    async def body(conn: Conn, claim: Claim) -> int:
        currency = check_usable(currency_from_row(claim.read), currency_code, issuing=False)
        n = points
        cash_due = 0
        if order_total_micro is not None:
            assert currency.rate is not None
            needed = floor_points_for_value(order_total_micro, currency.rate, currency.scale)
            if currency.value(needed) < order_total_micro:
                needed += 1  # the last point covers the rest of the order
            n = min(points, needed)
            cash_due = max(0, order_total_micro - currency.value(n))
        v = currency.value(n)
        wallet_id, moves = await debit_wallet(conn, member_id, currency, n, now)
        legs = [Leg(wallet_id, currency.id, -n), Leg(currency.outstanding_id, currency.id, n)]
        if merchant_id != currency.issuer_id:
            asset = await settlement_asset(conn)
            payee = await settlement_account(conn, merchant_id)
            legs += [Leg(currency.issuer_settlement_id, asset.id, -v), Leg(payee, asset.id, v)]
        info: dict[str, Any] = {
            "currency": currency.code,
            "points": n,
            "value": micro_to_decimal(v),
            **extra,
        }
        if order_total_micro is not None:
            info["orderTotal"] = micro_to_decimal(order_total_micro)
            info["cashDue"] = micro_to_decimal(cash_due)
        posted = await engine.post(
            conn,
            EntryDraft(
                kind="redeem",
                initiator=claim.initiator,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                effective_at=now,
                legs=legs,
                merchant_id=merchant_id,
                member_id=member_id,
                rates=_rates(currency),
                details=info,
                lot_moves=moves,
            ),
        )
        return posted.entry_id

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="redeem",
        request=request,
        body=body,
        read=currency_by_code_query(currency_code, now),
    )


async def adjust(
    pool: Pool,
    actor: Actor,
    *,
    member_id: int,
    currency_code: str,
    points: int,
    reason: str,
    idempotency_key: str,
) -> Outcome:
    """A goodwill grant (``points`` > 0) or a correction (< 0), with a reason.

    The issuer adjusts its own currency with no settlement flow. The hub (admin) may adjust
    any currency: it then pays the issuer the value from its fee revenue (or is paid back).
    """
    if actor.role not in (ADMIN,) and not actor.is_merchant:
        raise Forbidden("only the issuer or the hub adjusts points")
    if points == 0:
        raise Refusal(errors.INVALID_AMOUNT, "an adjustment moves a non-zero amount", "points")
    check_points_field(abs(points))
    reason = reason.strip()
    if not 1 <= len(reason) <= 500 or not reason.isprintable():
        raise Refusal("INVALID_REASON", "a reason of 1 to 500 printable characters", "reason")
    request = {"member": member_id, "currency": currency_code, "points": points, "reason": reason}

    async def body(conn: Conn, claim: Claim) -> int:
        now = clock.now()
        currency = await usable_currency(conn, currency_code, now, issuing=points > 0)
        if actor.is_merchant and actor.merchant_id != currency.issuer_id:
            raise Refusal("FORBIDDEN", "a merchant adjusts only its own currency", "currency")
        n = abs(points)
        v = currency.value(n)
        lots: list[NewLot] = []
        moves: list[tuple[int, int]] = []
        if points > 0:
            wallet_id, lot = await credit_wallet(conn, member_id, currency, n)
            lots = [NewLot(wallet_id, n, currency.expiry.expires_at(now), lot.repays_debt)]
            sign = 1
        else:
            wallet_id, moves = await debit_wallet(conn, member_id, currency, n, now)
            sign = -1
        legs = [
            Leg(currency.outstanding_id, currency.id, -sign * n),
            Leg(wallet_id, currency.id, sign * n),
        ]
        if actor.role == ADMIN:
            asset = await settlement_asset(conn)
            legs += [
                Leg(asset.fees_id, asset.id, -sign * v),
                Leg(currency.issuer_settlement_id, asset.id, sign * v),
            ]
        posted = await engine.post(
            conn,
            EntryDraft(
                kind="adjust",
                initiator=claim.initiator,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                effective_at=now,
                legs=legs,
                merchant_id=currency.issuer_id,
                member_id=member_id,
                rates=_rates(currency),
                details={
                    "currency": currency.code,
                    "points": points,
                    "value": micro_to_decimal(v),
                    "reason": reason,
                    "by": actor.role,
                },
                new_lots=lots,
                lot_moves=moves,
            ),
        )
        return posted.entry_id

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="adjust",
        request=request,
        body=body,
    )
