"""Verifying the ``Authorization`` credential: access tokens (JWT) and API keys."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg_pool import AsyncConnectionPool

from exchange.api.auth import (
    API_KEY_CACHE,
    API_KEY_CACHE_TTL_S,
    LEEWAY_S,
    ApiKeyCache,
    AuthError,
    TokenCache,
    authenticate,
    bearer_credential,
    unauthenticated_response,
    verify_token,
    verify_token_cached,
)
from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.keys import Secrets, SigningKey, load_or_create_secrets, rotate_jwt_key
from exchange.services.actors import ADMIN, FINANCE, MEMBER, MERCHANT, Actor
from exchange.services.catalog import Merchant, bootstrap, create_merchant
from exchange.services.credentials import create_api_key, generate_api_key, revoke_api_key
from exchange.services.tx import Pool, transaction

ADMIN_ACTOR = Actor(role=ADMIN, subject="test")


@pytest.fixture
def secrets(settings: Settings) -> Secrets:
    return load_or_create_secrets(settings.data_dir)


@pytest.fixture
async def hub(pool: Pool, settings: Settings) -> Pool:
    await transaction(
        pool, lambda conn: bootstrap(conn, settings.settlement_currency, settings.balance_stripes)
    )
    return pool


@pytest.fixture
def cache() -> ApiKeyCache:
    return ApiKeyCache()


# Token verification needs no database: these fixtures have none, and ``no_db`` is a pool
# that was never opened (any use of it would fail).


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data").validate()


@pytest.fixture
def keys(config: Settings) -> Secrets:
    return load_or_create_secrets(config.data_dir)


@pytest.fixture
async def no_db(anyio_backend: str) -> Pool:
    return AsyncConnectionPool("dbname=none", open=False)


# -- building tokens --------------------------------------------------------------------------


def claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "typ": "access",
        "role": ADMIN,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], secrets: Secrets, **headers: Any) -> str:
    key = secrets.signing_key
    header = {"kid": key.kid, **headers}
    header = {k: v for k, v in header.items() if v is not None}
    return jwt.encode(payload, key.private_key, algorithm="EdDSA", headers=header)


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_raw(header: dict[str, Any], payload: dict[str, Any], secrets: Secrets) -> str:
    """An EdDSA signature over any header, bypassing pyjwt's own header checks."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = secrets.signing_key.private_key.sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


async def auth(
    header: str | None, pool: Pool, secrets: Secrets, settings: Settings
) -> Actor | None:
    return await authenticate(
        header, pool, secrets, settings, cache=ApiKeyCache(), tokens=TokenCache()
    )


async def rejected(header: str, pool: Pool, secrets: Secrets, settings: Settings) -> str:
    with pytest.raises(AuthError) as error:
        await auth(header, pool, secrets, settings)
    return error.value.message


# -- valid tokens -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_header_is_anonymous(no_db: Pool, keys: Secrets, config: Settings) -> None:
    assert await auth(None, no_db, keys, config) is None


@pytest.mark.anyio
@pytest.mark.parametrize("role", [ADMIN, FINANCE])
async def test_a_valid_operator_token_maps_to_its_actor(
    no_db: Pool, keys: Secrets, config: Settings, role: str
) -> None:
    token = sign(claims(config, role=role, sub="ops:alice"), keys)
    actor = await auth(f"Bearer {token}", no_db, keys, config)
    assert actor == Actor(role=role, subject="ops:alice")
    # The scheme is case-insensitive.
    assert await auth(f"bearer {token}", no_db, keys, config) == actor


@pytest.mark.anyio
async def test_a_valid_member_token_maps_to_member_and_minting_merchant(
    no_db: Pool, keys: Secrets, config: Settings
) -> None:
    token = sign(claims(config, role=MEMBER, sub="member:42", mid=7), keys)
    actor = await auth(f"Bearer {token}", no_db, keys, config)
    assert actor == Actor(role=MEMBER, member_id=42, merchant_id=7, subject="member:42")
    assert actor.initiator == "member:42"


@pytest.mark.anyio
async def test_an_expiry_within_the_leeway_is_accepted(
    no_db: Pool, keys: Secrets, config: Settings
) -> None:
    now = int(time.time())
    token = sign(claims(config, iat=now - 600, exp=now - 10), keys)
    assert await auth(f"Bearer {token}", no_db, keys, config) is not None


