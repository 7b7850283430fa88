"""The scenarios: what each one sends, how a response is checked, and how it is run.

Every request is a real GraphQL ``POST /graphql`` with a real credential: merchant API keys
for earns, member access tokens for balance reads. Each earn carries its own idempotency
key (``<run>-<scenario>-<n>``), so every acknowledged earn is a new entry, which the
conservation check counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import checks, procs, seed
from bench.load import LoadResult, post_request, run_load
from bench.pg import BenchError
from bench.seed import BATCH_MERCHANTS, Alliance, currency_code, customer_ref

HOST = "127.0.0.1"
PATH = "/graphql"
MAX_BATCH = 1000

EARN = (
    "mutation Earn($input: AwardPointsInput!) { awardPoints(input: $input)"
    " { entry { id } points replayed userErrors { code field message } } }"
)
BATCH = (
    "mutation Batch($input: AwardPointsBatchInput!) { awardPointsBatch(input: $input)"
    " { awarded refused results { idempotencyKey entryId replayed"
    " userErrors { code field message } } userErrors { code field message } } }"
)
BALANCES = "query Balances { wallet { balances { currency { code } points value } totalValue } }"
CONSTANT = "query Version { hubVersion }"


@dataclass
class Outcome:
    """One scenario's figures, as reported."""

    name: str
    connections: int
    duration_s: float
    rate: float
    """Successful requests per second (earn events per second for the batch scenario)."""
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    unit: str = "req/s"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {
            "connections": self.connections,
            "duration_s": round(self.duration_s, 2),
            "rate": round(self.rate, 1),
            "unit": self.unit,
            "requests": self.requests,
            "failed": self.failed,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "cpu_cores": self.cpu,
            "load_generator_cpu_cores": round(self.client_cpu, 3),
        }
        out.update(self.extra)
        return out


def combined(name: str, rounds: list[Outcome]) -> Outcome:
    """One scenario measured in rounds of equal length: its rate, latencies and cores are
    the means over the rounds; every round is kept under ``rounds``."""
    n = len(rounds)
    cores = sorted({k for r in rounds for k in r.cpu})
    return Outcome(
        name=name,
        connections=rounds[0].connections,
        duration_s=sum(r.duration_s for r in rounds),
        rate=sum(r.rate for r in rounds) / n,
        requests=sum(r.requests for r in rounds),
        failed=sum(r.failed for r in rounds),
        p50_ms=sum(r.p50_ms for r in rounds) / n,
        p99_ms=sum(r.p99_ms for r in rounds) / n,
        cpu={k: round(sum(r.cpu.get(k, 0.0) for r in rounds) / n, 3) for k in cores},
        client_cpu=sum(r.client_cpu for r in rounds) / n,
        unit=rounds[0].unit,
        extra={
            "autovacuum_runs": sum(int(r.extra.get("autovacuum_runs", 0)) for r in rounds),
            "rounds": [r.as_json() for r in rounds],
        },
    )


def _body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"query": query}
    if variables is not None:
        doc["variables"] = variables
    return json.dumps(doc, separators=(",", ":")).encode()


def earn_ok(payload: bytes) -> bool:
    return b'"userErrors":[]' in payload and b'"errors"' not in payload


def batch_ok(payload: bytes) -> bool:
    return b'"refused":0' in payload and b'"errors"' not in payload


def balances_ok(payload: bytes) -> bool:
    return b'"balances":[{' in payload and b'"errors"' not in payload


def constant_ok(payload: bytes) -> bool:
    return b'"hubVersion":"' in payload and b'"errors"' not in payload


Request = Callable[[int, int], bytes]


