"""Subcommands for credentials: merchants, API keys, access tokens, signing-key rotation.

- ``exchange merchant create --code CODE --name NAME [--exposure-limit DECIMAL]``
- ``exchange key create --role merchant|finance|admin [--merchant CODE] [--label L]``
- ``exchange key revoke KEY_ID`` and ``exchange key list [--merchant CODE]``
- ``exchange token --role admin|finance [--subject S] [--ttl SECONDS]``
- ``exchange token --role member --merchant CODE --customer-ref REF [--ttl SECONDS]``
- ``exchange keys rotate``

An API key is printed once, when it is created; the hub keeps only its keyed hash.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from exchange.cli import CliError, add_data_dir_option, command, open_database, settings_from_args
from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.domain.errors import Refusal
from exchange.domain.money import AmountError, decimal_to_micro
from exchange.keys import load_or_create_secrets, rotate_jwt_key
from exchange.ledger.engine import Conn
from exchange.services.actors import ADMIN, MEMBER, MERCHANT, Actor
from exchange.services.catalog import bootstrap, create_merchant
from exchange.services.credentials import (
    KEY_ROLES,
    MAX_MEMBER_TOKEN_TTL_S,
    MAX_OPERATOR_TOKEN_TTL_S,
    OPERATOR_ROLES,
    ApiKeyInfo,
    create_api_key,
    list_api_keys,
    mint_member_token,
    mint_operator_token,
    revoke_api_key,
)
from exchange.services.tx import Pool, transaction

T = TypeVar("T")

CLI_ADMIN = Actor(role=ADMIN, subject="cli")
SHOWN_ONCE = (
    "warning: this API key is shown only once and the hub does not store it;"
    " put it in a secret store now"
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _run(settings: Settings, work: Callable[[Pool, Settings], Awaitable[T]]) -> T:
    """Open the hub's database (migrated, bootstrapped) and run ``work`` with a small pool."""

    async def main(url: str) -> T:
        pool = await create_pool(url, settings, min_size=1, max_size=2)
        try:
            try:
                await transaction(
                    pool,
                    lambda conn: bootstrap(
                        conn, settings.settlement_currency, settings.balance_stripes
                    ),
                )
            except ValueError as exc:  # a settlement currency the ledger cannot use
                raise CliError(_one_line(exc)) from exc
            return await work(pool, settings)
        finally:
            await pool.close()

    with open_database(settings) as url:
        try:
            return asyncio.run(main(url))
        except Refusal as exc:
            raise CliError(exc.message) from exc
        except PoolTimeout as exc:
            raise CliError(f"cannot connect to the database: {_one_line(exc)}") from exc
        except psycopg.Error as exc:
            raise CliError(f"database error: {_one_line(exc)}") from exc


async def _merchant_id(pool: Pool, code: str) -> int:
    async def work(conn: Conn) -> int | None:
        cur = await conn.execute("SELECT id FROM merchants WHERE code = %s", (code,))
        row = await cur.fetchone()
        return None if row is None else int(row[0])

    merchant_id = await transaction(pool, work)
    if merchant_id is None:
        raise CliError(f"no merchant with code {code!r}")
    return merchant_id


def _print_new_key(info: ApiKeyInfo, key: str) -> None:
    print(f"api key id: {info.id}")
    print(f"api key: {key}")
    print(SHOWN_ONCE, file=sys.stderr)


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.isoformat(timespec="seconds")


# -- exchange merchant create -----------------------------------------------------------------


def _configure_merchant(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="onboard a merchant and print its first API key",
        description="Onboard a merchant and print its first API key (shown once).",
    )
    create.add_argument("--code", required=True, help="the merchant's code (a-z, 0-9, '-')")
    create.add_argument("--name", required=True, help="the merchant's display name")
    create.add_argument(
        "--exposure-limit",
        default=None,
        metavar="DECIMAL",
        help="largest net amount the merchant may owe, in the settlement currency",
    )
    add_data_dir_option(create)