@pytest.mark.anyio
async def test_tokens_of_a_rotated_out_key_stay_valid(
    no_db: Pool, config: Settings, keys: Secrets
) -> None:
    old = sign(claims(config), keys)
    new_key = rotate_jwt_key(config.data_dir)
    rotated = load_or_create_secrets(config.data_dir)
    assert rotated.signing_key.kid == new_key.kid != keys.signing_key.kid
    new = sign(claims(config), rotated)
    assert jwt.get_unverified_header(new)["kid"] == new_key.kid
    for token in (old, new):
        assert await auth(f"Bearer {token}", no_db, rotated, config) is not None
    # A server that has not loaded the new key yet does not know it.
    assert "unknown key" in await rejected(f"Bearer {new}", no_db, keys, config)


# -- rejected tokens --------------------------------------------------------------------------


def _hs256_with_public_key(config: Settings, keys: Secrets) -> str:
    raw = keys.signing_key.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return jwt.encode(claims(config), raw, algorithm="HS256", headers={"kid": keys.signing_key.kid})


def _hs256_with_public_jwk_x(config: Settings, keys: Secrets) -> str:
    x = keys.signing_key.public_jwk()["x"].encode()
    return jwt.encode(claims(config), x, algorithm="HS256", headers={"kid": keys.signing_key.kid})


def _alg_none(config: Settings, keys: Secrets) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": keys.signing_key.kid}
    return f"{b64(header)}.{b64(claims(config))}."


def _alg_none_by_pyjwt(config: Settings, keys: Secrets) -> str:
    unsigned: Any = None  # pyjwt's "none" algorithm takes no key
    return jwt.encode(
        claims(config), unsigned, algorithm="none", headers={"kid": keys.signing_key.kid}
    )


def _foreign_key_claiming_our_kid(config: Settings, keys: Secrets) -> str:
    forger = Ed25519PrivateKey.generate()
    return jwt.encode(
        claims(config), forger, algorithm="EdDSA", headers={"kid": keys.signing_key.kid}
    )


def _foreign_key_with_its_own_kid(config: Settings, keys: Secrets) -> str:
    forger = SigningKey.generate()
    return jwt.encode(
        claims(config), forger.private_key, algorithm="EdDSA", headers={"kid": forger.kid}
    )


def _tampered_payload(config: Settings, keys: Secrets) -> str:
    header, _, signature = sign(claims(config, role=FINANCE), keys).split(".")
    return f"{header}.{b64(claims(config, role=ADMIN))}.{signature}"


def _expired(config: Settings, keys: Secrets) -> str:
    now = int(time.time())
    return sign(claims(config, iat=now - 900, exp=now - 60), keys)


def _issued_in_the_future(config: Settings, keys: Secrets) -> str:
    now = int(time.time())
    return sign(claims(config, iat=now + 120, exp=now + 600), keys)


def _not_yet_valid(config: Settings, keys: Secrets) -> str:
    return sign(claims(config, nbf=int(time.time()) + 120), keys)


