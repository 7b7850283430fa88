"""One bench run, start to finish: baseline, hub scenarios, history scaling, report."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import history, pg, procs, scenarios, seed
from bench.load import event_loop_runner
from bench.pg import BenchError, Server
from exchange.config import Settings
from exchange.db.migrate import upgrade
from exchange.keys import load_or_create_secrets
from exchange.ledger.verify import verify

WORKERS = 2
HUB_ENV = {
    # The bench drives each credential far beyond the default cost budget (20,000 a
    # minute, per credential and process), which would answer RATE_LIMITED.
    "EXCHANGE_COST_BUDGET_PER_MINUTE": "1000000000",
    "EXCHANGE_LOG_LEVEL": "warning",
    "EXCHANGE_MODE": "production",
}
TARGETS = {
    "earn_ratio": (">=", 0.40),
    "batch_ratio": (">=", 3.5),
    "hot_issuer_ratio": (">=", 0.9),
    "balance_read_ratio": (">=", 0.35),
    "balance_p99_ms": ("<", 50.0),
    "history_scaling_ratio": ("<=", 1.2),
}


@dataclass(frozen=True)
class Profile:
    name: str
    pgbench_scale: int
    pgbench_s: int
    pgbench_prepared: bool
    pgbench_again: bool
    """Run pgbench (``-M simple``) again after the main scenarios, to show the machine's drift."""
    members: int
    tokens: int
    warmup_s: float
    duration_s: float
    connections: int
    batch_connections: int
    batch_size: int
    small_postings: int
    large_postings: int
    history_connections: int
    history_s: float
    verify: bool


QUICK = Profile(
    name="quick",
    pgbench_scale=10,
    pgbench_s=6,
    pgbench_prepared=False,
    pgbench_again=False,
    members=1000,
    tokens=200,
    warmup_s=1.0,
    duration_s=3.5,
    connections=32,
    batch_connections=4,
    batch_size=1000,
    small_postings=10_000,
    large_postings=50_000,
    history_connections=8,
    history_s=1.5,
    verify=True,
)
FULL = Profile(
    name="full",
    pgbench_scale=10,
    pgbench_s=20,
    pgbench_prepared=True,
    pgbench_again=True,
    members=10_000,
    tokens=1000,
    warmup_s=3.0,
    duration_s=15.0,
    connections=32,
    batch_connections=4,
    batch_size=1000,
    small_postings=10_000,
    large_postings=10_000_000,
    history_connections=8,
    history_s=10.0,
    verify=True,
)
EARN_WARMUP_BOUND_S = 300.0
"""Bound on the unmeasured warm-up of each earn shape (it ends when every worker has met
every pairing of the shape: about 20 s each in the full profile)."""
HISTORY_ROUNDS = ("small", "large", "large", "small")
"""The history databases are measured in alternating rounds (each with a fresh hub), so a
drift of the machine's speed during the run weighs on both alike; each database's figures
are the mean over its rounds."""
EARN_ROUNDS = ("earn_spread", "earn_hot_issuer", "earn_hot_issuer", "earn_spread")
"""The two earn shapes are measured in alternating rounds of half the scenario's length
each, for the same reason: ``hot_issuer_ratio`` compares them, and a drift of the machine
or a database's housekeeping (autovacuum after the warm-ups' earns) would otherwise weigh
on whichever shape came second."""
READ_ROUNDS = ("balance_read", "constant_query", "constant_query", "balance_read")
"""The balance read and the constant query are measured in alternating rounds too:
``balance_read_ratio`` compares them, and measured one after the other a slow phase of the
machine during either moved the ratio by a fifth (runs F-H of 2026-11-24). The p99 each
reports is the mean of its rounds' p99s, as for the earns."""
READS = {
    "balance_read": (scenarios.BALANCES, scenarios.balances_ok),
    "constant_query": (scenarios.CONSTANT, scenarios.constant_ok),
}
MAX_REQUESTS = 2_000_000
"""Bound on the requests of any one scenario (each is also bounded by its duration)."""


@dataclass(frozen=True)
class Options:
    profile: Profile
    json_path: Path | None
    database_url: str | None
    pg_dir: Path | None
    keep_history: bool
    history_postings: int | None
    duration_s: float | None


