"""API keys, member and operator tokens, and the credential subcommands of the CLI."""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import jwt
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.api.auth import verify_token
from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.keys import Secrets, load_or_create_secrets
from exchange.services.actors import ADMIN, FINANCE, MEMBER, MERCHANT, Actor
from exchange.services.catalog import Merchant, bootstrap, create_merchant
from exchange.services.credentials import (
    API_KEY_LENGTH,
    API_KEY_PREFIX,
    BASE62_ALPHABET,
    CHECKSUM_CHARS,
    api_key_checksum,
    authenticate_api_key,
    base62,
    create_api_key,
    format_api_key,
    generate_api_key,
    hash_api_key,
    is_well_formed_api_key,
    list_api_keys,
    mint_member_token,
    mint_operator_token,
    revoke_api_key,
)
from exchange.services.members import link_member
from exchange.services.tx import Pool, transaction

ADMIN_ACTOR = Actor(role=ADMIN, subject="test")
KEY_RE = re.compile(r"^exk_live_[0-9A-Za-z]{49}$")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def secrets(settings: Settings) -> Secrets:
    return load_or_create_secrets(settings.data_dir)


@pytest.fixture
async def hub(pool: Pool, settings: Settings) -> Pool:
    """The test pool on a bootstrapped hub."""
    await transaction(
        pool, lambda conn: bootstrap(conn, settings.settlement_currency, settings.balance_stripes)
    )
    return pool


async def new_merchant(pool: Pool, settings: Settings, code: str) -> Merchant:
    return await create_merchant(
        pool, ADMIN_ACTOR, code=code, name=code.title(), stripes=settings.balance_stripes
    )


def as_merchant(merchant: Merchant) -> Actor:
    return Actor(role=MERCHANT, merchant_id=merchant.id)


async def merchant_key(pool: Pool, secrets: Secrets, merchant: Merchant, **kw: Any) -> str:
    _, key = await create_api_key(
        pool,
        ADMIN_ACTOR,
        pepper=secrets.api_key_pepper,
        role=MERCHANT,
        merchant_id=merchant.id,
        **kw,
    )
    return key


async def fetch(pool: Pool, query: str, *params: object) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        rows: list[tuple[Any, ...]] = await cur.fetchall()
        return rows


async def execute(pool: Pool, query: str, *params: object) -> None:
    async with pool.connection() as conn:
        await conn.execute(query, params)


# -- the key format (no database) -------------------------------------------------------------


def test_a_new_key_has_the_documented_format() -> None:
    key = generate_api_key()
    assert KEY_RE.match(key)
    assert len(key) == API_KEY_LENGTH == 58
    body, checksum = key[:-CHECKSUM_CHARS], key[-CHECKSUM_CHARS:]
    assert body.startswith(API_KEY_PREFIX)
    assert checksum == api_key_checksum(body)
    assert is_well_formed_api_key(key)
    assert generate_api_key() != key


def test_the_checksum_is_a_base62_crc32_of_the_rest() -> None:
    body = API_KEY_PREFIX + "0" * 43
    assert api_key_checksum(body) == base62(zlib.crc32(body.encode()), 6)
    assert base62(0, 6) == "000000"
    assert base62(61, 2) == "0z"
    assert base62(62, 2) == "10"
    assert base62(2**32 - 1, 6) == "4gfFC3"
    with pytest.raises(ValueError):
        base62(62**6, 6)


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_base62_is_fixed_width_and_reversible(n: int) -> None:
    text = base62(n, 43)
    assert len(text) == 43
    value = 0
    for ch in text:
        value = value * 62 + BASE62_ALPHABET.index(ch)
    assert value == n


RANDOM_32 = st.binary(min_size=32, max_size=32)


@given(RANDOM_32)
def test_any_32_bytes_make_a_well_formed_key(raw: bytes) -> None:
    key = format_api_key(raw)
    assert KEY_RE.match(key)
    assert is_well_formed_api_key(key)