TOKEN_NEGATIVES: dict[str, Any] = {
    "alg none": _alg_none,
    "alg none (pyjwt)": _alg_none_by_pyjwt,
    "HS256 keyed with the Ed25519 public key bytes": _hs256_with_public_key,
    "HS256 keyed with the public JWK x": _hs256_with_public_jwk_x,
    "signed by a key outside the key set, claiming our kid": _foreign_key_claiming_our_kid,
    "signed by a key outside the key set": _foreign_key_with_its_own_kid,
    "payload changed after signing": _tampered_payload,
    "expired": _expired,
    "issued in the future": _issued_in_the_future,
    "not yet valid (nbf)": _not_yet_valid,
    "wrong audience": lambda s, k: sign(claims(s, aud="another-api"), k),
    "audience list without ours": lambda s, k: sign(claims(s, aud=["a", "b"]), k),
    "wrong issuer": lambda s, k: sign(claims(s, iss="someone-else"), k),
    "unknown kid": lambda s, k: sign(claims(s), k, kid="no-such-key"),
    "missing kid": lambda s, k: sign(claims(s), k, kid=None),
    "kid not a string": lambda s, k: sign_raw({"alg": "EdDSA", "kid": 7}, claims(s), k),
    "wrong typ": lambda s, k: sign(claims(s, typ="refresh"), k),
    "missing typ": lambda s, k: sign(claims(s, typ=None), k),
    "merchant role": lambda s, k: sign(claims(s, role=MERCHANT), k),
    "system role": lambda s, k: sign(claims(s, role="system"), k),
    "missing role": lambda s, k: sign(claims(s, role=None), k),
    "empty subject": lambda s, k: sign(claims(s, sub=""), k),
    "member without mid": lambda s, k: sign(claims(s, role=MEMBER, sub="member:1"), k),
    "member with mid as text": lambda s, k: sign(
        claims(s, role=MEMBER, sub="member:1", mid="7"), k
    ),
    "member with mid true": lambda s, k: sign(claims(s, role=MEMBER, sub="member:1", mid=True), k),
    "member with subject not member:<id>": lambda s, k: sign(
        claims(s, role=MEMBER, sub="alice", mid=7), k
    ),
    "member with id 0": lambda s, k: sign(claims(s, role=MEMBER, sub="member:0", mid=7), k),
    "not a JWT": lambda s, k: "not-a-token",
    "three garbage segments": lambda s, k: "a.b.c",
    "two segments": lambda s, k: ".".join(sign(claims(s), k).split(".")[:2]),
}
# Each required claim, removed.
for _claim in ("exp", "iat", "iss", "aud", "sub"):
    TOKEN_NEGATIVES[f"missing {_claim}"] = lambda s, k, c=_claim: sign(
        {n: v for n, v in claims(s).items() if n != c}, k
    )


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(TOKEN_NEGATIVES))
async def test_invalid_tokens_are_rejected(
    no_db: Pool, keys: Secrets, config: Settings, case: str
) -> None:
    token = TOKEN_NEGATIVES[case](config, keys)
    message = await rejected(f"Bearer {token}", no_db, keys, config)
    assert message
    # Without the one defect, the same construction is accepted (the test can fail).
    assert await auth(f"Bearer {sign(claims(config), keys)}", no_db, keys, config)


def test_rejection_reasons_are_specific(config: Settings, keys: Secrets) -> None:
    def reason(token: str) -> str:
        with pytest.raises(AuthError) as error:
            verify_token(token, keys, config)
        return error.value.message

    assert reason(_expired(config, keys)) == "token has expired"
    assert reason(sign(claims(config), keys, kid=None)) == "token has no key id (kid)"
    assert reason(sign(claims(config), keys, kid="x")) == "token is signed by an unknown key"
    assert "alg" in reason(_hs256_with_public_key(config, keys))
    assert "alg" in reason(_alg_none(config, keys))
    assert "audience" in reason(sign(claims(config, aud="x"), keys)).lower()
    assert "issuer" in reason(sign(claims(config, iss="x"), keys)).lower()
    assert '"exp"' in reason(TOKEN_NEGATIVES["missing exp"](config, keys))
    assert "signature" in reason(_foreign_key_claiming_our_kid(config, keys)).lower()
    assert "typ" in reason(sign(claims(config, typ="refresh"), keys))
    assert reason("junk") == "malformed token"
    assert reason(sign_raw({"alg": "EdDSA", "kid": 7}, claims(config), keys)) == ("malformed token")
    # The hand-made signature itself is sound: with a proper kid it verifies.
    header = {"alg": "EdDSA", "kid": keys.signing_key.kid}
    assert verify_token(sign_raw(header, claims(config), keys), keys, config).role == ADMIN


# -- the Authorization header -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["", " ", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Token abc", "Bearer a b", "Bearerabc"],
)
def test_malformed_authorization_headers_are_rejected(header: str) -> None:
    with pytest.raises(AuthError):
        bearer_credential(header)


def test_overlong_credentials_are_rejected() -> None:
    assert bearer_credential("Bearer " + "a" * 4096) == "a" * 4096
    with pytest.raises(AuthError, match="too long"):
        bearer_credential("Bearer " + "a" * 4097)


# -- API keys through authenticate ------------------------------------------------------------


async def new_merchant(pool: Pool, settings: Settings, code: str) -> Merchant:
    return await create_merchant(
        pool, ADMIN_ACTOR, code=code, name=code, stripes=settings.balance_stripes
    )


