"""Who is calling: the ``Authorization: Bearer`` credential of a request, verified.

A credential is either a merchant/operator API key (``exk_live_…``, see
:mod:`exchange.services.credentials`) or an access token (a JWT). Tokens are accepted only
when signed with EdDSA by a key of the hub's key set (looked up by the required ``kid``
header), for this hub's audience and issuer, carrying ``exp``, ``iat``, ``iss``, ``aud``,
``sub``, ``typ=access`` and a ``role`` of ``admin``, ``finance`` or ``member``.

Verified API keys are cached in-process for at most :data:`API_KEY_CACHE_TTL_S` seconds,
keyed by the key's hash, so the hot path does not query the database on every request. A
revoked key, or the key of a merchant that was suspended, therefore stops working within
that many seconds on every server process; a key's own expiry is honoured exactly.

Verified tokens are cached in-process too (:class:`TokenCache`), keyed by the whole token,
so a client that sends the same token many times pays for one signature check: a token is
immutable, and the cache keeps it no longer than its own ``exp`` (plus the same leeway the
verification allows) and only while its ``kid`` is still in the process's key set.
Failures are never cached.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from starlette.responses import JSONResponse, Response

from exchange.config import Settings
from exchange.keys import JWT_ALGORITHM, Secrets
from exchange.services.actors import ADMIN, FINANCE, MEMBER, Actor
from exchange.services.credentials import (
    API_KEY_PREFIX,
    MEMBER_SUBJECT_PREFIX,
    TOKEN_TYPE,
    hash_api_key,
    is_well_formed_api_key,
    verify_api_key,
)
from exchange.services.tx import Pool

ALGORITHMS = [JWT_ALGORITHM]
"""The only accepted signature algorithm; never taken from the token."""
LEEWAY_S = 30
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
TOKEN_ROLES = frozenset({ADMIN, FINANCE, MEMBER})
API_KEY_CACHE_TTL_S = 30.0
API_KEY_CACHE_MAX_ENTRIES = 10_000
MAX_CREDENTIAL_LENGTH = 4_096
UNAUTHENTICATED = "UNAUTHENTICATED"
CREDENTIAL_PREFIX = "exk_"
"""Credentials starting with this are API keys (well-formed or not), anything else a token."""

_WHITESPACE = re.compile(r"\s")
_MEMBER_SUBJECT_RE = re.compile(rf"^{MEMBER_SUBJECT_PREFIX}([1-9][0-9]{{0,17}})$")

assert API_KEY_PREFIX.startswith(CREDENTIAL_PREFIX)


class AuthError(Exception):
    """The request carries a credential that is not valid; answer HTTP 401."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CachedKey:
    actor: Actor
    key_expires_at: datetime | None
    cached_until: float


