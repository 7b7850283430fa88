"""The hub under test as a subprocess, and where the machine's CPU time went.

The hub runs as ``python -m exchange serve --workers N`` on a free loopback port, with
``EXCHANGE_DATABASE_URL`` pointing at a bench database. CPU time is read from ``/proc``
(Linux) for three groups: the hub (the serve process and its workers), PostgreSQL (every
process whose command line starts with ``postgres``) and the bench itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.pg import BenchError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _wait_ready(hub: Hub) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{hub.port}/readyz"
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise BenchError(f"the hub exited early:\n{_tail(hub.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise BenchError(f"the hub did not become ready in {READY_TIMEOUT_S:.0f} s:\n{_tail(hub.log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def serve(
    database_url: str,
    data_dir: Path,
    *,
    workers: int,
    env: dict[str, str],
    log: Path,
) -> Iterator[Hub]:
    """Run ``python -m exchange serve --workers N`` until the block ends; its output goes to
    ``log``."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    environment.update(env)
    environment["EXCHANGE_DATABASE_URL"] = database_url
    environment["EXCHANGE_DATA_DIR"] = str(data_dir)
    args = [sys.executable, "-m", "exchange", "serve", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", str(workers), "--data-dir", str(data_dir)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    hub = Hub(process=process, port=port, log=log)
    try:
        _wait_ready(hub)
        yield hub
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


# -- CPU accounting ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """``(parent pid, CPU seconds)`` of a process and its reaped children."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # utime + stime, plus cutime + cstime: the time of children that exited and were reaped
    # (PostgreSQL backends of closed connections, pgbench runs of this process).
    return int(rest[1]), sum(int(x) for x in rest[11:15]) / _TICK


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_postgres(cmdline: bytes) -> bool:
    first = cmdline.split(b"\0", 1)[0]
    return first.startswith(b"postgres") or first.endswith(b"/postgres")


def _descendants(root: int, stats: dict[int, tuple[int, float]]) -> set[int]:
    found = {root} if root in stats else set()
    grew = bool(found)
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def cpu_snapshot(hub_pid: int | None, pg_pid: int | None = None) -> dict[str, float]:
    """CPU seconds so far of the hub's processes, PostgreSQL's, this process and the rest.

    PostgreSQL is the server ``pg_pid`` and its children when known, else every process
    named ``postgres``. ``other`` is every other process's CPU time (from ``/proc/stat``):
    on a shared machine it shows how much the measurement was disturbed.
    """
    if not Path("/proc/self/stat").exists():
        return {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    hub = _descendants(hub_pid, stats) if hub_pid is not None else set()
    server = _descendants(pg_pid, stats) if pg_pid is not None else None
    out = {"hub": 0.0, "postgres": 0.0, "bench": 0.0}
    me = os.getpid()
    for pid, (_, seconds) in stats.items():
        if pid in hub:
            out["hub"] += seconds
        elif pid == me:
            out["bench"] += seconds
        elif (pid in server) if server is not None else _is_postgres(_cmdline(pid)):
            out["postgres"] += seconds
    out["other"] = max(0.0, _busy_seconds() - sum(out.values()))
    return out


def _busy_seconds() -> float:
    """CPU seconds the machine spent busy (not idle, not waiting for I/O) since boot."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already counted in user time
    return (sum(ticks[:8]) - idle) / _TICK


def cpu_delta(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores used per group over ``seconds`` (1.0 = one core busy)."""
    if not before or not after or seconds <= 0:
        return {}
    return {k: round((after[k] - before.get(k, 0.0)) / seconds, 2) for k in after}


# -- which worker holds a connection -----------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    except OSError:
        pass
    return found


def _hex_port(field: str) -> int:
    return int(field.rsplit(":", 1)[1], 16)


def connection_owners(hub: Hub, client_ports: list[int]) -> dict[int, int]:
    """``client port -> worker pid`` for loopback connections to the hub (Linux only)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return {}
    wanted = set(client_ports)
    inode_of_port: dict[int, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 10:
            continue
        if _hex_port(parts[1]) == hub.port and _hex_port(parts[2]) in wanted:
            inode_of_port[_hex_port(parts[2])] = int(parts[9])
    owners: dict[int, int] = {}
    for pid in workers(hub):
        inodes = _socket_inodes(pid)
        for port, inode in inode_of_port.items():
            if inode in inodes:
                owners[port] = pid
    return owners


def workers(hub: Hub) -> list[int]:
    """The pids of the hub's worker processes (children of the server that serve requests)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[0] != hub.pid:
            continue
        if b"resource_tracker" in _cmdline(int(entry.name)):
            continue
        found.append(int(entry.name))
    return sorted(found)