@pytest.mark.anyio
async def test_a_merchant_key_authenticates(
    hub: Pool, secrets: Secrets, settings: Settings
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    info, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    actor = await auth(f"Bearer {key}", hub, secrets, settings)
    assert actor == Actor(role=MERCHANT, merchant_id=acme.id, subject=f"api_key:{info.id}")


@pytest.mark.anyio
async def test_bad_api_keys_are_rejected(
    hub: Pool, secrets: Secrets, settings: Settings, database_url: str
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    _, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    closed = await create_pool(database_url, settings)
    await closed.close()
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    # Malformed keys never reach the database (the closed pool would raise).
    for bad in (typo, key[:-1], "exk_live_short", "exk_test_" + key[9:]):
        message = await rejected(f"Bearer {bad}", closed, secrets, settings)
        assert message == "malformed API key (wrong format or checksum)"
    unknown = await rejected(f"Bearer {generate_api_key()}", hub, secrets, settings)
    assert unknown == "invalid API key: unknown, revoked or expired"


@pytest.mark.anyio
async def test_a_verified_key_is_served_from_the_cache(
    hub: Pool, secrets: Secrets, settings: Settings, database_url: str, cache: ApiKeyCache
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    _, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    own = await create_pool(database_url, settings)
    first = await authenticate(f"Bearer {key}", own, secrets, settings, cache=cache)
    await own.close()
    # The pool is closed: only the cache can answer.
    assert await authenticate(f"Bearer {key}", own, secrets, settings, cache=cache) == first
    assert len(cache) == 1


@pytest.mark.anyio
async def test_revocation_takes_effect_within_the_cache_ttl(
    hub: Pool, secrets: Secrets, settings: Settings
) -> None:
    now = [1000.0]
    cache = ApiKeyCache(clock=lambda: now[0])
    acme = await new_merchant(hub, settings, "acme")
    info, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    header = f"Bearer {key}"
    assert await authenticate(header, hub, secrets, settings, cache=cache) is not None
    await revoke_api_key(hub, ADMIN_ACTOR, info.id)
    now[0] += API_KEY_CACHE_TTL_S - 1
    assert await authenticate(header, hub, secrets, settings, cache=cache) is not None
    now[0] += 1
    with pytest.raises(AuthError):
        await authenticate(header, hub, secrets, settings, cache=cache)
    # Without a cache entry the revocation is immediate.
    with pytest.raises(AuthError):
        await auth(header, hub, secrets, settings)


@pytest.mark.anyio
async def test_suspension_and_expiry_are_rejected(
    hub: Pool, secrets: Secrets, settings: Settings
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    _, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    _, expiring = await create_api_key(
        hub,
        ADMIN_ACTOR,
        pepper=secrets.api_key_pepper,
        role=FINANCE,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with hub.connection() as conn:
        await conn.execute("UPDATE merchants SET status = 'suspended'")
        await conn.execute("UPDATE api_keys SET expires_at = now() WHERE role = 'finance'")
    for presented in (key, expiring):
        assert "invalid API key" in await rejected(f"Bearer {presented}", hub, secrets, settings)


def test_the_cache_honours_the_keys_own_expiry_and_its_size() -> None:
    now = [0.0]
    cache = ApiKeyCache(ttl_s=30, max_entries=2, clock=lambda: now[0])
    actor = Actor(role=FINANCE, subject="api_key:1")
    cache.put(b"expired", actor, datetime.now(UTC) - timedelta(seconds=1))
    assert cache.get(b"expired") is None
    cache.put(b"a", actor, None)
    cache.put(b"b", actor, datetime.now(UTC) + timedelta(hours=1))
    cache.put(b"c", actor, None)
    assert len(cache) == 2
    assert cache.get(b"a") is None  # the oldest entry made room
    assert cache.get(b"b") == actor
    assert cache.get(b"c") == actor
    now[0] = 30.0
    assert cache.get(b"b") is None
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


# -- the token cache --------------------------------------------------------------------------


def test_a_verified_token_is_served_from_the_cache_until_it_expires(
    config: Settings, keys: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exchange.api.auth as auth_module

    now = [time.time()]
    cache = TokenCache(ttl_s=3600, clock=lambda: now[0])
    exp = int(now[0]) + 60
    token = sign(claims(config, role=MEMBER, sub="member:5", mid=3, exp=exp), keys)
    actor = verify_token_cached(token, keys, config, cache)
    assert actor == Actor(role=MEMBER, member_id=5, merchant_id=3, subject="member:5")
    assert len(cache) == 1

    def no_signature_check(*args: Any) -> Any:
        raise AuthError("verified again")

    monkeypatch.setattr(auth_module, "_verify_token", no_signature_check)
    assert verify_token_cached(token, keys, config, cache) == actor  # no second check
    now[0] = exp + LEEWAY_S - 1
    assert verify_token_cached(token, keys, config, cache) == actor
    now[0] = exp + LEEWAY_S  # expired (beyond the leeway): checked again, and refused
    with pytest.raises(AuthError, match="verified again"):
        verify_token_cached(token, keys, config, cache)
    assert len(cache) == 0


def test_the_token_cache_is_bounded_by_its_ttl_and_size(config: Settings, keys: Secrets) -> None:
    now = [time.time()]
    cache = TokenCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    tokens = [sign(claims(config, sub=f"ops:{i}"), keys) for i in range(3)]
    for token in tokens:
        verify_token_cached(token, keys, config, cache)
    assert len(cache) == 2  # the oldest made room
    now[0] += 10
    assert cache.get((config.jwt_issuer, config.jwt_audience, tokens[2]), keys) is None


def test_a_cached_token_of_a_key_that_left_the_key_set_is_refused(
    config: Settings, keys: Secrets
) -> None:
    cache = TokenCache()
    token = sign(claims(config), keys)
    assert verify_token_cached(token, keys, config, cache).role == ADMIN
    other = Secrets(jwt_keys=(SigningKey.generate(),), api_key_pepper=keys.api_key_pepper)
    with pytest.raises(AuthError, match="unknown key"):
        verify_token_cached(token, other, config, cache)


def test_the_token_cache_keeps_audience_and_issuer_apart(
    tmp_path: Path, config: Settings, keys: Secrets
) -> None:
    cache = TokenCache()
    token = sign(claims(config), keys)
    verify_token_cached(token, keys, config, cache)
    elsewhere = Settings(data_dir=tmp_path / "data", jwt_audience="another-hub").validate()
    with pytest.raises(AuthError, match="invalid token"):
        verify_token_cached(token, keys, elsewhere, cache)


def test_refused_tokens_are_never_cached(config: Settings, keys: Secrets) -> None:
    cache = TokenCache()
    good = sign(claims(config), keys)
    head, payload, signature = good.split(".")
    forged = f"{head}.{b64(claims(config, role=FINANCE))}.{signature}"
    for _ in range(2):
        with pytest.raises(AuthError):
            verify_token_cached(forged, keys, config, cache)
    assert len(cache) == 0


# -- the 401 response -------------------------------------------------------------------------


def test_unauthenticated_response_shape() -> None:
    response = unauthenticated_response("token has expired")
    assert response.status_code == 401
    assert json.loads(bytes(response.body)) == {
        "errors": [{"message": "token has expired", "extensions": {"code": "UNAUTHENTICATED"}}]
    }
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.anyio
async def test_over_http_no_credential_still_answers_typename(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}
    assert "errors" not in response.json()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-token",
        "Basic dXNlcjpwdw==",
        "Bearer exk_live_0000",
        f"Bearer {generate_api_key()}",
    ],
)
async def test_over_http_a_bad_credential_is_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": header}
    )
    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


@pytest.mark.anyio
async def test_over_http_tokens_and_keys(
    client: httpx.AsyncClient, settings: Settings, pool: Pool
) -> None:
    secrets = load_or_create_secrets(settings.data_dir)
    query = {"query": "{ __typename }"}
    token = sign(claims(settings, role=FINANCE), secrets)
    response = await client.post(
        "/graphql", json=query, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}

    expired = _expired(settings, secrets)
    response = await client.post(
        "/graphql", json=query, headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "token has expired"

    await transaction(
        pool, lambda conn: bootstrap(conn, settings.settlement_currency, settings.balance_stripes)
    )
    info, key = await create_api_key(pool, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=FINANCE)
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.post("/graphql", json=query, headers=headers)).status_code == 200
    await revoke_api_key(pool, ADMIN_ACTOR, info.id)
    API_KEY_CACHE.clear()  # as if the cache TTL had passed
    response = await client.post("/graphql", json=query, headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
