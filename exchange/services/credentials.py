"""Credentials: API keys for merchants and operators, access tokens for members and operators.

API keys
    ``exk_live_`` + 43 base62 characters (32 random bytes) + a 6-character base62 CRC32 of
    everything before it. The prefix makes a leaked key recognisable to secret scanners; the
    checksum lets a client or the hub reject a mistyped key offline, before any lookup.
    The hub stores only ``HMAC-SHA256(pepper, key)`` (``api_keys.key_hash``), the first
    12 characters and the last 4; the key itself is returned once, by :func:`create_api_key`.

Rotation without downtime
    A merchant may hold several active keys at once: create the new key, deploy it, then
    revoke the old one. Both authenticate in between.

Access tokens
    Short-lived EdDSA JWTs signed with the newest key of :mod:`exchange.keys`. A member token
    (``role=member``, ``sub=member:<id>``, ``mid=<minting merchant id>``) is minted by a
    merchant for one of its own customers; an operator token (``role=admin|finance``) by
    whoever holds the signing keys (the command line). :mod:`exchange.api.auth` verifies them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as random_source
import string
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from psycopg_pool import AsyncConnectionPool

from exchange.config import Settings
from exchange.domain.errors import MERCHANT_SUSPENDED, Forbidden, NotFound, Refusal
from exchange.keys import JWT_ALGORITHM, Secrets
from exchange.ledger.engine import Conn
from exchange.services.actors import ADMIN, FINANCE, MEMBER, MERCHANT, Actor
from exchange.services.members import check_ref
from exchange.services.tx import Pool, transaction

# -- API-key format ---------------------------------------------------------------------------

API_KEY_PREFIX = "exk_live_"
BASE62_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_BYTES = 32
RANDOM_CHARS = 43
"""Base62 digits needed for any 256-bit number (62**43 > 2**256)."""
CHECKSUM_CHARS = 6
"""Base62 digits needed for any CRC32 value (62**6 > 2**32)."""
API_KEY_LENGTH = len(API_KEY_PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS
STORED_PREFIX_CHARS = 12
STORED_SUFFIX_CHARS = 4
_API_KEY_RE = re.compile(
    rf"^{API_KEY_PREFIX}[0-9A-Za-z]{{{RANDOM_CHARS}}}[0-9A-Za-z]{{{CHECKSUM_CHARS}}}$"
)

KEY_ROLES = (MERCHANT, FINANCE, ADMIN)
MAX_LABEL = 200
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most once per this interval per key."""


def base62(number: int, width: int) -> str:
    """``number`` in base62, left-padded with ``0`` to ``width`` digits."""
    if number < 0:
        raise ValueError("base62 encodes non-negative numbers")
    digits: list[str] = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(BASE62_ALPHABET[digit])
    text = "".join(reversed(digits)).rjust(width, "0")
    if len(text) > width:
        raise ValueError(f"{number} does not fit in {width} base62 digits")
    return text


def api_key_checksum(body: str) -> str:
    """The 6-character base62 CRC32 of ``body`` (the key without its checksum)."""
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def format_api_key(random_bytes: bytes) -> str:
    """The API key made of ``random_bytes`` (exactly 32): prefix, base62 digits, checksum."""
    if len(random_bytes) != RANDOM_BYTES:
        raise ValueError(f"an API key is made of {RANDOM_BYTES} random bytes")
    body = API_KEY_PREFIX + base62(int.from_bytes(random_bytes), RANDOM_CHARS)
    return body + api_key_checksum(body)


def generate_api_key() -> str:
    """A new random API key in the ``exk_live_`` format."""
    return format_api_key(random_source.token_bytes(RANDOM_BYTES))


def is_well_formed_api_key(presented: str) -> bool:
    """Prefix, length, alphabet and checksum are right (checked offline, no lookup)."""
    if not isinstance(presented, str) or not _API_KEY_RE.match(presented):
        return False
    body, checksum = presented[:-CHECKSUM_CHARS], presented[-CHECKSUM_CHARS:]
    return hmac.compare_digest(api_key_checksum(body), checksum)


def hash_api_key(pepper: bytes, key: str) -> bytes:
    """What the hub stores and looks keys up by: ``HMAC-SHA256(pepper, key)``."""
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).digest()


