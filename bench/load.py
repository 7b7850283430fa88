"""A lean, bounded HTTP/1.1 load generator for the hub's GraphQL endpoint.

Each virtual client owns one persistent (keep-alive) loopback connection and keeps one
request in flight: a closed loop. Bodies come from a caller-supplied function of the
request number, so every request can carry its own idempotency key. Responses are parsed
just enough to find the status and the body (``content-length`` framing, as uvicorn
answers) and handed to a checker that counts failures.

Every loop is bounded twice: by a deadline and by a request count. The client runs on
uvloop when it is installed; its own CPU time is measured and reported, because on a
2-core machine the generator competes with the server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.pg import BenchError

Request = Callable[[int, int], bytes]
"""``request(client, n)``: the complete bytes of request number ``n``, sent by ``client``."""
Check = Callable[[bytes], bool]

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
RESPONSE_TIMEOUT_S = 60.0


class ProtocolError(RuntimeError):
    """The server answered something this client does not understand."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_complete()

    def _try_complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_RESPONSE_BYTES:
                waiter.set_exception(ProtocolError("response head too large"))
            return
        head = bytes(buf[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            waiter.set_exception(ProtocolError(f"bad status line {head[:40]!r}"))
            return
        pos = head.find(b"\r\ncontent-length:")
        if pos < 0:
            waiter.set_exception(ProtocolError("response without content-length"))
            return
        stop = head.find(b"\r\n", pos + 2)
        length = int(head[pos + 17 : stop if stop > 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection is closed")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.transport.write(data)
        return await asyncio.wait_for(self.waiter, RESPONSE_TIMEOUT_S)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


Owners = Callable[[list[int]], dict[int, int]]
"""``owners(client ports)``: which server process accepted each connection."""
SPREAD_ROUNDS = 40


async def _open(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(_Connection, host, port), CONNECT_TIMEOUT_S
    )
    return proto


def _port(conn: _Connection) -> int:
    assert conn.transport is not None
    return int(conn.transport.get_extra_info("sockname")[1])


async def _connect(
    host: str, port: int, n: int, owners: Owners | None, workers: int
) -> tuple[list[_Connection], list[int], list[int]]:
    """Open ``n`` keep-alive connections spread evenly over the server's workers.

    Workers share one listening socket and a burst of connections tends to land on one of
    them; keep-alive connections then stay there for the whole run, leaving the other
    worker idle. So connections on a worker holding more than its share are reopened (a
    bounded number of rounds) until no worker holds more than ``ceil(n / workers)``.
    Returns the connections, the number each worker holds, and each connection's worker
    (empty when not known).
    """
    conns = [await _open(host, port) for _ in range(n)]
    if owners is None or workers <= 1:
        return conns, [], []
    cap = math.ceil(n / workers)
    counts: dict[int, int] = {}
    for _ in range(SPREAD_ROUNDS):
        await asyncio.sleep(0.05)
        found = owners([_port(c) for c in conns])
        if len(found) < len(conns):
            continue  # not all accepted yet
        counts = {}
        keep: list[_Connection] = []
        redo = 0
        for c in conns:
            pid = found[_port(c)]
            if counts.get(pid, 0) >= cap:
                c.close()
                redo += 1
            else:
                counts[pid] = counts.get(pid, 0) + 1
                keep.append(c)
        if not redo and len(counts) >= min(workers, n):
            return conns, sorted(counts.values(), reverse=True), [found[_port(c)] for c in conns]
        conns = keep + [await _open(host, port) for _ in range(redo)]
    return conns, sorted(counts.values(), reverse=True), []


def post_request(
    host: str, port: int, path: str, headers: dict[str, str]
) -> Callable[[bytes], bytes]:
    """A function turning a JSON body into a complete ``POST`` request."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    prefix = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()

    def build(body: bytes) -> bytes:
        return b"%s%d\r\n\r\n%s" % (prefix, len(body), body)

    return build


@dataclass
class LoadResult:
    name: str
    connections: int
    duration_s: float
    requests: int
    ok: int
    failed: int
    latencies_ms: list[float] = field(repr=False)
    client_cpu_s: float
    acknowledged: int = 0
    """Successful responses in all, warm-up and the last in-flight ones included."""
    first_failure: str = ""
    spread: list[int] = field(default_factory=list)
    """Connections per server worker (empty when not known)."""

    @property
    def rate(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    @property
    def client_cpu_share(self) -> float:
        """The generator's CPU time as a share of one core over the run."""
        return self.client_cpu_s / self.duration_s if self.duration_s > 0 else 0.0


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[rank]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_load(
    name: str,
    *,
    host: str,
    port: int,
    request: Request,
    check: Check,
    connections: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float = 0.0,
    owners: Owners | None = None,
    workers: int = 1,
    per_worker: bool = False,
) -> LoadResult:
    """Drive ``connections`` closed-loop clients for ``duration_s`` (after ``warmup_s``).

    Requests of the warm-up are not counted. At most ``max_requests`` are sent in all.
    With ``owners`` (client ports -> server process), connections are spread evenly over
    the server's ``workers`` before the run (see :func:`_connect`). With ``per_worker``
    (and the workers known) requests are numbered per worker and at most ``max_requests``
    go to each: worker ``w`` is sent requests ``w·max_requests … (w+1)·max_requests - 1``
    (distinct requests that meet, with a request function of period ``max_requests``, the
    same things on every worker).
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load generator talks to loopback only")
    conns, spread, owner_of = await _connect(host, port, connections, owners, workers)
    if per_worker and not owner_of:
        raise BenchError(
            f"{name}: the connections could not be spread over the workers, so requests"
            " cannot be numbered per worker"
        )
    # Which counter each client draws its request numbers from: one for all, or its worker's.
    group = owner_of if per_worker else [0] * connections
    counters = dict.fromkeys(group, 0)
    base = {g: k * max_requests for k, g in enumerate(sorted(counters))}
    latencies: list[float] = []
    ok = failed = acknowledged = 0
    first_failure = ""
    clock = time.perf_counter
    start = clock()
    measure_from = start + warmup_s
    deadline = measure_from + duration_s

    async def client(i: int) -> None:
        nonlocal ok, failed, acknowledged, first_failure
        conn = conns[i]
        mine = group[i]
        while True:
            now = clock()
            n = counters[mine]
            if now >= deadline or n >= max_requests:
                return
            counters[mine] = n + 1
            n += base[mine]
            data = request(i, n)
            t0 = clock()
            status, payload = await conn.request(data)
            t1 = clock()
            good = status == 200 and check(payload)
            acknowledged += good
            if t0 < measure_from or t1 > deadline:
                if not good and not first_failure:
                    first_failure = f"HTTP {status}: {payload[:300]!r}"
                continue
            if good:
                ok += 1
                latencies.append((t1 - t0) * 1000.0)
            else:
                failed += 1
                if not first_failure:
                    first_failure = f"HTTP {status}: {payload[:300]!r}"

    cpu0 = 0.0
    task_list = [asyncio.ensure_future(client(i)) for i in range(connections)]
    try:
        if warmup_s > 0:
            await asyncio.sleep(max(0.0, measure_from - clock()))
        cpu0 = _cpu()
        t_measure = clock()
        await asyncio.gather(*task_list)
        elapsed = min(clock(), deadline) - max(t_measure, measure_from)
        cpu1 = _cpu()
    finally:
        for t in task_list:
            t.cancel()
        for t in task_list:
            with contextlib.suppress(BaseException):
                await t
        for c in conns:
            c.close()
    return LoadResult(
        name=name,
        connections=connections,
        duration_s=max(elapsed, 1e-9),
        requests=ok + failed,
        ok=ok,
        failed=failed,
        latencies_ms=latencies,
        client_cpu_s=cpu1 - cpu0,
        acknowledged=acknowledged,
        first_failure=first_failure,
        spread=spread,
    )


def event_loop_runner() -> Callable[..., object]:
    """``uvloop.run`` when available, else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return]
