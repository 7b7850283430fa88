"""The hub's catalogue: bootstrap, merchants, point currencies and their rates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from psycopg import errors as pg_errors

from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.expiry import ExpiryPolicy
from exchange.domain.money import MAX_SCALE, AmountError, check_rate
from exchange.ledger.accounts import (
    HUB_CLEARING,
    HUB_FEES,
    OUTSTANDING,
    SETTLEMENT,
    create_account,
)
from exchange.ledger.engine import Conn
from exchange.services import clock
from exchange.services.actors import ADMIN, Actor
from exchange.services.tx import Pool, transaction

CURRENCY_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
MERCHANT_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
ISO_4217_RE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Merchant:
    id: int
    code: str
    name: str
    status: str
    exposure_limit_micro: int | None


async def bootstrap(conn: Conn, settlement_code: str, stripes: int) -> int:
    """Create the settlement currency and the hub's accounts if missing (idempotent)."""
    if not ISO_4217_RE.match(settlement_code):
        raise ValueError(f"settlement currency {settlement_code!r} is not an ISO 4217 code")
    cur = await conn.execute("SELECT id, code FROM currencies WHERE kind = 'settlement'")
    row = await cur.fetchone()
    if row is not None and row[1] != settlement_code:
        raise ValueError(f"the ledger settles in {row[1]}; it cannot switch to {settlement_code}")
    if row is None:
        cur = await conn.execute(
            "INSERT INTO currencies (code, name, kind, scale) VALUES (%s, %s, 'settlement', 6)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (settlement_code, f"{settlement_code} (settlement)"),
        )
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute("SELECT id FROM currencies WHERE kind = 'settlement'")
            row = await cur.fetchone()
    assert row is not None
    asset_id = int(row[0])
    await create_account(conn, HUB_FEES, asset_id, stripes=stripes)
    await create_account(conn, HUB_CLEARING, asset_id, stripes=stripes)
    return asset_id


def _require_admin(actor: Actor) -> None:
    if actor.role != ADMIN:
        raise Forbidden("only the hub administrator does this")


async def create_merchant(
    pool: Pool,
    actor: Actor,
    *,
    code: str,
    name: str,
    stripes: int,
    exposure_limit_micro: int | None = None,
) -> Merchant:
    _require_admin(actor)
    if not MERCHANT_CODE_RE.match(code):
        raise Refusal("INVALID_CODE", "a merchant code is 2-32 of a-z, 0-9 and '-'", "code")
    name = name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise Refusal("INVALID_NAME", "a name of 1 to 200 printable characters", "name")
    if exposure_limit_micro is not None and exposure_limit_micro < 0:
        raise Refusal("INVALID_AMOUNT", "the exposure limit cannot be negative", "exposureLimit")

    async def work(conn: Conn) -> Merchant:
        cur = await conn.execute(
            "INSERT INTO merchants (code, name, exposure_limit_micro) VALUES (%s, %s, %s)"
            " ON CONFLICT (code) DO NOTHING RETURNING id",
            (code, name, exposure_limit_micro),
        )
        row = await cur.fetchone()
        if row is None:
            raise Refusal("CODE_TAKEN", f"a merchant {code!r} already exists", "code")
        merchant_id = int(row[0])
        cur = await conn.execute("SELECT id FROM currencies WHERE kind = 'settlement'")
        asset = await cur.fetchone()
        if asset is None:
            raise LookupError("the hub is not bootstrapped")
        await create_account(
            conn, SETTLEMENT, int(asset[0]), stripes=stripes, merchant_id=merchant_id
        )
        return Merchant(merchant_id, code, name, "active", exposure_limit_micro)

    return await transaction(pool, work)


async def register_currency(
    pool: Pool,
    actor: Actor,
    *,
    code: str,
    name: str,
    scale: int,
    rate: Decimal,
    expiry: ExpiryPolicy,
    stripes: int,
) -> int:
    """Merchant ``actor`` issues a new point currency at an initial rate."""
    if not actor.is_merchant:
        raise Forbidden("only a merchant issues a currency")
    if not CURRENCY_CODE_RE.match(code):
        raise Refusal("INVALID_CODE", "a currency code is A-Z then 1-15 of A-Z, 0-9, _", "code")
    name = name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise Refusal("INVALID_NAME", "a name of 1 to 200 printable characters", "name")
    if not 0 <= scale <= MAX_SCALE:
        raise Refusal("INVALID_SCALE", f"scale is between 0 and {MAX_SCALE}", "scale")
    try:
        check_rate(rate)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, "rate") from exc
    problems = expiry.validate()
    if problems:
        raise Refusal("INVALID_EXPIRY", "; ".join(problems), "expiry")

    async def work(conn: Conn) -> int:
        try:
            cur = await conn.execute(
                "INSERT INTO currencies (code, name, kind, issuer_id, scale, expiry_kind,"
                " expiry_param) VALUES (%s, %s, 'points', %s, %s, %s, %s)"
                " ON CONFLICT (code) DO NOTHING RETURNING id",
                (code, name, actor.merchant_id, scale, expiry.kind, expiry.param),
            )
        except pg_errors.ForeignKeyViolation as exc:  # pragma: no cover - merchant exists
            raise NotFound("merchant") from exc
        row = await cur.fetchone()
        if row is None:
            raise Refusal("CODE_TAKEN", f"a currency {code!r} already exists", "code")
        currency_id = int(row[0])
        await create_account(
            conn, OUTSTANDING, currency_id, stripes=stripes, merchant_id=actor.merchant_id
        )
        await conn.execute(
            "INSERT INTO rates (currency_id, effective_at, rate, recorded_by)"
            " VALUES (%s, %s, %s, %s)",
            (currency_id, clock.now(), rate, actor.initiator),
        )
        return currency_id

    return await transaction(pool, work)


async def set_rate(
    pool: Pool,
    actor: Actor,
    *,
    code: str,
    rate: Decimal,
    effective_at: datetime | None = None,
) -> datetime:
    """The issuer changes its currency's rate, now or from a future instant."""
    if not actor.is_merchant:
        raise Forbidden("only the issuer changes a rate")
    try:
        check_rate(rate)
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, "rate") from exc
    now = clock.now()
    at = now if effective_at is None else effective_at
    if at.tzinfo is None:
        raise Refusal("INVALID_TIME", "effectiveAt needs a time zone", "effectiveAt")
    if at < now:
        raise Refusal("INVALID_TIME", "a rate cannot take effect in the past", "effectiveAt")

    async def work(conn: Conn) -> datetime:
        cur = await conn.execute(
            "SELECT id FROM currencies WHERE code = %s AND issuer_id = %s AND kind = 'points'",
            (code, actor.merchant_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound("currency", "currency")
        await conn.execute(
            "INSERT INTO rates (currency_id, effective_at, rate, recorded_by)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (currency_id, effective_at) DO UPDATE SET rate = EXCLUDED.rate,"
            " recorded_at = now(), recorded_by = EXCLUDED.recorded_by",
            (int(row[0]), at, rate, actor.initiator),
        )
        return at

    return await transaction(pool, work)


async def set_hub_setting(pool: Pool, actor: Actor, name: str, value: str) -> None:
    _require_admin(actor)

    async def work(conn: Conn) -> None:
        await conn.execute(
            "INSERT INTO hub_settings (name, value, updated_by) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now(),"
            " updated_by = EXCLUDED.updated_by",
            (name, value, actor.initiator),
        )

    await transaction(pool, work)