@command("merchant", help="onboard merchants", configure=_configure_merchant)
def merchant(args: argparse.Namespace) -> int:
    limit: int | None = None
    if args.exposure_limit is not None:
        try:
            limit = decimal_to_micro(args.exposure_limit)
        except AmountError as exc:
            raise CliError(f"--exposure-limit: {exc.message}") from exc

    settings = settings_from_args(args)
    secrets = load_or_create_secrets(settings.data_dir)

    async def work(pool: Pool, settings: Settings) -> int:
        created = await create_merchant(
            pool,
            CLI_ADMIN,
            code=args.code,
            name=args.name,
            stripes=settings.balance_stripes,
            exposure_limit_micro=limit,
        )
        print(f"merchant: {created.code} (id {created.id})")
        try:
            info, key = await create_api_key(
                pool,
                CLI_ADMIN,
                pepper=secrets.api_key_pepper,
                role=MERCHANT,
                merchant_id=created.id,
                label="first key",
            )
        except (Refusal, psycopg.Error) as exc:
            raise CliError(
                f"merchant {created.code} was created but its API key was not"
                f" ({_one_line(exc)}); run 'exchange key create --role merchant"
                f" --merchant {created.code}'"
            ) from exc
        _print_new_key(info, key)
        return 0

    return _run(settings, work)


# -- exchange key create | revoke | list ------------------------------------------------------


def _configure_key(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="create an API key", description="Create an API key (shown once)."
    )
    create.add_argument("--role", required=True, choices=KEY_ROLES, help="the key's role")
    create.add_argument("--merchant", metavar="CODE", help="the merchant of a merchant key")
    create.add_argument("--label", default="", help="a note to recognise the key by")
    create.add_argument(
        "--expires-at",
        default=None,
        metavar="ISO8601",
        help="when the key stops working, with a time zone (default: never)",
    )
    add_data_dir_option(create)
    revoke = actions.add_parser(
        "revoke",
        help="revoke an API key",
        description="Revoke an API key; running servers stop accepting it within 30 seconds.",
    )
    revoke.add_argument("key_id", type=int, metavar="KEY_ID", help="the key's id")
    add_data_dir_option(revoke)
    listing = actions.add_parser(
        "list", help="list API keys", description="List API keys (never the keys themselves)."
    )
    listing.add_argument("--merchant", metavar="CODE", help="only this merchant's keys")
    add_data_dir_option(listing)


def _parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"--expires-at: {text!r} is not an ISO 8601 time") from exc
    if at.tzinfo is None:
        raise CliError("--expires-at needs a time zone, such as 2030-01-01T00:00:00+00:00")
    return at


async def _key_create(args: argparse.Namespace, pool: Pool, pepper: bytes) -> int:
    if (args.role == MERCHANT) != (args.merchant is not None):
        raise CliError("--merchant CODE is required for a merchant key and only for one")
    expires_at = _parse_expiry(args.expires_at)
    merchant_id = None if args.merchant is None else await _merchant_id(pool, args.merchant)
    info, key = await create_api_key(
        pool,
        CLI_ADMIN,
        pepper=pepper,
        role=args.role,
        merchant_id=merchant_id,
        label=args.label,
        expires_at=expires_at,
    )
    _print_new_key(info, key)
    return 0


async def _key_revoke(args: argparse.Namespace, pool: Pool) -> int:
    try:
        info = await revoke_api_key(pool, CLI_ADMIN, args.key_id)
    except Refusal as exc:
        raise CliError(f"no API key with id {args.key_id}") from exc
    print(f"api key {info.id} ({info.hint}) revoked at {_when(info.revoked_at)}")
    return 0


