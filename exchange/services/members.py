"""Members: one person known to the hub once, linked to each merchant by its own reference."""

from __future__ import annotations

from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.ledger.engine import Conn
from exchange.ledger.facts import facts_of
from exchange.services.actors import Actor
from exchange.services.tx import Pool, reading, transaction

MAX_REF = 128


def check_ref(customer_ref: str) -> str:
    ref = customer_ref.strip() if isinstance(customer_ref, str) else ""
    if not 1 <= len(ref) <= MAX_REF or not ref.isprintable():
        raise Refusal(
            "INVALID_CUSTOMER_REF",
            f"a customer reference of 1 to {MAX_REF} printable characters",
            "customerRef",
        )
    return ref


async def link_member(
    pool: Pool, actor: Actor, customer_ref: str, *, member_id: int | None = None
) -> tuple[int, bool]:
    """Link the merchant's customer reference to a member (idempotent).

    Without ``member_id`` a new member is created for a new reference. Returns the member
    id and whether the link was created by this call.
    """
    if not actor.is_merchant:
        raise Forbidden("only a merchant links its customers")
    ref = check_ref(customer_ref)

    async def work(conn: Conn) -> tuple[int, bool]:
        cur = await conn.execute(
            "SELECT member_id FROM member_links WHERE merchant_id = %s AND customer_ref = %s",
            (actor.merchant_id, ref),
        )
        row = await cur.fetchone()
        if row is not None:
            if member_id is not None and int(row[0]) != member_id:
                raise Refusal(
                    "CUSTOMER_REF_TAKEN",
                    "this customer reference is linked to another member",
                    "customerRef",
                )
            return int(row[0]), False
        target = member_id
        if target is None:
            cur = await conn.execute("INSERT INTO members DEFAULT VALUES RETURNING id")
            new = await cur.fetchone()
            assert new is not None
            target = int(new[0])
        cur = await conn.execute(
            "INSERT INTO member_links (merchant_id, customer_ref, member_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING member_id",
            (actor.merchant_id, ref, target),
        )
        if await cur.fetchone() is None:
            raise Refusal("ALREADY_LINKED", "this member is already linked under another reference")
        return target, True

    return await transaction(pool, work)


async def member_by_ref(pool: Pool, merchant_id: int, customer_ref: str) -> int:
    """:func:`member_for_ref` on a pooled connection, answered from the database's cached
    facts once found (links are never changed or removed)."""
    facts = facts_of(pool)
    member_id = facts.link(merchant_id, customer_ref)
    if member_id is None:
        async with reading(pool) as conn:
            member_id = await member_for_ref(conn, merchant_id, customer_ref)
        facts.remember_link(merchant_id, customer_ref, member_id)
    return member_id


async def member_for_ref(conn: Conn, merchant_id: int, customer_ref: str) -> int:
    """The member behind a merchant's customer reference; foreign or unknown: not found."""
    cur = await conn.execute(
        "SELECT member_id FROM member_links WHERE merchant_id = %s AND customer_ref = %s",
        (merchant_id, customer_ref),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound("member", "customerRef")
    return int(row[0])
