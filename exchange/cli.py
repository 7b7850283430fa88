"""The ``exchange`` command line.

Subcommands register themselves with :func:`command`. Modules named ``exchange/cli_*.py``
are imported when the command line starts, so a new group of subcommands is a new module
that does::

    from exchange.cli import add_data_dir_option, command, open_database, settings_from_args

    @command("create-merchant", help="...", configure=lambda p: add_data_dir_option(p))
    def create_merchant(args: argparse.Namespace) -> int:
        settings = settings_from_args(args)
        with open_database(settings) as url:
            ...
        return 0

Errors that an operator can fix are raised as :class:`CliError` (or ``ConfigError``) and
printed as one line, ``exchange: error: ...``, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.util
import os
import pkgutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

import exchange
from exchange.config import ENV_PREFIX, ConfigError, Settings, load_settings
from exchange.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from exchange.db.pool import redact, sync_connect
from exchange.keys import SecretsError, load_or_create_secrets

PROG = "exchange"
EMBEDDED_DATABASE = "exchange"
EMBEDDED_SUBDIR = "pg"
EXTENSION_PREFIX = "cli_"

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An error the operator can act on; printed as one line with exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    configure: Callable[[argparse.ArgumentParser], None] | None


_COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a subcommand; ``configure`` adds its arguments to its parser."""

    def register(handler: Handler) -> Handler:
        if name in _COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        _COMMANDS[name] = Command(name=name, help=help, handler=handler, configure=configure)
        return handler

    return register


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory for the embedded database and the secrets (env EXCHANGE_DATA_DIR)",
    )


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the environment, with ``--data-dir`` and ``overrides`` applied."""
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser().absolute()
    return load_settings().with_overrides(data_dir=data_dir, **overrides)


# -- the database -----------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def check_database_reachable(url: str) -> None:
    try:
        with sync_connect(url, connect_timeout_s=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = _one_line(exc)
        raise CliError(f"cannot connect to the database at {redact(url)}: {reason}") from exc


def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_url`` unless it exists."""
    with sync_connect(admin_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def migrate_to_head(url: str) -> str:
    """Upgrade the schema to the newest revision; return that revision."""
    import sqlalchemy.exc

    from exchange.db.migrate import MigrationError, current_revision, upgrade

    try:
        upgrade(url, "head")
        revision = current_revision(url)
    except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error) as exc:
        raise CliError(f"database migration failed: {_one_line(exc)}") from exc
    except MigrationError as exc:
        raise CliError(str(exc)) from exc
    return revision or "base"


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir / EMBEDDED_SUBDIR)


@contextlib.contextmanager
def open_database(
    settings: Settings, *, migrate: bool = True, keep_running: bool = False
) -> Iterator[str]:
    """Yield the URL of the hub's database, starting the embedded server when needed.

    With ``EXCHANGE_DATABASE_URL`` set, that server is used (never an embedded one) after a
    connection check. Otherwise the embedded server in ``<data_dir>/pg`` is started (or an
    already running one reused), database ``exchange`` created if missing, and a server
    started here is stopped on exit unless ``keep_running``. With ``migrate`` the schema is
    brought to the newest revision first.
    """
    if settings.database_url:
        check_database_reachable(settings.database_url)
        if migrate:
            migrate_to_head(settings.database_url)
        yield settings.database_url
        return
    server = embedded_server(settings)
    try:
        admin_url = server.start()
        ensure_database(admin_url, EMBEDDED_DATABASE)
        url = server.url(EMBEDDED_DATABASE)
        if migrate:
            migrate_to_head(url)
        yield url
    finally:
        if not keep_running:
            server.stop()


# -- serve ------------------------------------------------------------------------------------


class _Terminated(Exception):
    """SIGTERM arrived: unwind (stopping the embedded server) and exit 0."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the cleanup
    raise _Terminated


def check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is already in use") from exc
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def settings_environment(settings: Settings, database_url: str) -> dict[str, str]:
    """Environment variables from which ``load_settings`` rebuilds ``settings`` in a worker."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[ENV_PREFIX + f.name.upper()] = str(value)
    env[ENV_PREFIX + "DATABASE_URL"] = database_url
    return env


def _run_uvicorn(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        "exchange.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=settings.log_level,
        # Access lines are logged at INFO: above it uvicorn would still build each line's
        # arguments (the client's address, the quoted path) for a record nobody sees.
        access_log=settings.log_level in ("info", "debug", "trace"),
        lifespan="on",
    )


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (env EXCHANGE_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (env EXCHANGE_PORT)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (env EXCHANGE_WORKERS)"
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: GraphiQL, introspection, detailed errors (env EXCHANGE_MODE)",
    )
    add_data_dir_option(parser)


@command("serve", help="run the hub's HTTP server", configure=_configure_serve)
def serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(
        args,
        host=args.host,
        port=args.port,
        workers=args.workers,
        mode="development" if args.dev else None,
    )
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        check_port_free(settings.host, settings.port)
        load_or_create_secrets(settings.data_dir)
        with open_database(settings) as url:
            os.environ.update(settings_environment(settings, url))
            _run_uvicorn(settings)
    except _Terminated:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# -- other built-in commands ------------------------------------------------------------------


@command(
    "migrate",
    help="bring the database schema to the newest revision",
    configure=add_data_dir_option,
)
def migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_database(settings, migrate=False) as url:
        revision = migrate_to_head(url)
    print(f"database schema at revision {revision}")
    return 0


def _configure_export_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", type=Path, default=None, help="write to this file")


@command("export-schema", help="print the GraphQL schema (SDL)", configure=_configure_export_schema)
def export_schema(args: argparse.Namespace) -> int:
    from exchange.api.schema import schema

    text = schema.as_str() + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    return 0


@command(
    "db-url",
    help="print the database URL the hub uses (starts the embedded server and leaves it running)",
    configure=add_data_dir_option,
)
def db_url(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with open_database(settings, migrate=False, keep_running=True) as url:
        print(url)
    return 0


@command(
    "db-stop",
    help="stop the embedded database server of the data directory if it is running",
    configure=add_data_dir_option,
)
def db_stop(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    embedded_server(settings).stop(force=True)
    return 0


# -- entry point ------------------------------------------------------------------------------


def _load_extensions() -> None:
    for module in pkgutil.iter_modules(exchange.__path__):
        if module.name.startswith(EXTENSION_PREFIX):
            importlib.import_module(f"{exchange.__name__}.{module.name}")


def build_parser() -> argparse.ArgumentParser:
    _load_extensions()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Coalition-loyalty points exchange hub."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in sorted(_COMMANDS.values(), key=lambda c: c.name):
        sub_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.configure is not None:
            cmd.configure(sub_parser)
        sub_parser.set_defaults(handler=cmd.handler)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (EmbeddedPostgresError, SecretsError) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