class ApiKeyCache:
    """Verified API keys by key hash, each kept ``ttl_s`` seconds at most."""

    def __init__(
        self,
        ttl_s: float = API_KEY_CACHE_TTL_S,
        max_entries: int = API_KEY_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[bytes, _CachedKey] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: bytes) -> Actor | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expired = entry.key_expires_at is not None and entry.key_expires_at <= datetime.now(UTC)
        if expired or entry.cached_until <= self.clock():
            del self._entries[key_hash]
            return None
        return entry.actor

    def put(self, key_hash: bytes, actor: Actor, key_expires_at: datetime | None) -> None:
        now = self.clock()
        if len(self._entries) >= self.max_entries:
            for stale in [h for h, e in self._entries.items() if e.cached_until <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key_hash] = _CachedKey(actor, key_expires_at, now + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()


API_KEY_CACHE = ApiKeyCache()
"""The process-wide cache used by :func:`authenticate` unless it is given another."""


async def authenticate_api_key_cached(
    presented: str, pool: Pool, secrets: Secrets, cache: ApiKeyCache
) -> Actor:
    """The actor of a presented API key, from ``cache`` when it was verified recently.

    A malformed key is refused before any lookup; failures are never cached.
    """
    if not is_well_formed_api_key(presented):
        raise AuthError("malformed API key (wrong format or checksum)")
    key_hash = hash_api_key(secrets.api_key_pepper, presented)
    actor = cache.get(key_hash)
    if actor is not None:
        return actor
    verified = await verify_api_key(pool, secrets.api_key_pepper, presented)
    if verified is None:
        raise AuthError("invalid API key: unknown, revoked or expired")
    cache.put(key_hash, verified.actor, verified.expires_at)
    return verified.actor


# -- tokens -----------------------------------------------------------------------------------

TOKEN_CACHE_TTL_S = 300.0
TOKEN_CACHE_MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class _CachedToken:
    actor: Actor
    kid: str
    valid_until: float
    """Wall-clock time (``time.time()``) after which the token is expired: ``exp`` + leeway."""
    cached_until: float


class TokenCache:
    """Verified access tokens by their text, each kept until its expiry or ``ttl_s``."""

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_TTL_S,
        max_entries: int = TOKEN_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[tuple[str, str, str], _CachedToken] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: tuple[str, str, str], secrets: Secrets) -> Actor | None:
        """The actor of ``token`` (``(issuer, audience, text)``) if verified before."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.valid_until or now >= entry.cached_until or not secrets.knows(entry.kid):
            del self._entries[token]
            return None
        return entry.actor

    def put(self, token: tuple[str, str, str], actor: Actor, kid: str, exp: float) -> None:
        now = self.clock()
        if len(self._entries) >= self.max_entries:
            for stale in [t for t, e in self._entries.items() if e.cached_until <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[token] = _CachedToken(actor, kid, exp + LEEWAY_S, now + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()


TOKEN_CACHE = TokenCache()
"""The process-wide cache of verified tokens used by :func:`authenticate`."""


def verify_token_cached(
    token: str, secrets: Secrets, settings: Settings, cache: TokenCache
) -> Actor:
    """:func:`verify_token`, answered from ``cache`` for a token verified before."""
    cache_key = (settings.jwt_issuer, settings.jwt_audience, token)
    actor = cache.get(cache_key, secrets)
    if actor is not None:
        return actor
    actor, kid, exp = _verify_token(token, secrets, settings)
    cache.put(cache_key, actor, kid, exp)
    return actor


def verify_token(token: str, secrets: Secrets, settings: Settings) -> Actor:
    """The actor of a valid access token; :class:`AuthError` for anything else."""
    return _verify_token(token, secrets, settings)[0]


def _verify_token(token: str, secrets: Secrets, settings: Settings) -> tuple[Actor, str, float]:
    """The actor, key id and ``exp`` of a valid access token."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise AuthError("malformed token") from exc
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("token has no key id (kid)")
    key = secrets.verification_key(kid)
    if key is None:
        raise AuthError("token is signed by an unknown key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_S,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    if claims.get("typ") != TOKEN_TYPE:
        raise AuthError(f"invalid token: typ must be {TOKEN_TYPE!r}")
    role = claims.get("role")
    if role not in TOKEN_ROLES:
        raise AuthError("invalid token: role must be admin, finance or member")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token: empty subject")
    exp = float(claims["exp"])
    if role != MEMBER:
        return Actor(role=str(role), subject=subject), kid, exp
    match = _MEMBER_SUBJECT_RE.match(subject)
    merchant_id = claims.get("mid")
    if match is None:
        raise AuthError("invalid token: a member token's subject is member:<id>")
    if isinstance(merchant_id, bool) or not isinstance(merchant_id, int) or merchant_id <= 0:
        raise AuthError("invalid token: a member token names its merchant (mid)")
    actor = Actor(
        role=MEMBER, member_id=int(match.group(1)), merchant_id=merchant_id, subject=subject
    )
    return actor, kid, exp


# -- requests ---------------------------------------------------------------------------------


def bearer_credential(authorization_header: str) -> str:
    """The credential of ``Bearer <credential>``; :class:`AuthError` for any other shape."""
    scheme, _, credential = authorization_header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or _WHITESPACE.search(credential):
        raise AuthError("the Authorization header must be 'Bearer <credential>'")
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise AuthError("credential too long")
    return credential


async def authenticate(
    authorization_header: str | None,
    pool: Pool,
    secrets: Secrets,
    settings: Settings,
    *,
    cache: ApiKeyCache | None = None,
    tokens: TokenCache | None = None,
) -> Actor | None:
    """The actor a request acts for: ``None`` without an Authorization header.

    Raises :class:`AuthError` for any credential that is not valid: malformed, a bad API-key
    checksum, an unknown, revoked or expired key, a suspended merchant's key, or a token
    that fails verification (see :func:`verify_token`).
    """
    if authorization_header is None:
        return None
    credential = bearer_credential(authorization_header)
    if credential.startswith(CREDENTIAL_PREFIX):
        return await authenticate_api_key_cached(
            credential, pool, secrets, API_KEY_CACHE if cache is None else cache
        )
    return verify_token_cached(
        credential, secrets, settings, TOKEN_CACHE if tokens is None else tokens
    )


def unauthenticated_response(message: str) -> Response:
    """HTTP 401 in the GraphQL error shape, with ``extensions.code`` ``UNAUTHENTICATED``."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": UNAUTHENTICATED}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="exchange", error="invalid_token"'},
    )
