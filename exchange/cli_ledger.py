"""Ledger subcommands: ``exchange verify`` and ``exchange expire``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

from exchange.cli import CliError, add_data_dir_option, command, open_database, settings_from_args
from exchange.db.pool import create_pool, sync_connect
from exchange.ledger.verify import verify as verify_ledger


def _configure_verify(parser: argparse.ArgumentParser) -> None:
    add_data_dir_option(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the verdict")


@command(
    "verify",
    help="replay every entry from empty and check every invariant of the ledger",
    configure=_configure_verify,
)
def verify(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    started = time.monotonic()
    last_print = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if args.quiet or (now - last_print[0] < 1.0 and done < total):
            return
        last_print[0] = now
        share = f" {done:,}/{total:,} ({100 * done // max(total, 1)}%)" if total > 1 else ""
        print(f"  {stage}{share}", file=sys.stderr, flush=True)

    with open_database(settings, migrate=False) as url, sync_connect(url) as conn:
        report = verify_ledger(conn, progress)
    elapsed = time.monotonic() - started
    violations = report.violations or []
    print(
        f"checked {report.entries:,} entries, {report.postings:,} postings,"
        f" {report.accounts:,} accounts, {report.lots:,} lots in {elapsed:.1f}s"
    )
    for v in violations:
        print(f"VIOLATION [{v.check}] {v.message}")
    if violations:
        print(f"FAILED: {len(violations)} violation(s)")
        return 1
    print("OK: every invariant holds")
    return 0


def _configure_expire(parser: argparse.ArgumentParser) -> None:
    add_data_dir_option(parser)
    parser.add_argument(
        "--limit", type=int, default=10_000, help="the most lots to expire (default 10000)"
    )


@command("expire", help="expire every lot whose expiry has passed", configure=_configure_expire)
def expire(args: argparse.Namespace) -> int:
    from exchange.services.expiry import sweep

    settings = settings_from_args(args)
    if args.limit < 1:
        raise CliError("--limit must be at least 1", 2)

    async def run(url: str) -> str:
        pool = await create_pool(url, settings, min_size=1, max_size=2)
        try:
            result = await sweep(pool, now=datetime.now(UTC), limit=args.limit)
        finally:
            await pool.close()
        return f"expired {result.lots_expired} lot(s), {result.points_expired} point unit(s)"

    with open_database(settings) as url:
        print(asyncio.run(run(url)))
    return 0