def say(text: str) -> None:
    print(text, flush=True)


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(options: Options) -> int:
    p = options.profile
    duration = options.duration_s or p.duration_s
    large = options.history_postings or p.large_postings
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    loop = event_loop_runner()
    results: dict[str, Any] = {"profile": p.name, "machine": _machine()}
    results["hub"] = {"workers": WORKERS, "command": "exchange serve --workers 2", "env": HUB_ENV}
    say(f"bench ({p.name}): work directory {workdir}")
    if os.getloadavg()[0] > 0.5:
        say(f"  note: load average {os.getloadavg()[0]:.2f} at start: other work shares the CPU")
    outcomes: dict[str, scenarios.Outcome] = {}
    try:
        with pg.open_server(options.database_url, options.pg_dir or workdir) as server:
            results["postgres"] = server.settings()
            if results["postgres"].get("autovacuum") == "off":
                say(
                    "  note: autovacuum is off on this server: updated rows (balances) are"
                    " never cleaned up during the run"
                )
            results["pgbench"] = _baseline(server, p, workdir)
            secrets_dir = workdir / "data"
            secrets = load_or_create_secrets(secrets_dir)
            settings = Settings(data_dir=secrets_dir)
            outcomes.update(_main_scenarios(server, p, duration, secrets, settings, workdir, loop))
            if p.pgbench_again:
                results["pgbench"]["again"] = _pgbench_again(server, p, workdir, results["pgbench"])
            hist = _history(server, p, large, options, secrets, settings, workdir, loop)
            results["history"] = hist
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["scenarios"] = {name: o.as_json() for name, o in outcomes.items()}
    _ratios(results, outcomes)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    _report(results)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        say(f"results written to {options.json_path}")
    return 0


def _pgbench(
    server: Server, p: Profile, workdir: Path, protocols: list[str]
) -> tuple[dict[str, pg.PgbenchResult], float]:
    """pgbench on a fresh database at the profile's scale, once per protocol; and the
    seconds its initialisation took."""
    name, init_s = pg.pgbench_init(server, p.pgbench_scale)
    runs = {
        protocol: pg.pgbench_run(
            server,
            name,
            scale=p.pgbench_scale,
            clients=16,
            threads=2,
            duration_s=p.pgbench_s,
            protocol=protocol,
            init_s=init_s,
            workdir=workdir,
        )
        for protocol in protocols
    }
    server.drop(name)
    return runs, init_s


def _baseline(server: Server, p: Profile, workdir: Path) -> dict[str, Any]:
    say(f"pgbench: TPC-B-like, scale {p.pgbench_scale}, 16 clients, -j 2, {p.pgbench_s} s")
    runs, init_s = _pgbench(
        server, p, workdir, ["simple", "prepared"] if p.pgbench_prepared else ["simple"]
    )
    out: dict[str, Any] = {}
    for protocol, r in runs.items():
        say(
            f"  -M {protocol:<8} {r.tps:9.1f} tps  p50 {r.p50_ms:5.1f} ms  p99 {r.p99_ms:5.1f} ms"
            f"  (init {init_s:.1f} s)"
        )
        out[protocol] = {
            "tps": round(r.tps, 1),
            "transactions": r.transactions,
            "latency_avg_ms": r.latency_avg_ms,
            "p50_ms": round(r.p50_ms, 2),
            "p99_ms": round(r.p99_ms, 2),
            "failed": r.failed,
        }
    return {
        "scale": p.pgbench_scale,
        "clients": 16,
        "threads": 2,
        "duration_s": p.pgbench_s,
        "init_s": round(init_s, 1),
        "baseline_protocol": "simple",
        "tps": out["simple"]["tps"],
        **out,
    }


def _pgbench_again(
    server: Server, p: Profile, workdir: Path, first: dict[str, Any]
) -> dict[str, Any]:
    """pgbench once more, as at the start (``-M simple``), after the main scenarios.

    The ratios still divide by the first run; this one shows how far the baseline moved
    during the main scenarios (``relative``: this run's tps over the first's)."""
    r = _pgbench(server, p, workdir, ["simple"])[0]["simple"]
    relative = _ratio(r.tps, float(first["tps"]))
    say(
        f"pgbench again after the main scenarios: -M simple {r.tps:9.1f} tps"
        f"  p50 {r.p50_ms:5.1f} ms  p99 {r.p99_ms:5.1f} ms  ({relative:.2f}× the first run)"
    )
    return {
        "tps": round(r.tps, 1),
        "p50_ms": round(r.p50_ms, 2),
        "p99_ms": round(r.p99_ms, 2),
        "relative": relative,
    }