# -- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as the hub knows it: never the key itself, never its hash."""

    id: int
    role: str
    merchant_id: int | None
    merchant_code: str | None
    prefix: str
    last4: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def hint(self) -> str:
        """``exk_live_abc…wxyz``: enough to recognise a key, useless to use it."""
        return f"{self.prefix}…{self.last4}"

    def status(self, now: datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        at = now or datetime.now(UTC)
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active"


_INFO_COLUMNS = (
    "k.id, k.role, k.merchant_id, m.code, k.prefix, k.last4, k.label, k.created_at,"
    " k.expires_at, k.revoked_at, k.last_used_at"
)
_INFO_FROM = "api_keys k LEFT JOIN merchants m ON m.id = k.merchant_id"


def _info(row: tuple[Any, ...]) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=int(row[0]),
        role=str(row[1]),
        merchant_id=None if row[2] is None else int(row[2]),
        merchant_code=None if row[3] is None else str(row[3]),
        prefix=str(row[4]),
        last4=str(row[5]),
        label=str(row[6]),
        created_at=row[7],
        expires_at=row[8],
        revoked_at=row[9],
        last_used_at=row[10],
    )


def _require_admin(actor: Actor) -> None:
    if actor.role != ADMIN:
        raise Forbidden("only the hub administrator manages API keys")


def _check_label(label: str) -> str:
    text = label.strip() if isinstance(label, str) else ""
    if len(text) > MAX_LABEL or not text.isprintable():
        raise Refusal(
            "INVALID_LABEL", f"a label of at most {MAX_LABEL} printable characters", "label"
        )
    return text