@given(RANDOM_32, st.data())
def test_any_one_character_typo_fails_the_checksum(raw: bytes, data: st.DataObject) -> None:
    key = format_api_key(raw)
    position = data.draw(st.integers(min_value=len(API_KEY_PREFIX), max_value=len(key) - 1))
    replacement = data.draw(st.sampled_from(BASE62_ALPHABET).filter(lambda c: c != key[position]))
    typo = key[:position] + replacement + key[position + 1 :]
    assert not is_well_formed_api_key(typo)


@given(RANDOM_32, st.data())
def test_swapping_two_neighbouring_characters_fails_the_checksum(
    raw: bytes, data: st.DataObject
) -> None:
    key = format_api_key(raw)
    i = data.draw(st.integers(min_value=len(API_KEY_PREFIX), max_value=len(key) - 2))
    if key[i] == key[i + 1]:
        return
    swapped = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
    assert not is_well_formed_api_key(swapped)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1],
        lambda k: k + "0",
        lambda k: k.replace("exk_live_", "exk_test_"),
        lambda k: k.replace("exk_live_", "EXK_LIVE_"),
        lambda k: k[:20] + "-" + k[21:],
        lambda k: " " + k,
        lambda k: "",
    ],
)
def test_malformed_keys_are_not_well_formed(mangle: Any) -> None:
    assert not is_well_formed_api_key(mangle(generate_api_key()))


# -- creating and storing keys ----------------------------------------------------------------


