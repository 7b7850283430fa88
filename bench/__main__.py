"""Command line of the bench: ``python -m bench --help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.pg import BenchError
from bench.run import FULL, QUICK, Options, run


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the hub against this machine's pgbench figures.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs and a small history (under 2 minutes)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server to use (the bench creates and drops exchange_bench_*"
        " databases on it); default: an embedded server in a temporary directory",
    )
    parser.add_argument(
        "--pg-dir",
        type=Path,
        default=None,
        help="keep the embedded server's data here instead of a temporary directory; loaded"
        " history databases are kept in it and reused by later runs",
    )
    parser.add_argument(
        "--keep-history",
        action="store_true",
        help="with --database-url: keep loaded history databases on that server for reuse",
    )
    parser.add_argument(
        "--history-postings",
        type=int,
        default=None,
        help="postings in the large history database (default 10,000,000; quick 100,000)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per measured scenario"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    return Options(
        profile=profile,
        json_path=args.json,
        database_url=args.database_url,
        pg_dir=args.pg_dir,
        keep_history=args.keep_history or args.pg_dir is not None,
        history_postings=args.history_postings,
        duration_s=args.duration,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    try:
        return run(options)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
