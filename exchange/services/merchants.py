"""Operating the alliance: merchants' status and exposure limits, the conversion fee, and
whether a currency still issues points.

A suspended merchant's API keys stop authenticating and its currencies stop issuing
points (earns and conversions into them are refused); points already issued can still be
redeemed and converted away.
"""

from __future__ import annotations

from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.money import MAX_POINTS
from exchange.ledger.engine import Conn
from exchange.services.actors import ADMIN, Actor
from exchange.services.catalog import Merchant, set_hub_setting
from exchange.services.tx import Pool, transaction

ACTIVE = "active"
SUSPENDED = "suspended"
CONVERSION_FEE_SETTING = "conversion_fee_bp"
MAX_FEE_BP = 9_999
MAX_EXPOSURE_MICRO = MAX_POINTS * 1_000
"""The largest exposure limit accepted, in micro-units (fits a BIGINT with room to spare)."""


def _require_admin(actor: Actor) -> None:
    if actor.role != ADMIN:
        raise Forbidden("only the hub administrator does this")


_MERCHANT_SQL = "SELECT id, code, name, status, exposure_limit_micro FROM merchants"


def _merchant(row: tuple[object, ...]) -> Merchant:
    limit = row[4]
    return Merchant(
        id=int(str(row[0])),
        code=str(row[1]),
        name=str(row[2]),
        status=str(row[3]),
        exposure_limit_micro=None if limit is None else int(str(limit)),
    )


async def merchant_by_code(conn: Conn, code: str, *, lock: bool = False) -> Merchant | None:
    cur = await conn.execute(
        _MERCHANT_SQL + " WHERE code = %s" + (" FOR NO KEY UPDATE" if lock else ""), (code,)
    )
    row = await cur.fetchone()
    return None if row is None else _merchant(tuple(row))


async def find_merchant(pool: Pool, code: str) -> Merchant | None:
    async def work(conn: Conn) -> Merchant | None:
        return await merchant_by_code(conn, code)

    return await transaction(pool, work)


def check_exposure_limit(limit_micro: int | None) -> None:
    if limit_micro is not None and not 0 <= limit_micro <= MAX_EXPOSURE_MICRO:
        raise Refusal(
            "INVALID_AMOUNT",
            "the exposure limit is between 0 and 1000000000000 (settlement currency)",
            "limit",
        )


async def set_exposure_limit(
    pool: Pool, actor: Actor, *, merchant_code: str, limit_micro: int | None
) -> Merchant:
    """Set (or with ``None`` remove) the most liability a merchant's currencies may carry."""
    _require_admin(actor)
    check_exposure_limit(limit_micro)

    async def work(conn: Conn) -> Merchant:
        cur = await conn.execute(
            "UPDATE merchants SET exposure_limit_micro = %s WHERE code = %s"
            " RETURNING id, code, name, status, exposure_limit_micro",
            (limit_micro, merchant_code),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound("merchant", "merchantCode")
        return _merchant(tuple(row))

    return await transaction(pool, work)


async def set_merchant_status(
    pool: Pool, actor: Actor, *, merchant_code: str, active: bool
) -> Merchant:
    """Suspend or reactivate a merchant (doing it twice is harmless)."""
    _require_admin(actor)
    status = ACTIVE if active else SUSPENDED

    async def work(conn: Conn) -> Merchant:
        cur = await conn.execute(
            "UPDATE merchants SET status = %s WHERE code = %s"
            " RETURNING id, code, name, status, exposure_limit_micro",
            (status, merchant_code),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound("merchant", "merchantCode")
        return _merchant(tuple(row))

    return await transaction(pool, work)


async def set_conversion_fee(pool: Pool, actor: Actor, basis_points: int) -> int:
    """The hub's fee on conversions, in basis points (applies to quotes made from now on)."""
    _require_admin(actor)
    if isinstance(basis_points, bool) or not 0 <= basis_points <= MAX_FEE_BP:
        raise Refusal(
            "INVALID_FEE", f"the fee is between 0 and {MAX_FEE_BP} basis points", "basisPoints"
        )
    await set_hub_setting(pool, actor, CONVERSION_FEE_SETTING, str(basis_points))
    return basis_points


async def set_currency_active(pool: Pool, actor: Actor, *, code: str, active: bool) -> int:
    """The issuer stops (or resumes) issuing its currency; returns the currency's id.

    An inactive currency awards no points and receives no conversions; its points can still
    be redeemed and converted away.
    """
    if not actor.is_merchant:
        raise Forbidden("only the issuer changes its currency")

    async def work(conn: Conn) -> int:
        cur = await conn.execute(
            "UPDATE currencies SET active = %s"
            " WHERE code = %s AND issuer_id = %s AND kind = 'points' RETURNING id",
            (active, code, actor.merchant_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound("currency", "currency")
        return int(row[0])

    return await transaction(pool, work)