@pytest.mark.anyio
async def test_only_the_keyed_hash_is_stored(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    info, key = await create_api_key(
        hub,
        ADMIN_ACTOR,
        pepper=secrets.api_key_pepper,
        role=MERCHANT,
        merchant_id=acme.id,
        label="till 1",
    )
    assert KEY_RE.match(key)
    assert (info.role, info.merchant_id, info.merchant_code, info.label) == (
        MERCHANT,
        acme.id,
        "acme",
        "till 1",
    )
    assert info.prefix == key[:12]
    assert info.last4 == key[-4:]
    assert info.hint == f"{key[:12]}…{key[-4:]}"
    assert info.revoked_at is None
    assert info.expires_at is None
    assert info.last_used_at is None
    assert info.status() == "active"

    [(stored_hash, row_text)] = await fetch(
        hub, "SELECT key_hash, row_to_json(k)::text FROM api_keys k WHERE id = %s", info.id
    )
    assert bytes(stored_hash) == hmac.new(secrets.api_key_pepper, key.encode(), sha256).digest()
    assert bytes(stored_hash) == hash_api_key(secrets.api_key_pepper, key)
    secret_part = key[len(API_KEY_PREFIX) :]
    assert key not in row_text
    assert secret_part not in row_text
    assert secret_part[3:-4] not in row_text  # neither the middle (prefix and last4 are shown)
    # The hash is keyed: without the pepper it is not the plain SHA-256 of the key.
    assert bytes(stored_hash) != sha256(key.encode()).digest()


@pytest.mark.anyio
async def test_only_an_admin_creates_keys(hub: Pool, settings: Settings, secrets: Secrets) -> None:
    acme = await new_merchant(hub, settings, "acme")
    for actor in (as_merchant(acme), Actor(role=FINANCE), Actor(role=MEMBER, member_id=1)):
        with pytest.raises(Forbidden):
            await create_api_key(
                hub, actor, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
            )
    assert await fetch(hub, "SELECT id FROM api_keys") == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("role", "merchant", "extra", "code"),
    [
        ("member", True, {}, "INVALID_ROLE"),
        ("system", False, {}, "INVALID_ROLE"),
        ("merchant", False, {}, "INVALID_MERCHANT"),
        ("finance", True, {}, "INVALID_MERCHANT"),
        ("admin", True, {}, "INVALID_MERCHANT"),
        ("merchant", True, {"label": "x" * 201}, "INVALID_LABEL"),
        ("merchant", True, {"label": "a\nb"}, "INVALID_LABEL"),
        ("merchant", True, {"expires_at": datetime(2030, 1, 1)}, "INVALID_TIME"),  # noqa: DTZ001
        (
            "merchant",
            True,
            {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
            "INVALID_TIME",
        ),
    ],
)
async def test_invalid_key_requests_are_refused(
    hub: Pool,
    settings: Settings,
    secrets: Secrets,
    role: str,
    merchant: bool,
    extra: dict[str, Any],
    code: str,
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    with pytest.raises(Refusal) as refused:
        await create_api_key(
            hub,
            ADMIN_ACTOR,
            pepper=secrets.api_key_pepper,
            role=role,
            merchant_id=acme.id if merchant else None,
            **extra,
        )
    assert refused.value.code == code
    assert await fetch(hub, "SELECT id FROM api_keys") == []


@pytest.mark.anyio
async def test_a_key_for_a_missing_merchant_is_not_found(hub: Pool, secrets: Secrets) -> None:
    with pytest.raises(NotFound):
        await create_api_key(
            hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=999
        )


@pytest.mark.anyio
async def test_operator_keys_carry_no_merchant(hub: Pool, secrets: Secrets) -> None:
    for role in (FINANCE, ADMIN):
        info, key = await create_api_key(hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=role)
        assert info.merchant_id is None
        actor = await authenticate_api_key(hub, secrets.api_key_pepper, key)
        assert actor == Actor(role=role, subject=f"api_key:{info.id}")


# -- authenticating keys ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_valid_key_authenticates_as_its_merchant(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    info, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    actor = await authenticate_api_key(hub, secrets.api_key_pepper, key)
    assert actor == Actor(role=MERCHANT, merchant_id=acme.id, subject=f"api_key:{info.id}")
    assert actor.initiator == f"merchant:{acme.id}"
    # On a connection, too (the caller's transaction).
    async with hub.connection() as conn:
        assert await authenticate_api_key(conn, secrets.api_key_pepper, key) == actor


@pytest.mark.anyio
async def test_a_typo_is_refused_without_a_database_lookup(
    hub: Pool, settings: Settings, secrets: Secrets, database_url: str
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    key = await merchant_key(hub, secrets, acme)
    typo = key[:30] + ("A" if key[30] != "A" else "B") + key[31:]
    closed = await create_pool(database_url, settings)
    await closed.close()
    # A closed pool raises on any use: a lookup would fail loudly instead of returning None.
    assert await authenticate_api_key(closed, secrets.api_key_pepper, typo) is None
    with pytest.raises(psycopg.Error):
        await authenticate_api_key(closed, secrets.api_key_pepper, key)


@pytest.mark.anyio
async def test_a_well_formed_unknown_key_or_a_foreign_pepper_is_refused(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    key = await merchant_key(hub, secrets, acme)
    assert await authenticate_api_key(hub, secrets.api_key_pepper, generate_api_key()) is None
    assert await authenticate_api_key(hub, b"another pepper" * 3, key) is None


@pytest.mark.anyio
async def test_a_revoked_key_is_refused(hub: Pool, settings: Settings, secrets: Secrets) -> None:
    acme = await new_merchant(hub, settings, "acme")
    info, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is not None
    revoked = await revoke_api_key(hub, ADMIN_ACTOR, info.id)
    assert revoked.revoked_at is not None
    assert revoked.status() == "revoked"
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is None
    # Revoking again keeps the first revocation time.
    again = await revoke_api_key(hub, ADMIN_ACTOR, info.id)
    assert again.revoked_at == revoked.revoked_at


@pytest.mark.anyio
async def test_an_expired_key_is_refused(hub: Pool, settings: Settings, secrets: Secrets) -> None:
    acme = await new_merchant(hub, settings, "acme")
    soon = datetime.now(UTC) + timedelta(hours=1)
    info, key = await create_api_key(
        hub,
        ADMIN_ACTOR,
        pepper=secrets.api_key_pepper,
        role=MERCHANT,
        merchant_id=acme.id,
        expires_at=soon,
    )
    assert info.expires_at == soon
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is not None
    await execute(hub, "UPDATE api_keys SET expires_at = now() - interval '1 second'")
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is None
    [listed] = await list_api_keys(hub, ADMIN_ACTOR)
    assert listed.status() == "expired"


@pytest.mark.anyio
async def test_two_keys_are_valid_during_rotation(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    old_info, old = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    new_info, new = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=acme.id
    )
    old_actor = await authenticate_api_key(hub, secrets.api_key_pepper, old)
    new_actor = await authenticate_api_key(hub, secrets.api_key_pepper, new)
    assert old_actor is not None
    assert new_actor is not None
    assert old_actor.merchant_id == new_actor.merchant_id == acme.id
    assert old_actor.initiator == new_actor.initiator  # idempotency keys survive a rotation
    # The merchant revokes its old key itself once the new one is deployed.
    await revoke_api_key(hub, as_merchant(acme), old_info.id)
    assert await authenticate_api_key(hub, secrets.api_key_pepper, old) is None
    assert await authenticate_api_key(hub, secrets.api_key_pepper, new) == new_actor
    assert [k.status() for k in await list_api_keys(hub, as_merchant(acme))] == [
        "revoked",
        "active",
    ]
    assert new_info.id != old_info.id


@pytest.mark.anyio
async def test_a_suspended_merchants_keys_are_refused(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    key = await merchant_key(hub, secrets, acme)
    await execute(hub, "UPDATE merchants SET status = 'suspended' WHERE id = %s", acme.id)
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is None
    await execute(hub, "UPDATE merchants SET status = 'active' WHERE id = %s", acme.id)
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is not None


@pytest.mark.anyio
async def test_last_used_is_written_at_most_once_a_minute(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    key = await merchant_key(hub, secrets, acme)
    query = "SELECT last_used_at, xmin::text FROM api_keys"
    assert (await fetch(hub, query))[0][0] is None
    await authenticate_api_key(hub, secrets.api_key_pepper, key)
    [(first, version)] = await fetch(hub, query)
    assert first is not None
    for _ in range(3):
        await authenticate_api_key(hub, secrets.api_key_pepper, key)
    assert await fetch(hub, query) == [(first, version)]  # not rewritten: same row version
    await execute(hub, "UPDATE api_keys SET last_used_at = now() - interval '61 seconds'")
    await authenticate_api_key(hub, secrets.api_key_pepper, key)
    [(later, _)] = await fetch(hub, query)
    assert later > first


# -- listing and revoking ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_listing_is_scoped_to_the_caller(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    bolt = await new_merchant(hub, settings, "bolt")
    await merchant_key(hub, secrets, acme, label="a1")
    await merchant_key(hub, secrets, bolt, label="b1")
    await merchant_key(hub, secrets, acme, label="a2")
    await create_api_key(hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=FINANCE, label="f")

    assert [k.label for k in await list_api_keys(hub, ADMIN_ACTOR)] == ["a1", "b1", "a2", "f"]
    assert [k.label for k in await list_api_keys(hub, ADMIN_ACTOR, acme.id)] == ["a1", "a2"]
    assert [k.label for k in await list_api_keys(hub, as_merchant(acme))] == ["a1", "a2"]
    assert [k.label for k in await list_api_keys(hub, as_merchant(bolt))] == ["b1"]
    # A foreign merchant id shows the same as a missing one: nothing.
    assert await list_api_keys(hub, as_merchant(acme), bolt.id) == []
    assert await list_api_keys(hub, as_merchant(acme), 999) == []
    for actor in (Actor(role=FINANCE), Actor(role=MEMBER, member_id=1, merchant_id=acme.id)):
        with pytest.raises(Forbidden):
            await list_api_keys(hub, actor)


@pytest.mark.anyio
async def test_a_merchant_cannot_revoke_another_merchants_key(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    bolt = await new_merchant(hub, settings, "bolt")
    info, key = await create_api_key(
        hub, ADMIN_ACTOR, pepper=secrets.api_key_pepper, role=MERCHANT, merchant_id=bolt.id
    )
    with pytest.raises(NotFound) as foreign:
        await revoke_api_key(hub, as_merchant(acme), info.id)
    with pytest.raises(NotFound) as missing:
        await revoke_api_key(hub, as_merchant(acme), 999)
    assert (foreign.value.code, foreign.value.message) == (
        missing.value.code,
        missing.value.message,
    )
    with pytest.raises(Forbidden):
        await revoke_api_key(hub, Actor(role=FINANCE), info.id)
    assert await authenticate_api_key(hub, secrets.api_key_pepper, key) is not None


# -- tokens -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_member_token_names_the_member_and_the_minting_merchant(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    member_id, _ = await link_member(hub, as_merchant(acme), "cust-1")
    issued = await mint_member_token(
        hub, as_merchant(acme), "cust-1", secrets=secrets, settings=settings
    )
    assert issued.subject == f"member:{member_id}"
    assert issued.kid == secrets.signing_key.kid
    ttl = (issued.expires_at - datetime.now(UTC)).total_seconds()
    assert settings.member_token_ttl_s - 5 <= ttl <= settings.member_token_ttl_s
    actor = verify_token(issued.token, secrets, settings)
    assert actor == Actor(
        role=MEMBER, member_id=member_id, merchant_id=acme.id, subject=f"member:{member_id}"
    )
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["typ"] == "access"
    assert claims["role"] == "member"
    assert claims["mid"] == acme.id
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "typ", "sub", "role", "mid"}


@pytest.mark.anyio
async def test_a_member_token_for_an_unlinked_customer_is_not_found(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    with pytest.raises(NotFound) as refused:
        await mint_member_token(
            hub, as_merchant(acme), "nobody", secrets=secrets, settings=settings
        )
    assert refused.value.code == "NOT_FOUND"


@pytest.mark.anyio
async def test_a_merchant_cannot_mint_for_another_merchants_customer(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    bolt = await new_merchant(hub, settings, "bolt")
    await link_member(hub, as_merchant(acme), "acme-only")
    with pytest.raises(NotFound) as refused:
        await mint_member_token(
            hub, as_merchant(bolt), "acme-only", secrets=secrets, settings=settings
        )
    assert refused.value.code == "NOT_FOUND"
    # The same reference at two merchants names two different customers.
    acme_member, _ = await link_member(hub, as_merchant(acme), "shared-ref")
    bolt_member, _ = await link_member(hub, as_merchant(bolt), "shared-ref")
    issued = await mint_member_token(
        hub, as_merchant(bolt), "shared-ref", secrets=secrets, settings=settings
    )
    actor = verify_token(issued.token, secrets, settings)
    assert (actor.member_id, actor.merchant_id) == (bolt_member, bolt.id)
    assert bolt_member != acme_member


@pytest.mark.anyio
async def test_only_an_active_merchant_mints_member_tokens(
    hub: Pool, settings: Settings, secrets: Secrets
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    await link_member(hub, as_merchant(acme), "cust-1")
    for actor in (ADMIN_ACTOR, Actor(role=FINANCE), Actor(role=MEMBER, member_id=1)):
        with pytest.raises(Forbidden):
            await mint_member_token(hub, actor, "cust-1", secrets=secrets, settings=settings)
    await execute(hub, "UPDATE merchants SET status = 'suspended'")
    with pytest.raises(Refusal) as refused:
        await mint_member_token(
            hub, as_merchant(acme), "cust-1", secrets=secrets, settings=settings
        )
    assert refused.value.code == "MERCHANT_SUSPENDED"


@pytest.mark.anyio
@pytest.mark.parametrize("ttl", [0, 59, 3601])
async def test_member_token_lifetimes_are_bounded(
    hub: Pool, settings: Settings, secrets: Secrets, ttl: int
) -> None:
    acme = await new_merchant(hub, settings, "acme")
    await link_member(hub, as_merchant(acme), "cust-1")
    with pytest.raises(Refusal) as refused:
        await mint_member_token(
            hub, as_merchant(acme), "cust-1", ttl, secrets=secrets, settings=settings
        )
    assert refused.value.code == "INVALID_TTL"
    issued = await mint_member_token(
        hub, as_merchant(acme), "cust-1", 3600, secrets=secrets, settings=settings
    )
    assert verify_token(issued.token, secrets, settings).role == MEMBER


def test_operator_tokens(settings: Settings, secrets: Secrets) -> None:
    for role in (ADMIN, FINANCE):
        issued = mint_operator_token(secrets, role, "alice", 600, settings=settings)
        assert verify_token(issued.token, secrets, settings) == Actor(role=role, subject="alice")
    with pytest.raises(Refusal, match="role"):
        mint_operator_token(secrets, MERCHANT, "alice", settings=settings)
    with pytest.raises(Refusal, match="role"):
        mint_operator_token(secrets, MEMBER, "alice", settings=settings)
    for subject in ("", " ", "member:1", "x" * 129, "a\tb"):
        with pytest.raises(Refusal) as refused:
            mint_operator_token(secrets, ADMIN, subject, settings=settings)
        assert refused.value.code == "INVALID_SUBJECT"
    for ttl in (59, 86_401):
        with pytest.raises(Refusal) as refused:
            mint_operator_token(secrets, ADMIN, "alice", ttl, settings=settings)
        assert refused.value.code == "INVALID_TTL"


# -- the command line -------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    assert settings.database_url is not None
    env["EXCHANGE_DATABASE_URL"] = settings.database_url
    env["EXCHANGE_DATA_DIR"] = str(settings.data_dir)
    return env


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        env=cli_env(settings),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exchange: error: ")
    assert fragment in lines[0]


def printed(stdout: str, label: str) -> str:
    [value] = [line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith(label)]
    return value


@pytest.mark.anyio
async def test_cli_merchant_create_prints_a_working_key_once(
    pool: Pool, settings: Settings
) -> None:
    result = run_cli(
        settings,
        "merchant",
        "create",
        "--code",
        "acme",
        "--name",
        "Acme Stores",
        "--exposure-limit",
        "2500.50",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^merchant: acme \(id \d+\)$", result.stdout, re.M)
    key = printed(result.stdout, "api key: ")
    assert KEY_RE.match(key)
    assert "shown only once" in result.stderr
    assert "not store" in result.stderr

    secrets = load_or_create_secrets(settings.data_dir)
    actor = await authenticate_api_key(pool, secrets.api_key_pepper, key)
    [(merchant_id, name, limit)] = await fetch(
        pool, "SELECT id, name, exposure_limit_micro FROM merchants WHERE code = 'acme'"
    )
    assert (name, limit) == ("Acme Stores", 2_500_500_000)
    assert actor is not None
    assert actor.role == MERCHANT
    assert actor.merchant_id == merchant_id
    # The hub was bootstrapped in the same run (settlement currency and hub accounts).
    assert await fetch(pool, "SELECT code FROM currencies WHERE kind = 'settlement'") == [
        (settings.settlement_currency,)
    ]
    # The key is nowhere in the database.
    [(dump,)] = await fetch(pool, "SELECT string_agg(row_to_json(k)::text, '') FROM api_keys k")
    assert key[len(API_KEY_PREFIX) :] not in dump

    again = run_cli(settings, "merchant", "create", "--code", "acme", "--name", "Other")
    assert_one_line_error(again, "already exists")
    bad = run_cli(settings, "merchant", "create", "--code", "x y", "--name", "N")
    assert_one_line_error(bad, "merchant code")
    bad_limit = run_cli(
        settings, "merchant", "create", "--code", "bolt", "--name", "B", "--exposure-limit", "-1"
    )
    assert_one_line_error(bad_limit, "--exposure-limit")


@pytest.mark.anyio
async def test_cli_operator_and_member_tokens(pool: Pool, settings: Settings) -> None:
    result = run_cli(settings, "token", "--role", "finance", "--subject", "bob", "--ttl", "300")
    assert result.returncode == 0, result.stderr
    secrets = load_or_create_secrets(settings.data_dir)
    token = result.stdout.strip()
    assert verify_token(token, secrets, settings) == Actor(role=FINANCE, subject="bob")

    created = run_cli(settings, "merchant", "create", "--code", "acme", "--name", "Acme")
    assert created.returncode == 0, created.stderr
    [(merchant_id,)] = await fetch(pool, "SELECT id FROM merchants WHERE code = 'acme'")
    member_id, _ = await link_member(pool, Actor(role=MERCHANT, merchant_id=merchant_id), "c-42")
    member = run_cli(
        settings, "token", "--role", "member", "--merchant", "acme", "--customer-ref", "c-42"
    )
    assert member.returncode == 0, member.stderr
    actor = verify_token(member.stdout.strip(), secrets, settings)
    assert (actor.role, actor.member_id, actor.merchant_id) == (MEMBER, member_id, merchant_id)

    unlinked = run_cli(
        settings, "token", "--role", "member", "--merchant", "acme", "--customer-ref", "c-43"
    )
    assert_one_line_error(unlinked, "no customer 'c-43'")
    unknown = run_cli(
        settings, "token", "--role", "member", "--merchant", "nope", "--customer-ref", "c-42"
    )
    assert_one_line_error(unknown, "no merchant with code 'nope'")
    assert_one_line_error(run_cli(settings, "token", "--role", "member"), "--customer-ref")
    assert_one_line_error(run_cli(settings, "token", "--role", "admin", "--ttl", "5"), "seconds")


@pytest.mark.anyio
async def test_cli_keys_rotate_keeps_old_tokens_valid(pool: Pool, settings: Settings) -> None:
    before = run_cli(settings, "token", "--role", "admin", "--subject", "ops")
    assert before.returncode == 0, before.stderr
    old_kid = load_or_create_secrets(settings.data_dir).signing_key.kid
    rotated = run_cli(settings, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = printed(rotated.stdout, "new signing key: ")
    secrets = load_or_create_secrets(settings.data_dir)
    assert [k.kid for k in secrets.jwt_keys] == [old_kid, new_kid]
    assert verify_token(before.stdout.strip(), secrets, settings).subject == "ops"
    after = run_cli(settings, "token", "--role", "admin", "--subject", "ops")
    assert jwt.get_unverified_header(after.stdout.strip())["kid"] == new_kid
    assert verify_token(after.stdout.strip(), secrets, settings).role == ADMIN


@pytest.mark.anyio
async def test_cli_key_create_list_revoke(pool: Pool, settings: Settings) -> None:
    created = run_cli(settings, "merchant", "create", "--code", "acme", "--name", "Acme")
    assert created.returncode == 0, created.stderr
    first = printed(created.stdout, "api key: ")
    second = run_cli(
        settings, "key", "create", "--role", "merchant", "--merchant", "acme", "--label", "rotation"
    )
    assert second.returncode == 0, second.stderr
    second_key = printed(second.stdout, "api key: ")
    second_id = int(printed(second.stdout, "api key id: "))
    finance = run_cli(settings, "key", "create", "--role", "finance", "--label", "books")
    assert finance.returncode == 0, finance.stderr

    listing = run_cli(settings, "key", "list", "--merchant", "acme")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["ID", "ROLE", "MERCHANT", "KEY", "STATUS"]
    assert len(lines) == 3
    assert all("acme" in line and "active" in line for line in lines[1:])
    assert first not in listing.stdout
    assert second_key not in listing.stdout
    assert f"{second_key[:12]}…{second_key[-4:]}" in listing.stdout
    everything = run_cli(settings, "key", "list")
    assert "books" in everything.stdout
    assert len(everything.stdout.strip().splitlines()) == 4

    revoked = run_cli(settings, "key", "revoke", str(second_id))
    assert revoked.returncode == 0, revoked.stderr
    assert f"api key {second_id} " in revoked.stdout
    secrets = load_or_create_secrets(settings.data_dir)
    assert await authenticate_api_key(pool, secrets.api_key_pepper, second_key) is None
    assert await authenticate_api_key(pool, secrets.api_key_pepper, first) is not None
    assert_one_line_error(run_cli(settings, "key", "revoke", "9999"), "no API key with id 9999")
    assert_one_line_error(
        run_cli(settings, "key", "create", "--role", "finance", "--merchant", "acme"), "--merchant"
    )
    assert_one_line_error(
        run_cli(settings, "key", "create", "--role", "merchant", "--merchant", "zzz"),
        "no merchant with code 'zzz'",
    )
