"""The ``exchange`` command run as a real process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest

from exchange.db.migrate import head_revision

if TYPE_CHECKING:
    from conftest import DatabaseFactory

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120  # generous: a loaded 2-core machine starts slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hub_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["EXCHANGE_DATA_DIR"] = str(data_dir)
    env["EXCHANGE_LOG_LEVEL"] = "warning"
    env.update(extra)
    return env


def run_hub(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class Hub:
    """``exchange serve`` in the background."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exchange", "serve", "--port", str(port)],
            env=env,
            cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> httpx.Response:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"hub exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"hub not ready after {READY_TIMEOUT_S} s:\n{self.log.read_text()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def postmaster_pid(pg_dir: Path) -> int:
    return int((pg_dir / "postmaster.pid").read_text().splitlines()[0])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def assert_one_clear_error(stderr: str, fragment: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("exchange: error: ")
    assert fragment in lines[0]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir directly under /tmp (short socket paths; pytest's tmp dirs are private)."""
    root = Path(tempfile.mkdtemp(prefix="exchange-cli-"))
    try:
        yield root / "data"
    finally:
        stop = run_hub("db-stop", env=hub_env(root / "data"))
        assert stop.returncode == 0, stop.stderr
        shutil.rmtree(root, ignore_errors=True)


def test_serve_persists_data_and_leaves_no_postgres_behind(data_dir: Path) -> None:
    env = hub_env(data_dir)
    port = free_port()
    hub = Hub(env, port, data_dir.parent / "serve-1.log")
    try:
        ready = hub.wait_ready()
        assert ready.json() == {"status": "ready", "revision": head_revision()}
        reply = httpx.post(f"{hub.base_url}/graphql", json={"query": "{ __typename }"})
        assert reply.status_code == 200
        assert reply.json()["data"] == {"__typename": "Query"}
        assert "errors" not in reply.json()

        db_url = run_hub("db-url", env=env)
        assert db_url.returncode == 0, db_url.stderr
        url = db_url.stdout.strip()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE scratch (note text)")
            conn.execute("INSERT INTO scratch VALUES ('survives restarts')")
        pid = postmaster_pid(data_dir / "pg")
        assert pid_alive(pid)
    finally:
        code = hub.terminate()
    assert code == 0, hub.log.read_text()
    assert "Traceback" not in hub.log.read_text()
    assert not pid_alive(pid)
    assert processes_mentioning(str(data_dir)) == []

    hub = Hub(env, port, data_dir.parent / "serve-2.log")
    try:
        hub.wait_ready()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT note FROM scratch").fetchall() == [("survives restarts",)]
    finally:
        assert hub.terminate() == 0
    assert processes_mentioning(str(data_dir)) == []


def test_serve_on_a_taken_port_fails_clearly(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hub("serve", "--port", str(port), env=hub_env(data_dir))
    assert result.returncode != 0
    assert_one_clear_error(result.stderr, f"port {port} on 127.0.0.1 is already in use")
    assert not (data_dir / "pg").exists()  # checked before starting PostgreSQL


def test_serve_with_an_unreachable_database_fails_clearly(data_dir: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/exchange"
    result = run_hub(
        "serve", "--port", str(free_port()), env=hub_env(data_dir, EXCHANGE_DATABASE_URL=url)
    )
    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "cannot connect to the database at")
    assert not (data_dir / "pg").exists()


def test_serve_with_an_unusable_data_dir_fails_clearly(data_dir: Path) -> None:
    data_dir.parent.joinpath("a-file").write_text("")
    bad = data_dir.parent / "a-file" / "data"
    result = run_hub("serve", "--port", str(free_port()), env=hub_env(bad))
    assert result.returncode == 1
    assert_one_clear_error(result.stderr, str(bad))


@pytest.mark.parametrize(
    ("level", "access_log"),
    [("warning", False), ("error", False), ("info", True), ("debug", True)],
)
def test_the_access_log_is_on_only_where_its_lines_are_written(
    level: str, access_log: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    from exchange.cli import _run_uvicorn
    from exchange.config import Settings

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kw: seen.update(kw))
    _run_uvicorn(Settings(data_dir=tmp_path, log_level=level))
    assert seen["log_level"] == level
    assert seen["access_log"] is access_log


def test_serve_with_an_external_database_starts_no_embedded_server(
    data_dir: Path, databases: DatabaseFactory
) -> None:
    name = databases.create("exchange_test")
    try:
        env = hub_env(data_dir, EXCHANGE_DATABASE_URL=databases.url(name))
        hub = Hub(env, free_port(), data_dir.parent / "serve.log")
        try:
            assert hub.wait_ready().json()["revision"] == head_revision()
        finally:
            assert hub.terminate() == 0
        assert not (data_dir / "pg").exists()
        assert (data_dir / "secrets").is_dir()
    finally:
        databases.drop(name)


def test_export_schema_matches_the_checked_in_file(tmp_path: Path) -> None:
    checked_in = (REPO / "schema.graphql").read_text()
    printed = run_hub("export-schema", env=hub_env(tmp_path))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == checked_in, "run 'exchange export-schema -o schema.graphql'"

    target = tmp_path / "s.graphql"
    written = run_hub("export-schema", "--output", str(target), env=hub_env(tmp_path))
    assert written.returncode == 0, written.stderr
    assert target.read_text() == checked_in
