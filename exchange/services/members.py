"""Members: one person known to the hub once, linked to each merchant by its own reference."""

from __future__ import annotations

from collections.abc import Sequence

from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.ledger.engine import Conn
from exchange.ledger.facts import facts_of
from exchange.services.actors import Actor
from exchange.services.shared_reads import shared_reads
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


_LINK_SQL = "SELECT member_id FROM member_links WHERE merchant_id = %s AND customer_ref = %s"


async def member_by_ref(pool: Pool, merchant_id: int, customer_ref: str) -> int:
    """The member behind a merchant's customer reference (foreign or unknown: not found),
    answered from the database's cached facts once found (links are never changed or
    removed). The look-ups of a process that arrive together share one statement."""
    facts = facts_of(pool)
    member_id = facts.link(merchant_id, customer_ref)
    if member_id is None:
        reads = shared_reads(pool, "member_links", _fetch_links, _no_member)
        member_id = await reads.load(pool, (merchant_id, customer_ref))
        if member_id is None:
            raise NotFound("member", "customerRef")
        facts.remember_link(merchant_id, customer_ref, member_id)
    return member_id


_LINKS_SQL = """
SELECT k.merchant_id, k.customer_ref,
       (SELECT l.member_id FROM member_links l
         WHERE l.merchant_id = k.merchant_id AND l.customer_ref = k.customer_ref)
  FROM unnest(%s::bigint[], %s::text[]) AS k(merchant_id, customer_ref)
"""
"""Several links, each looked up by its key (a scalar subquery, never a hash of every link)."""


async def _fetch_links(
    pool: Pool, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], int | None]:
    async with reading(pool) as conn:
        if len(keys) == 1:
            cur = await conn.execute(_LINK_SQL, keys[0])
            row = await cur.fetchone()
            return {} if row is None else {keys[0]: int(row[0])}
        cur = await conn.execute(_LINKS_SQL, ([m for m, _ in keys], [r for _, r in keys]))
        return {
            (int(m), str(ref)): int(member)
            for m, ref, member in await cur.fetchall()
            if member is not None
        }


def _no_member() -> int | None:
    return None


async def member_for_ref(conn: Conn, merchant_id: int, customer_ref: str) -> int:
    """The member behind a merchant's customer reference; foreign or unknown: not found."""
    cur = await conn.execute(_LINK_SQL, (merchant_id, customer_ref))
    row = await cur.fetchone()
    if row is None:
        raise NotFound("member", "customerRef")
    return int(row[0])
