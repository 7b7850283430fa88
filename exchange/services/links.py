"""Linking one person's customer references at several merchants to one member.

A merchant links its own customer reference with :func:`link_customer`: without a link
code a new member is created; with a link code the reference is linked to the member who
created the code. A member creates a code with :func:`create_link_code` (through a member
token minted by a merchant that already knows them) and hands it to the second merchant.

Link codes are one-time, valid for :data:`LINK_CODE_TTL` and stored only as a SHA-256
hash: ``XXXX-XXXX-XXXX`` of a 32-letter alphabet without look-alike characters (60 random
bits), compared case-insensitively, dashes and spaces ignored. An unknown, expired or used
code is ``NOT_FOUND`` on ``linkCode`` (which of those is not told).

:func:`link_customer` is idempotent per ``(merchant, customerRef)``: once linked, the same
call answers the same member, with ``created = False``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.ledger.engine import Conn
from exchange.services import clock
from exchange.services.actors import MEMBER, Actor
from exchange.services.members import check_ref
from exchange.services.tx import Pool, transaction

LINK_CODE_TTL = timedelta(minutes=10)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_GROUPS = 3
CODE_GROUP_LEN = 4
MAX_CODE_INPUT = 64
MAX_OPEN_CODES = 5
"""Unused, unexpired codes a member may hold at once."""

assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET)


@dataclass(frozen=True)
class LinkCode:
    code: str
    """The code itself: shown once, never stored."""
    expires_at: datetime


@dataclass(frozen=True)
class Link:
    member_id: int
    customer_ref: str
    created: bool
    """True when this call created the link; False when it already existed."""


def normalize_code(text: str) -> str | None:
    """The canonical form of a presented code, or ``None`` when it cannot be one."""
    if not isinstance(text, str) or len(text) > MAX_CODE_INPUT:
        return None
    compact = "".join(ch for ch in text.upper() if ch not in "- ")
    if len(compact) != CODE_GROUPS * CODE_GROUP_LEN or any(c not in CODE_ALPHABET for c in compact):
        return None
    return compact


def hash_code(canonical: str) -> bytes:
    return hashlib.sha256(b"exchange-link-code:" + canonical.encode("ascii")).digest()


def generate_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LEN))
    return "-".join(raw[i : i + CODE_GROUP_LEN] for i in range(0, len(raw), CODE_GROUP_LEN))


async def create_link_code(pool: Pool, actor: Actor) -> LinkCode:
    """A one-time code that links the calling member at another merchant."""
    if actor.role != MEMBER or actor.member_id is None:
        raise Forbidden("only a member creates a link code")
    member_id = actor.member_id
    code = generate_code()
    canonical = normalize_code(code)
    assert canonical is not None

    async def work(conn: Conn) -> LinkCode:
        now = clock.now()
        await conn.execute("SELECT 1 FROM members WHERE id = %s FOR NO KEY UPDATE", (member_id,))
        cur = await conn.execute(
            "SELECT count(*) FROM link_codes"
            " WHERE member_id = %s AND used_at IS NULL AND expires_at > %s",
            (member_id, now),
        )
        row = await cur.fetchone()
        if row is not None and int(row[0]) >= MAX_OPEN_CODES:
            raise Refusal(
                "INVALID_INPUT",
                f"at most {MAX_OPEN_CODES} link codes may be open at once; use or let one expire",
            )
        expires = now + LINK_CODE_TTL
        await conn.execute(
            "INSERT INTO link_codes (code_hash, member_id, created_at, expires_at)"
            " VALUES (%s, %s, %s, %s)",
            (hash_code(canonical), member_id, now, expires),
        )
        return LinkCode(code=code, expires_at=expires)

    return await transaction(pool, work)


async def _linked(conn: Conn, merchant_id: int, ref: str) -> int | None:
    cur = await conn.execute(
        "SELECT member_id FROM member_links WHERE merchant_id = %s AND customer_ref = %s",
        (merchant_id, ref),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


class _LostRace(Exception):
    """The new member's link lost to a concurrent one: roll the member back."""


async def _insert_link(conn: Conn, merchant_id: int, ref: str, member_id: int) -> bool:
    """Link ``ref`` to ``member_id``; False when the reference or the member is linked here."""
    cur = await conn.execute(
        "INSERT INTO member_links (merchant_id, customer_ref, member_id) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING member_id",
        (merchant_id, ref, member_id),
    )
    return await cur.fetchone() is not None


async def _code_member(conn: Conn, code_hash: bytes) -> tuple[int, bool, int | None] | None:
    """The code's member, whether it can still be used, and who used it."""
    cur = await conn.execute(
        "SELECT member_id, used_at IS NULL AND expires_at > %s, used_by_merchant_id"
        "  FROM link_codes WHERE code_hash = %s FOR UPDATE",
        (clock.now(), code_hash),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return int(row[0]), bool(row[1]), None if row[2] is None else int(row[2])


def _bad_code() -> Refusal:
    return NotFound("link code (unknown, expired or already used)", "linkCode")


async def link_customer(
    pool: Pool, actor: Actor, customer_ref: str, link_code: str | None = None
) -> Link:
    """Link the calling merchant's ``customer_ref`` to a member (idempotent per reference)."""
    if not actor.is_merchant or actor.merchant_id is None:
        raise Forbidden("only a merchant links its customers")
    merchant_id = actor.merchant_id
    ref = check_ref(customer_ref)
    code_hash: bytes | None = None
    if link_code is not None:
        canonical = normalize_code(link_code)
        if canonical is None:
            raise _bad_code()
        code_hash = hash_code(canonical)

    async def work(conn: Conn) -> Link:
        code = None if code_hash is None else await _code_member(conn, code_hash)
        if code_hash is not None and code is None:
            raise _bad_code()
        existing = await _linked(conn, merchant_id, ref)
        if existing is not None:
            if code is not None and code[0] != existing:
                raise Refusal(
                    "CUSTOMER_REF_TAKEN",
                    "this customer reference is linked to another member",
                    "customerRef",
                )
            return Link(existing, ref, created=False)
        target: int | None = None
        if code is not None:
            member_id, usable, _used_by = code
            if not usable:
                raise _bad_code()
            target = member_id
        if target is None:
            # A new member exists only with its first link: members are never deleted (the
            # journal refers to them), so a lost race rolls both back to a savepoint.
            try:
                async with conn.transaction():
                    cur = await conn.execute("INSERT INTO members DEFAULT VALUES RETURNING id")
                    row = await cur.fetchone()
                    assert row is not None
                    target = int(row[0])
                    if not await _insert_link(conn, merchant_id, ref, target):
                        raise _LostRace
                linked = True
            except _LostRace:
                linked = False
        else:
            linked = await _insert_link(conn, merchant_id, ref, target)
        if not linked:
            # A concurrent call linked this reference first, or the member is already linked
            # here under another reference.
            raced = await _linked(conn, merchant_id, ref)
            if raced is not None and (code is None or code[0] == raced):
                return Link(raced, ref, created=False)
            if raced is not None:
                raise Refusal(
                    "CUSTOMER_REF_TAKEN",
                    "this customer reference is linked to another member",
                    "customerRef",
                )
            raise Refusal(
                "ALREADY_LINKED",
                "this member is already linked to you under another customer reference",
                "linkCode",
            )
        if code_hash is not None:
            await conn.execute(
                "UPDATE link_codes SET used_at = now(), used_by_merchant_id = %s"
                " WHERE code_hash = %s",
                (merchant_id, code_hash),
            )
        assert target is not None
        return Link(target, ref, created=True)

    return await transaction(pool, work)