async def create_api_key(
    pool: Pool,
    actor: Actor,
    *,
    pepper: bytes,
    role: str,
    merchant_id: int | None = None,
    label: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKeyInfo, str]:
    """Create an API key; return what is stored about it and the key, which is never shown again.

    Only an admin creates keys. A ``merchant`` key names its merchant; ``finance`` and
    ``admin`` keys name none. Several keys of one merchant may be active at once (rotation).
    """
    _require_admin(actor)
    if role not in KEY_ROLES:
        raise Refusal("INVALID_ROLE", "an API key's role is merchant, finance or admin", "role")
    if (role == MERCHANT) != (merchant_id is not None):
        raise Refusal(
            "INVALID_MERCHANT",
            "a merchant key names its merchant; finance and admin keys name none",
            "merchantId",
        )
    text = _check_label(label)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise Refusal("INVALID_TIME", "expiresAt needs a time zone", "expiresAt")
        if expires_at <= datetime.now(UTC):
            raise Refusal("INVALID_TIME", "expiresAt must be in the future", "expiresAt")
    key = generate_api_key()

    async def work(conn: Conn) -> ApiKeyInfo:
        if merchant_id is not None:
            cur = await conn.execute("SELECT 1 FROM merchants WHERE id = %s", (merchant_id,))
            if await cur.fetchone() is None:
                raise NotFound("merchant", "merchantId")
        cur = await conn.execute(
            "INSERT INTO api_keys (role, merchant_id, prefix, last4, key_hash, label, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                role,
                merchant_id,
                key[:STORED_PREFIX_CHARS],
                key[-STORED_SUFFIX_CHARS:],
                hash_api_key(pepper, key),
                text,
                expires_at,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(
            f"SELECT {_INFO_COLUMNS} FROM {_INFO_FROM} WHERE k.id = %s", (int(row[0]),)
        )
        stored = await cur.fetchone()
        assert stored is not None
        return _info(stored)

    return await transaction(pool, work), key


async def revoke_api_key(pool: Pool, actor: Actor, key_id: int) -> ApiKeyInfo:
    """Revoke a key (idempotent: revoking a revoked key keeps its first revocation time).

    An admin revokes any key; a merchant only its own (another merchant's key id is
    ``NOT_FOUND``, like an id that does not exist).
    """
    if actor.role != ADMIN and not actor.is_merchant:
        raise Forbidden("only the hub administrator or the key's merchant revokes a key")
    owner = None if actor.role == ADMIN else actor.merchant_id

    async def work(conn: Conn) -> ApiKeyInfo:
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = %s AND (%s::bigint IS NULL OR merchant_id = %s::bigint) RETURNING id",
            (key_id, owner, owner),
        )
        if await cur.fetchone() is None:
            raise NotFound("API key", "id")
        cur = await conn.execute(
            f"SELECT {_INFO_COLUMNS} FROM {_INFO_FROM} WHERE k.id = %s", (key_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        return _info(row)

    return await transaction(pool, work)


async def list_api_keys(
    pool: Pool, actor: Actor, merchant_id: int | None = None
) -> list[ApiKeyInfo]:
    """Keys in creation order: an admin sees all (or one merchant's), a merchant its own."""
    if actor.role != ADMIN and not actor.is_merchant:
        raise Forbidden("only the hub administrator or a merchant lists API keys")
    conditions: list[str] = []
    params: list[object] = []
    if actor.role != ADMIN:
        conditions.append("k.merchant_id = %s")
        params.append(actor.merchant_id)
    if merchant_id is not None:
        conditions.append("k.merchant_id = %s")
        params.append(merchant_id)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""

    async def work(conn: Conn) -> list[ApiKeyInfo]:
        cur = await conn.execute(
            f"SELECT {_INFO_COLUMNS} FROM {_INFO_FROM}{where} ORDER BY k.id", params
        )
        return [_info(row) for row in await cur.fetchall()]

    return await transaction(pool, work)


@dataclass(frozen=True)
class VerifiedApiKey:
    key_id: int
    actor: Actor
    expires_at: datetime | None


_LOOKUP = (
    "SELECT k.id, k.role, k.merchant_id, k.expires_at,"
    " k.last_used_at IS NULL OR k.last_used_at <= now() - %s AS stale"
    " FROM api_keys k LEFT JOIN merchants m ON m.id = k.merchant_id"
    " WHERE k.key_hash = %s AND k.revoked_at IS NULL"
    " AND (k.expires_at IS NULL OR k.expires_at > now())"
    " AND (k.merchant_id IS NULL OR m.status = 'active')"
)
# Skips a row another request is updating right now: the hot path never waits for this write.
_TOUCH = (
    "UPDATE api_keys SET last_used_at = now() WHERE id = ("
    " SELECT id FROM api_keys WHERE id = %s"
    " AND (last_used_at IS NULL OR last_used_at <= now() - %s)"
    " FOR UPDATE SKIP LOCKED)"
)


async def _verify(conn: Conn, pepper: bytes, presented: str) -> VerifiedApiKey | None:
    cur = await conn.execute(_LOOKUP, (LAST_USED_RESOLUTION, hash_api_key(pepper, presented)))
    row = await cur.fetchone()
    if row is None:
        return None
    key_id, role, merchant_id, expires_at, stale = row
    if stale:
        await conn.execute(_TOUCH, (key_id, LAST_USED_RESOLUTION))
    actor = Actor(
        role=str(role),
        merchant_id=None if merchant_id is None else int(merchant_id),
        subject=f"api_key:{int(key_id)}",
    )
    return VerifiedApiKey(key_id=int(key_id), actor=actor, expires_at=expires_at)


async def verify_api_key(
    conn_or_pool: Conn | Pool, pepper: bytes, presented: str
) -> VerifiedApiKey | None:
    """Like :func:`authenticate_api_key`, also returning the key's id and expiry."""
    if not is_well_formed_api_key(presented):
        return None
    if isinstance(conn_or_pool, AsyncConnectionPool):
        async with conn_or_pool.connection() as conn:
            return await _verify(conn, pepper, presented)
    return await _verify(conn_or_pool, pepper, presented)


async def authenticate_api_key(
    conn_or_pool: Conn | Pool, pepper: bytes, presented: str
) -> Actor | None:
    """The actor behind a presented key, or ``None`` when it is not a valid key.

    A malformed key (prefix, length, alphabet, checksum) is refused without touching the
    database. Otherwise the key is looked up by its hash; a revoked or expired key, or the
    key of a suspended merchant, is ``None``. ``last_used_at`` is written at most once a
    minute per key. Given a connection, the caller commits; given a pool, this does.
    """
    verified = await verify_api_key(conn_or_pool, pepper, presented)
    return None if verified is None else verified.actor


# -- access tokens ----------------------------------------------------------------------------

TOKEN_TYPE = "access"  # noqa: S105 - a claim value, not a secret
"""The ``typ`` claim of every access token (no other token type is accepted)."""
OPERATOR_ROLES = (ADMIN, FINANCE)
TOKEN_ROLES = (ADMIN, FINANCE, MEMBER)
MIN_TOKEN_TTL_S = 60
MAX_OPERATOR_TOKEN_TTL_S = 86_400
MAX_MEMBER_TOKEN_TTL_S = 3_600
MAX_TOKEN_TTL_S = max(MAX_OPERATOR_TOKEN_TTL_S, MAX_MEMBER_TOKEN_TTL_S)
"""No token outlives this: a retired signing key may be dropped this long after rotation."""
MEMBER_SUBJECT_PREFIX = "member:"
MAX_SUBJECT = 128


@dataclass(frozen=True)
class IssuedToken:
    token: str
    subject: str
    kid: str
    expires_at: datetime


def _check_ttl(ttl_s: int, maximum: int) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
        raise Refusal("INVALID_TTL", "the lifetime is a whole number of seconds", "ttl")
    if not MIN_TOKEN_TTL_S <= ttl_s <= maximum:
        raise Refusal(
            "INVALID_TTL",
            f"a token lives between {MIN_TOKEN_TTL_S} and {maximum} seconds",
            "ttl",
        )
    return ttl_s


def _sign(secrets: Secrets, settings: Settings, claims: dict[str, Any], ttl_s: int) -> IssuedToken:
    now = datetime.now(UTC).replace(microsecond=0)
    expires_at = now + timedelta(seconds=ttl_s)
    key = secrets.signing_key
    payload = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": TOKEN_TYPE,
        **claims,
    }
    token = jwt.encode(payload, key.private_key, algorithm=JWT_ALGORITHM, headers={"kid": key.kid})
    return IssuedToken(token=token, subject=str(claims["sub"]), kid=key.kid, expires_at=expires_at)


def mint_operator_token(
    secrets: Secrets,
    role: str,
    subject: str,
    ttl_s: int | None = None,
    *,
    settings: Settings,
) -> IssuedToken:
    """An ``admin`` or ``finance`` access token for ``subject`` (who the operator is).

    The lifetime defaults to ``settings.access_token_ttl_s``; at most a day.
    """
    if role not in OPERATOR_ROLES:
        raise Refusal("INVALID_ROLE", "an operator token's role is admin or finance", "role")
    text = subject.strip() if isinstance(subject, str) else ""
    if (
        not 1 <= len(text) <= MAX_SUBJECT
        or not text.isprintable()
        or text.startswith(MEMBER_SUBJECT_PREFIX)
    ):
        raise Refusal(
            "INVALID_SUBJECT",
            f"a subject of 1 to {MAX_SUBJECT} printable characters, not starting with"
            f" {MEMBER_SUBJECT_PREFIX!r}",
            "subject",
        )
    ttl = _check_ttl(
        settings.access_token_ttl_s if ttl_s is None else ttl_s, MAX_OPERATOR_TOKEN_TTL_S
    )
    return _sign(secrets, settings, {"sub": text, "role": role}, ttl)


async def mint_member_token(
    pool: Pool,
    actor: Actor,
    customer_ref: str,
    ttl_s: int | None = None,
    *,
    secrets: Secrets,
    settings: Settings,
) -> IssuedToken:
    """A member access token for the member behind the merchant's own ``customer_ref``.

    Only a merchant mints, and only for its own customers: an unknown reference and another
    merchant's reference are both ``NOT_FOUND``. The token carries ``sub=member:<id>``,
    ``role=member`` and ``mid`` (the minting merchant). The lifetime defaults to
    ``settings.member_token_ttl_s``; at most an hour.
    """
    if not actor.is_merchant:
        raise Forbidden("only a merchant mints member tokens")
    ref = check_ref(customer_ref)
    ttl = _check_ttl(
        settings.member_token_ttl_s if ttl_s is None else ttl_s, MAX_MEMBER_TOKEN_TTL_S
    )

    async def work(conn: Conn) -> int:
        cur = await conn.execute(
            "SELECT l.member_id, m.status FROM member_links l"
            " JOIN merchants m ON m.id = l.merchant_id"
            " WHERE l.merchant_id = %s AND l.customer_ref = %s",
            (actor.merchant_id, ref),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound("member", "customerRef")
        if row[1] != "active":
            raise Refusal(MERCHANT_SUSPENDED, "the merchant is suspended")
        return int(row[0])

    member_id = await transaction(pool, work)
    claims = {
        "sub": f"{MEMBER_SUBJECT_PREFIX}{member_id}",
        "role": MEMBER,
        "mid": actor.merchant_id,
    }
    return _sign(secrets, settings, claims, ttl)