def _prepare_main(
    server: Server, p: Profile, secrets: Any, settings: Settings
) -> tuple[str, seed.Alliance, list[str], dict[str, float]]:
    name = server.create("hub")
    url = server.url(name)
    upgrade(url, "head")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    alliance = asyncio.run(seed.seed(url, secrets, merchants=100, members=p.members))
    timings["seed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    earns = asyncio.run(seed.award(url, alliance, seed.wallet_plan(alliance), tag="wallet"))
    timings["wallets_s"] = time.perf_counter() - t
    timings["wallet_earns"] = earns
    t = time.perf_counter()
    asyncio.run(seed.settle_in(url))
    timings["seal_vacuum_s"] = time.perf_counter() - t
    tokens = asyncio.run(seed.member_tokens(url, secrets, settings, alliance, p.tokens))
    return name, alliance, tokens, timings


def _main_scenarios(
    server: Server,
    p: Profile,
    duration: float,
    secrets: Any,
    settings: Settings,
    workdir: Path,
    loop: Any,
) -> dict[str, scenarios.Outcome]:
    say(f"hub: 100 merchants, {p.members:,} members; loading a wallet for each pairing")
    name, alliance, tokens, timings = _prepare_main(server, p, secrets, settings)
    url = server.url(name)
    say(
        f"  seeded in {timings['seed_s']:.1f} s; {int(timings['wallet_earns']):,} wallet earns"
        f" in {timings['wallets_s']:.1f} s; sealed and vacuumed in"
        f" {timings['seal_vacuum_s']:.1f} s"
    )
    out: dict[str, scenarios.Outcome] = {}
    run_id = f"r{int(time.time())}"
    with procs.serve(
        url,
        workdir / "data",
        workers=WORKERS,
        env=HUB_ENV,
        log=workdir / "hub.log",
    ) as hub:
        runner = scenarios.Runner(url, hub, server.pid, loop, MAX_REQUESTS, say)
        common = {"duration_s": duration, "warmup_s": p.warmup_s}
        say("  warming up (not measured): earns of both shapes, balance reads")
        for hot in (False, True):
            # Each worker meets every (merchant, customer) pairing of the shape once, as a
            # hub in service has: links are cached per process.
            runner.run(
                "warm-up",
                scenarios.earn_requests(alliance, hub.port, f"{run_id}w{int(hot)}", hot=hot),
                scenarios.earn_ok,
                connections=p.connections,
                writes=1,
                duration_s=EARN_WARMUP_BOUND_S,
                warmup_s=0,
                per_worker=scenarios.earn_pairings(alliance, hot=hot),
            )
        runner.run(
            "warm-up",
            scenarios.member_requests(tokens, hub.port, scenarios.BALANCES),
            scenarios.balances_ok,
            connections=p.connections,
            writes=None,
            duration_s=p.warmup_s,
            warmup_s=0,
        )
        earn_rounds: dict[str, list[scenarios.Outcome]] = {}
        for n, name in enumerate(EARN_ROUNDS, start=1):
            earn_rounds.setdefault(name, []).append(
                runner.run(
                    f"{name} ({n})",
                    scenarios.earn_requests(
                        alliance, hub.port, f"{run_id}e{n}", hot=name == "earn_hot_issuer"
                    ),
                    scenarios.earn_ok,
                    connections=p.connections,
                    writes=1,
                    duration_s=duration / 2,
                    warmup_s=p.warmup_s / 2,
                )
            )
        for name, measured in earn_rounds.items():
            out[name] = scenarios.combined(name, measured)
        out["batch"] = runner.run(
            "batch",
            scenarios.batch_requests(alliance, hub.port, run_id, p.batch_size),
            scenarios.batch_ok,
            connections=p.batch_connections,
            writes=p.batch_size,
            unit="earns/s",
            scale=p.batch_size,
            **common,
        )
        read_rounds: dict[str, list[scenarios.Outcome]] = {}
        for n, name in enumerate(READ_ROUNDS, start=1):
            query, check = READS[name]
            read_rounds.setdefault(name, []).append(
                runner.run(
                    f"{name} ({n})",
                    scenarios.member_requests(tokens, hub.port, query),
                    check,
                    connections=p.connections,
                    writes=None,
                    duration_s=duration / 2,
                    warmup_s=p.warmup_s / 2,
                )
            )
        for name, measured in read_rounds.items():
            out[name] = scenarios.combined(name, measured)
    if p.verify:
        t = time.perf_counter()
        with psycopg.connect(url) as conn:
            report = verify(conn)
        if not report.ok:
            problems = "; ".join(f"{v.check}: {v.message}" for v in (report.violations or [])[:5])
            raise BenchError(f"exchange verify found problems after the scenarios: {problems}")
        say(
            f"  verify: clean ({report.entries:,} entries, {report.postings:,} postings,"
            f" {time.perf_counter() - t:.1f} s)"
        )
    server.drop(name)
    return out


def _history(
    server: Server,
    p: Profile,
    large: int,
    options: Options,
    secrets: Any,
    settings: Settings,
    workdir: Path,
    loop: Any,
) -> dict[str, Any]:
    note = "" if p.name == "full" and large == FULL.large_postings else " (smaller than 10 M)"
    say(
        f"history: {p.small_postings:,} vs {large:,} postings{note},"
        f" {history.MEMBERS:,} members; loading"
    )
    dbs = {}
    for label, size in (("small", p.small_postings), ("large", large)):
        db = history.prepare(server, secrets, size, keep=options.keep_history, say=say)
        dbs[label] = db
        how = "copied from a kept database" if db.cached else f"loaded in {db.build_s:.1f} s"
        say(f"  {label}: {db.postings:,} postings, {how}")
    # Both databases start from a checkpoint: neither round measures the other database's
    # loading or copying still being written out.
    server.checkpoint()
    out: dict[str, Any] = {
        "members": history.MEMBERS,
        "connections": p.history_connections,
        "large_is_reduced": bool(note),
        "order": list(HISTORY_ROUNDS),
    }
    rounds: dict[str, list[tuple[scenarios.Outcome, scenarios.Outcome]]] = {
        label: [] for label in dbs
    }
    for n, label in enumerate(HISTORY_ROUNDS, start=1):
        db = dbs[label]
        url = server.url(db.name)
        tokens = asyncio.run(
            seed.member_tokens(url, secrets, settings, db.alliance, min(p.tokens, 200))
        )
        with procs.serve(
            url,
            workdir / "data",
            workers=WORKERS,
            env=HUB_ENV,
            log=workdir / "hub.log",
        ) as hub:
            runner = scenarios.Runner(url, hub, server.pid, loop, MAX_REQUESTS, say)
            # The earns' warm-up: each worker meets every pairing once (as in the main
            # scenarios); the measured earns follow it directly.
            runner.run(
                "warm-up",
                scenarios.earn_requests(db.alliance, hub.port, f"h{label}{n}w", hot=False),
                scenarios.earn_ok,
                connections=p.history_connections,
                writes=1,
                duration_s=EARN_WARMUP_BOUND_S,
                warmup_s=0,
                per_worker=scenarios.earn_pairings(db.alliance, hot=False),
            )
            earn = runner.run(
                f"history_{label}_earn ({n})",
                scenarios.earn_requests(db.alliance, hub.port, f"h{label}{n}", hot=False),
                scenarios.earn_ok,
                connections=p.history_connections,
                writes=1,
                duration_s=p.history_s,
                warmup_s=0.0,
            )
            balance = runner.run(
                f"history_{label}_balance ({n})",
                scenarios.member_requests(tokens, hub.port, scenarios.BALANCES),
                scenarios.balances_ok,
                connections=p.history_connections,
                writes=None,
                duration_s=p.history_s,
                warmup_s=p.warmup_s,
            )
        rounds[label].append((earn, balance))
    for label, db in dbs.items():
        out[label] = {
            "postings": db.postings,
            "build_s": round(db.build_s, 1),
            "copy_s": round(db.copy_s, 1),
            "reused": db.cached,
            "earn": _mean([e for e, _ in rounds[label]]),
            "balance": _mean([b for _, b in rounds[label]]),
            "rounds": [{"earn": e.as_json(), "balance": b.as_json()} for e, b in rounds[label]],
        }
        server.drop(db.name)
    return out


def _mean(outcomes: list[scenarios.Outcome]) -> dict[str, Any]:
    """One database's figures over its rounds: the mean rate, p50 and p99."""
    n = len(outcomes)
    return {
        "rounds": n,
        "rate": round(sum(o.rate for o in outcomes) / n, 1),
        "p50_ms": round(sum(o.p50_ms for o in outcomes) / n, 2),
        "p99_ms": round(sum(o.p99_ms for o in outcomes) / n, 2),
        "unit": outcomes[0].unit,
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _ratios(results: dict[str, Any], o: dict[str, scenarios.Outcome]) -> None:
    tps = float(results["pgbench"]["tps"])
    hist = results["history"]
    earn_lat = _ratio(hist["large"]["earn"]["p50_ms"], hist["small"]["earn"]["p50_ms"])
    bal_lat = _ratio(hist["large"]["balance"]["p50_ms"], hist["small"]["balance"]["p50_ms"])
    hist["earn_p50_ratio"] = earn_lat
    hist["balance_p50_ratio"] = bal_lat
    hist["earn_p99_ratio"] = _ratio(
        hist["large"]["earn"]["p99_ms"], hist["small"]["earn"]["p99_ms"]
    )
    hist["balance_p99_ratio"] = _ratio(
        hist["large"]["balance"]["p99_ms"], hist["small"]["balance"]["p99_ms"]
    )
    results["earn_ratio"] = _ratio(o["earn_spread"].rate, tps)
    results["batch_ratio"] = _ratio(o["batch"].rate, tps)
    results["hot_issuer_ratio"] = _ratio(o["earn_hot_issuer"].rate, o["earn_spread"].rate)
    results["balance_read_ratio"] = _ratio(o["balance_read"].rate, o["constant_query"].rate)
    results["balance_p99_ms"] = round(o["balance_read"].p99_ms, 2)
    results["history_scaling_ratio"] = max(earn_lat, bal_lat)
    met = {}
    for key, (op, target) in TARGETS.items():
        value = float(results[key])
        met[key] = (
            value >= target if op == ">=" else value < target if op == "<" else value <= target
        )
    results["targets"] = {k: {"op": op, "target": t} for k, (op, t) in TARGETS.items()}
    results["targets_met"] = met


def _report(r: dict[str, Any]) -> None:
    pgb = r["pgbench"]
    say("")
    say(f"results ({r['profile']}, {r['elapsed_s']:.0f} s)")
    say(
        f"  pgbench TPC-B s{pgb['scale']} c16 -j2 {pgb['duration_s']} s, -M simple:"
        f" {pgb['tps']:.1f} tps (p50 {pgb['simple']['p50_ms']} ms,"
        f" p99 {pgb['simple']['p99_ms']} ms)"
        + (f"; -M prepared: {pgb['prepared']['tps']:.1f} tps" if "prepared" in pgb else "")
    )
    say(f"  {'ratio':<24}{'value':>8}  target   {'':<6} scenario")
    rows = [
        ("earn_ratio", "earn_spread req/s ÷ pgbench tps"),
        ("batch_ratio", "batch earns/s ÷ pgbench tps"),
        ("hot_issuer_ratio", "earn_hot_issuer ÷ earn_spread"),
        ("balance_read_ratio", "balance_read ÷ constant_query"),
        ("balance_p99_ms", "balance_read p99 at 32 connections"),
        ("history_scaling_ratio", "max(earn, balance) p50: large ÷ small history"),
    ]
    for key, what in rows:
        op, target = r["targets"][key]["op"], r["targets"][key]["target"]
        status = "met" if r["targets_met"][key] else "MISSED"
        say(f"  {key:<24}{r[key]:>8}  {op} {target:<5} {status:<6} {what}")
    if "again" in pgb:
        say(
            f"  pgbench again after the main scenarios: {pgb['again']['tps']:.1f} tps"
            f" ({pgb['again']['relative']}× the first; the ratios divide by the first)"
        )
    say(f"  {'scenario':<24}{'rate':>10}  {'unit':<8}{'p50 ms':>8}{'p99 ms':>8}  conn")
    for name, s in r["scenarios"].items():
        say(
            f"  {name:<24}{s['rate']:>10}  {s['unit']:<8}{s['p50_ms']:>8}{s['p99_ms']:>8}"
            f"  {s['connections']}"
        )
    hist = r["history"]
    for label in ("small", "large"):
        h = hist[label]
        say(
            f"  history {label:<6} {h['postings']:>11,} postings: earn p50 {h['earn']['p50_ms']} ms"
            f" p99 {h['earn']['p99_ms']} ms; balance p50 {h['balance']['p50_ms']} ms"
            f" p99 {h['balance']['p99_ms']} ms"
        )
    if hist.get("large_is_reduced"):
        say("  note: the large history is smaller than 10 M postings in this run")
    print(file=sys.stdout, flush=True)


__all__ = ["FULL", "QUICK", "Options", "Profile", "run"]