async def _key_list(args: argparse.Namespace, pool: Pool) -> int:
    merchant_id = None if args.merchant is None else await _merchant_id(pool, args.merchant)
    keys = await list_api_keys(pool, CLI_ADMIN, merchant_id)
    if not keys:
        print("no API keys")
        return 0
    header = ("ID", "ROLE", "MERCHANT", "KEY", "STATUS", "CREATED", "EXPIRES", "LAST USED", "LABEL")
    rows = [header] + [
        (
            str(k.id),
            k.role,
            k.merchant_code or "-",
            k.hint,
            k.status(),
            _when(k.created_at),
            _when(k.expires_at),
            _when(k.last_used_at),
            k.label,
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


@command("key", help="create, revoke and list API keys", configure=_configure_key)
def key(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    pepper = load_or_create_secrets(settings.data_dir).api_key_pepper

    async def work(pool: Pool, settings: Settings) -> int:
        if args.action == "create":
            return await _key_create(args, pool, pepper)
        if args.action == "revoke":
            return await _key_revoke(args, pool)
        return await _key_list(args, pool)

    return _run(settings, work)


# -- exchange token ---------------------------------------------------------------------------


def _configure_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role", required=True, choices=(*OPERATOR_ROLES, MEMBER), help="the token's role"
    )
    parser.add_argument(
        "--subject", default=None, help="who the operator is (default: the login name)"
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=None,
        metavar="SECONDS",
        help="lifetime (default: EXCHANGE_ACCESS_TOKEN_TTL_S, or EXCHANGE_MEMBER_TOKEN_TTL_S for"
        f" member tokens; at most {MAX_OPERATOR_TOKEN_TTL_S}, or {MAX_MEMBER_TOKEN_TTL_S} for"
        " member tokens)",
    )
    parser.add_argument("--merchant", metavar="CODE", help="member tokens: the minting merchant")
    parser.add_argument("--customer-ref", metavar="REF", help="member tokens: the customer")
    add_data_dir_option(parser)


def _operator_subject(given: str | None) -> str:
    if given is not None:
        return given
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


@command("token", help="print an access token (JWT)", configure=_configure_token)
def token(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    secrets = load_or_create_secrets(settings.data_dir)
    if args.role != MEMBER:
        if args.merchant is not None or args.customer_ref is not None:
            raise CliError("--merchant and --customer-ref are only for member tokens")
        try:
            issued = mint_operator_token(
                secrets, args.role, _operator_subject(args.subject), args.ttl, settings=settings
            )
        except Refusal as exc:
            raise CliError(exc.message) from exc
        print(issued.token)
        return 0
    if args.merchant is None or args.customer_ref is None:
        raise CliError("a member token needs --merchant CODE and --customer-ref REF")
    if args.subject is not None:
        raise CliError("--subject is only for operator tokens")

    async def work(pool: Pool, settings: Settings) -> int:
        merchant = Actor(role=MERCHANT, merchant_id=await _merchant_id(pool, args.merchant))
        try:
            issued = await mint_member_token(
                pool, merchant, args.customer_ref, args.ttl, secrets=secrets, settings=settings
            )
        except Refusal as exc:
            if exc.code == "NOT_FOUND":
                raise CliError(
                    f"merchant {args.merchant} has no customer {args.customer_ref!r}"
                ) from exc
            raise
        print(issued.token)
        return 0

    return _run(settings, work)


# -- exchange keys rotate ---------------------------------------------------------------------


def _configure_keys(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="add a new token-signing key",
        description="Add a new token-signing key; it signs from now on. Older keys keep"
        " verifying, so tokens already issued stay valid until they expire. Restart running"
        " servers so that they sign with the new key and accept tokens signed with it.",
    )
    add_data_dir_option(rotate)


@command("keys", help="manage the token-signing keys", configure=_configure_keys)
def keys(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    new = rotate_jwt_key(settings.data_dir)
    print(f"new signing key: {new.kid}")
    print(
        "it signs new tokens from now on; tokens signed with older keys stay valid until they"
        " expire; restart running servers to load it",
        file=sys.stderr,
    )
    return 0
