"""Finance subcommands: ``seal``, ``close-batch``, ``statement`` and ``trial-balance``.

Importing this module (the command line imports every ``exchange/cli_*.py``) also adds the
finance checks -- hash chain, batches, statements, payments -- to ``exchange verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from exchange.cli import CliError, add_data_dir_option, command, open_database, settings_from_args
from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.domain.errors import Refusal
from exchange.domain.money import micro_to_decimal, points_to_decimal
from exchange.finance import checks as _checks  # registers the verify checks
from exchange.finance.batches import close_batch
from exchange.finance.chain import seal
from exchange.finance.metrics import trial_balance
from exchange.finance.reports import get_batch
from exchange.finance.statements import csv_records, csv_text, load_statement, statement_lines
from exchange.keys import load_or_create_secrets
from exchange.services.actors import FINANCE, Actor
from exchange.services.tx import Pool

T = TypeVar("T")
CLI_ACTOR = Actor(FINANCE, subject="cli")

assert _checks.FINANCE_CHECKS


def _run(settings: Settings, work: Callable[[Pool], Awaitable[T]]) -> T:
    async def main(url: str) -> T:
        pool = await create_pool(url, settings, min_size=1, max_size=3)
        try:
            return await work(pool)
        finally:
            await pool.close()

    with open_database(settings) as url:
        try:
            return asyncio.run(main(url))
        except Refusal as exc:
            raise CliError(f"{exc.code}: {exc.message}") from exc


# -- seal ----------------------------------------------------------------------------------------


@command(
    "seal",
    help="extend the hash chain over every committed entry not sealed yet",
    configure=add_data_dir_option,
)
def seal_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    result = _run(settings, lambda pool: seal(pool, sealed_by="cli"))
    print(
        f"sealed {result.entries:,} entries in {result.blocks} block(s);"
        f" chain head block {result.head.block} {result.head.hash.hex()}"
    )
    return 0


# -- close-batch ---------------------------------------------------------------------------------


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +08:00")
    return moment


def _configure_close(parser: argparse.ArgumentParser) -> None:
    add_data_dir_option(parser)
    parser.add_argument(
        "--cutoff", type=_timestamp, default=None, help="ISO 8601 cut-off (default: now)"
    )
    parser.add_argument(
        "--key", default=None, help="idempotency key (a retry with the same key replays)"
    )


@command("close-batch", help="close the next settlement batch", configure=_configure_close)
def close_batch_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    secrets = load_or_create_secrets(settings.data_dir)
    key = args.key or f"cli-{uuid.uuid4().hex}"

    async def work(pool: Pool) -> str:
        closed = await close_batch(
            pool,
            CLI_ACTOR,
            secrets=secrets,
            minor_unit=settings.settlement_minor_unit,
            idempotency_key=key,
            cutoff=args.cutoff,
        )
        async with pool.connection() as conn:
            batch = await get_batch(conn, closed.batch_id)
        assert batch is not None
        verb = "replayed" if closed.replayed else "closed"
        return (
            f"{verb} batch {batch.id}: {batch.entry_count} entries, gross"
            f" {micro_to_decimal(batch.gross_micro)}, net {micro_to_decimal(batch.net_micro)},"
            f" efficiency {batch.efficiency}, {batch.instruction_count} instruction(s)"
        )

    print(_run(settings, work))
    return 0


# -- statement -----------------------------------------------------------------------------------


def _configure_statement(parser: argparse.ArgumentParser) -> None:
    add_data_dir_option(parser)
    parser.add_argument("--batch", type=int, required=True, help="the batch number")
    parser.add_argument("--merchant", required=True, help="the merchant's code")
    parser.add_argument(
        "--csv", type=Path, default=None, help="write the CSV statement to this file ('-': stdout)"
    )


@command(
    "statement",
    help="a merchant's statement for a settlement batch",
    configure=_configure_statement,
)
def statement_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(pool: Pool) -> None:
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT id FROM merchants WHERE code = %s", (args.merchant,))
            row = await cur.fetchone()
            statement = None if row is None else await load_statement(conn, args.batch, row[0])
            if statement is None:
                raise CliError(f"no statement of {args.merchant!r} in batch {args.batch}")
            if args.csv is not None:
                out = sys.stdout if str(args.csv) == "-" else args.csv.open("w", newline="")
                try:
                    async for record in csv_records(conn, statement):
                        out.write(csv_text(record))
                finally:
                    if out is not sys.stdout:
                        out.close()
                if out is not sys.stdout:
                    print(f"wrote {args.csv}")
                return
            s = statement.summary
            print(f"statement of {s.merchant}, batch {s.batch_id} ({statement.batch.currency})")
            print(f"  opening      {micro_to_decimal(s.opening_micro):>20}")
            async for line in statement_lines(conn, statement):
                fields = line.fields()
                print(f"  {fields[0]:>8} {fields[2]:<8} {fields[3]:<14} {fields[7]:>20}")
            print(f"  closing      {micro_to_decimal(s.closing_micro):>20}")
            print(f"  position     {micro_to_decimal(s.netted_micro):>20}")
            print(f"  instruction  {micro_to_decimal(statement.instruction_micro):>20}")
            print(f"  carried out  {micro_to_decimal(statement.position.carry_out_micro):>20}")
            print(f"  checkpoint   key {s.key_id} signature {s.signature}")

    _run(settings, work)
    return 0


# -- trial-balance -------------------------------------------------------------------------------


@command(
    "trial-balance",
    help="every account class's total per asset, and whether each asset balances",
    configure=add_data_dir_option,
)
def trial_balance_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(pool: Pool) -> bool:
        async with pool.connection() as conn:
            assets = await trial_balance(conn)
        for asset in assets:
            verdict = "balanced" if asset.balanced else "NOT BALANCED"
            print(f"{asset.asset} ({asset.kind}): {verdict}")
            for c in asset.classes:
                total = points_to_decimal(c.total, asset.scale)
                print(f"  {c.account_class:<14} {c.accounts:>8} account(s) {total:>24}")
        return all(asset.balanced for asset in assets)

    return 0 if _run(settings, work) else 1