def earn_requests(alliance: Alliance, port: int, run: str, *, hot: bool) -> Request:
    """Award 10 points per request: all by merchant 0 (hot) or by merchant ``n % merchants``.

    Either way request ``n`` goes to one of the same members, in the awarding merchant's own
    currency, so both shapes touch as many wallets.
    """
    headers = [
        post_request(HOST, port, PATH, {"Authorization": f"Bearer {key}"}) for key in alliance.keys
    ]
    members, merchants = alliance.members, alliance.merchants
    per_merchant = max(1, members // merchants)
    prefix = f"{run}-{'hot' if hot else 'spread'}-"

    def request(client: int, n: int) -> bytes:
        if hot:
            k, i = 0, n % members
        else:
            k = n % merchants
            i = k + merchants * ((n // merchants) % per_merchant)
        variables = {
            "input": {
                "customerRef": customer_ref(i),
                "currency": currency_code(k),
                "points": "10",
                "reason": "bench",
                "idempotencyKey": f"{prefix}{n}",
            }
        }
        return headers[k](_body(EARN, variables))

    return request


def earn_pairings(alliance: Alliance, *, hot: bool) -> int:
    """How many distinct (merchant, customer) pairings :func:`earn_requests` cycles through:
    any ``earn_pairings`` consecutive requests meet each once."""
    if hot:
        return alliance.members
    return alliance.merchants * max(1, alliance.members // alliance.merchants)


def batch_requests(alliance: Alliance, port: int, run: str, size: int) -> Request:
    """``size`` awards per call by one of the batch merchants, to ``size`` distinct members."""
    headers = [
        post_request(HOST, port, PATH, {"Authorization": f"Bearer {key}"})
        for key in alliance.keys[:BATCH_MERCHANTS]
    ]
    members = alliance.members

    def request(client: int, n: int) -> bytes:
        k = client % BATCH_MERCHANTS
        items = [
            {
                "customerRef": customer_ref((n * size + j) % members),
                "currency": currency_code(k),
                "points": "5",
                "idempotencyKey": f"{run}-batch-{n}-{j}",
            }
            for j in range(size)
        ]
        return headers[k](_body(BATCH, {"input": {"items": items}}))

    return request


def member_requests(tokens: list[str], port: int, query: str) -> Request:
    """``query`` as member ``n % len(tokens)`` (same credentials for balances and constant)."""
    built = [
        post_request(HOST, port, PATH, {"Authorization": f"Bearer {token}"}) for token in tokens
    ]
    body = _body(query)

    def request(client: int, n: int) -> bytes:
        return built[n % len(built)](body)

    return request


@dataclass
class Runner:
    """Runs scenarios against one hub, measuring CPU and checking conservation after each."""

    url: str
    hub: procs.Hub
    pg_pid: int | None
    loop: Callable[..., Any]
    max_requests: int
    say: Callable[[str], None]
    workers: int = 2

    def run(
        self,
        name: str,
        request: Request,
        check: Callable[[bytes], bool],
        *,
        connections: int,
        duration_s: float,
        warmup_s: float,
        writes: int | None,
        unit: str = "req/s",
        scale: int = 1,
        per_worker: int | None = None,
    ) -> Outcome:
        """Run one scenario; ``writes`` entries per acknowledged request (None: reads).

        ``per_worker``: send every worker ``per_worker`` requests of its own (worker ``w``
        gets requests ``w·per_worker`` onwards), then stop; ``duration_s`` is then only a
        bound.
        """
        mark = checks.mark(self.url) if writes is not None else None
        cleaned = checks.cleanups(self.url)
        before = procs.cpu_snapshot(self.hub.pid, self.pg_pid)
        started = time.perf_counter()
        result: LoadResult = self.loop(
            run_load(
                name,
                host=HOST,
                port=self.hub.port,
                request=request,
                check=check,
                connections=connections,
                duration_s=duration_s,
                max_requests=self.max_requests if per_worker is None else per_worker,
                warmup_s=warmup_s,
                owners=lambda ports: procs.connection_owners(self.hub, ports),
                workers=self.workers,
                per_worker=per_worker is not None,
            )
        )
        elapsed = time.perf_counter() - started
        after = procs.cpu_snapshot(self.hub.pid, self.pg_pid)
        cleaned = checks.cleanups(self.url) - cleaned
        if result.failed or result.ok == 0:
            raise BenchError(
                f"{name}: {result.failed} of {result.requests} requests failed;"
                f" first: {result.first_failure or 'no response'}"
            )
        if mark is not None and writes is not None:
            checks.conservation(
                self.url, mark, expected_entries=result.acknowledged * writes, scenario=name
            )
            # The hub's workers seal the hash chain every few seconds, hashing in their event
            # loop; sealing what this scenario wrote here keeps that backlog out of the next.
            asyncio.run(seed.seal_chain(self.url))
        outcome = Outcome(
            name=name,
            connections=connections,
            duration_s=result.duration_s,
            rate=result.rate * scale,
            requests=result.requests,
            failed=result.failed,
            p50_ms=result.percentile(50),
            p99_ms=result.percentile(99),
            cpu=procs.cpu_delta(before, after, elapsed),
            client_cpu=result.client_cpu_share,
            unit=unit,
            extra={"connections_per_worker": result.spread, "autovacuum_runs": cleaned},
        )
        self.say(
            f"  {name:<22} {outcome.rate:>9.1f} {unit:<9} p50 {outcome.p50_ms:6.1f} ms"
            f"  p99 {outcome.p99_ms:6.1f} ms  ({connections} conn"
            f" {'+'.join(map(str, result.spread)) or '?'}, {result.requests} req,"
            f" cores {_cores(outcome.cpu)}, autovacuum {cleaned})"
        )
        return outcome


def _cores(cpu: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in cpu.items())
