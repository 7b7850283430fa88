"""The platform layer: HTTP probes, the GraphQL endpoint, limits, pool, keys, embedded server."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from sqlalchemy.engine import make_url
from starlette.routing import Router

from exchange.config import Settings
from exchange.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, pgbench_path
from exchange.db.migrate import head_revision
from exchange.db.pool import redact, sqlalchemy_url, with_database
from exchange.keys import (
    JWT_KEYS_ENV,
    PEPPER_ENV,
    SecretsError,
    load_or_create_secrets,
    rotate_jwt_key,
)

TYPENAME = {"query": "{ __typename }"}


# -- HTTP -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.anyio
async def test_readyz_reports_the_head_revision(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": head_revision()}


@pytest.mark.anyio
async def test_readyz_is_unavailable_when_the_schema_revision_is_wrong(
    client: httpx.AsyncClient, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'bogus'")
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "bogus" in body["reason"]

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.anyio
async def test_readyz_is_unavailable_on_an_unmigrated_database(
    make_client: Any, settings: Settings, empty_database_url: str
) -> None:
    async with make_client(settings, empty_database_url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "database schema is not migrated",
    }


@pytest.mark.anyio
async def test_graphql_typename_over_http(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json=TYPENAME)
    assert response.status_code == 200
    assert response.json()["data"] == {"__typename": "Query"}
    assert "errors" not in response.json()


@pytest.mark.anyio
async def test_graphql_requests_go_straight_to_the_endpoint(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/graphql`` skips Starlette's router; every other path still goes through it."""
    routed: list[str] = []
    route = Router.__call__

    async def counting(self: Router, scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await route(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counting)
    response = await client.post("/graphql", json=TYPENAME)
    assert response.json()["data"] == {"__typename": "Query"}
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.post("/graphql/", json=TYPENAME)).status_code in (307, 404)
    assert routed == ["/healthz", "/graphql/"]


@pytest.mark.anyio
async def test_graphql_queries_via_get_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ __typename }"})
    assert response.status_code != 200
    assert "__typename" not in response.text


@pytest.mark.anyio
async def test_body_larger_than_the_cap_gets_413(
    make_client: Any, settings: Settings, database_url: str
) -> None:
    small = replace(settings, max_body_bytes=200)
    padded = {**TYPENAME, "variables": {"pad": "x" * 300}}

    async def chunks() -> AsyncIterator[bytes]:
        payload = json.dumps(padded).encode()
        for i in range(0, len(payload), 50):
            yield payload[i : i + 50]

    async with make_client(small, database_url) as client:
        assert (await client.post("/graphql", json=TYPENAME)).status_code == 200
        declared = await client.post("/graphql", json=padded)
        assert declared.status_code == 413
        streamed = await client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert "200 bytes" in streamed.json()["error"]


@pytest.mark.anyio
async def test_graphiql_only_in_development_mode(
    make_client: Any, settings: Settings, database_url: str
) -> None:
    html = {"accept": "text/html"}
    async with make_client(settings, database_url) as client:
        production = await client.get("/graphql", headers=html)
    assert production.status_code != 200
    assert "graphiql" not in production.text.lower()

    dev = replace(settings, mode="development")
    async with make_client(dev, database_url) as client:
        development = await client.get("/graphql", headers=html)
    assert development.status_code == 200
    assert "graphiql" in development.text.lower()


# -- the pool and URLs ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pool_connections_carry_the_settings(pool: Any, settings: Settings) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')"
        )
        timeout, application = await cur.fetchone()
        assert not conn.autocommit
    assert timeout == f"{settings.statement_timeout_ms // 1000}s"
    assert application == "exchange"
    assert pool.min_size == settings.pool_min_size
    assert pool.max_size == settings.pool_max_size


def test_url_helpers() -> None:
    socket_url = "postgresql://postgres@/postgres?host=/tmp/x%20y"
    assert sqlalchemy_url(socket_url) == "postgresql+psycopg://postgres@/postgres?host=/tmp/x%20y"
    assert sqlalchemy_url("postgres://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    converted = make_url(sqlalchemy_url("host=/tmp dbname=d"))
    assert converted.drivername == "postgresql+psycopg"
    assert dict(converted.query) == {"host": "/tmp", "dbname": "d"}
    assert with_database(socket_url, "other") == "postgresql://postgres@/other?host=/tmp/x%20y"
    assert with_database("postgresql://h:5/d?dbname=d", "e") == "postgresql://h:5/e"
    assert "dbname=e" in with_database("host=h dbname=d", "e")
    assert redact("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"
    assert "secret" not in redact("host=h password=secret")


# -- keys -------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_created_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_secrets(tmp_path, environ={})
    again = load_or_create_secrets(tmp_path, environ={})
    assert [k.kid for k in again.jwt_keys] == [k.kid for k in first.jwt_keys]
    assert again.api_key_pepper == first.api_key_pepper
    assert len(first.api_key_pepper) == 32
    assert _mode(tmp_path / "secrets") == 0o700
    assert _mode(tmp_path / "secrets" / "jwt-keys.json") == 0o600
    assert _mode(tmp_path / "secrets" / "pepper") == 0o600
    assert "d" not in first.jwks()["keys"][0]

    other = load_or_create_secrets(tmp_path / "elsewhere", environ={})
    assert other.api_key_pepper != first.api_key_pepper
    assert other.signing_key.kid != first.signing_key.kid


def test_rotation_signs_with_the_new_key_and_still_verifies_old_tokens(tmp_path: Path) -> None:
    old = load_or_create_secrets(tmp_path, environ={})
    token = jwt.encode(
        {"sub": "m1"},
        old.signing_key.private_key,
        algorithm="EdDSA",
        headers={"kid": old.signing_key.kid},
    )
    new_key = rotate_jwt_key(tmp_path, environ={})
    rotated = load_or_create_secrets(tmp_path, environ={})
    assert rotated.signing_key.kid == new_key.kid != old.signing_key.kid
    assert len(rotated.jwt_keys) == 2

    kid = jwt.get_unverified_header(token)["kid"]
    verifier = rotated.verification_key(kid)
    assert verifier is not None
    assert jwt.decode(token, verifier, algorithms=["EdDSA"]) == {"sub": "m1"}
    assert rotated.verification_key("unknown") is None


def test_secret_files_from_the_environment(tmp_path: Path) -> None:
    source = load_or_create_secrets(tmp_path / "a", environ={})
    keys_file = tmp_path / "a" / "secrets" / "jwt-keys.json"
    pepper_file = tmp_path / "pepper.hex"
    pepper_file.write_text("ab" * 32 + "\n")
    env = {JWT_KEYS_ENV: str(keys_file), PEPPER_ENV: str(pepper_file)}
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")
    loaded = load_or_create_secrets(unwritable / "data", environ=env)
    assert loaded.signing_key.kid == source.signing_key.kid
    assert loaded.api_key_pepper == bytes.fromhex("ab" * 32)

    with pytest.raises(SecretsError, match="does not exist"):
        load_or_create_secrets(tmp_path, environ={JWT_KEYS_ENV: str(tmp_path / "missing")})
    pepper_file.write_text("short")
    with pytest.raises(SecretsError, match="at least 32"):
        load_or_create_secrets(tmp_path, environ={PEPPER_ENV: str(pepper_file)})


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(SecretsError, match="cannot create secrets in .*EXCHANGE_DATA_DIR"):
        load_or_create_secrets(not_a_dir / "data", environ={})


# -- the embedded server ----------------------------------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory directly under /tmp (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="exchange-emb-"))
    try:
        yield path
    finally:
        EmbeddedPostgres(path / "x").stop(force=True)
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def test_embedded_server_long_path_reuse_and_persistence(short_tmp: Path) -> None:
    data_dir = short_tmp / ("d" * 60) / ("e" * 40) / "pg"
    server = EmbeddedPostgres(data_dir)
    try:
        url = server.start()
        assert server.owned
        assert str(data_dir) not in url  # too long for a unix socket: a short dir is used
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('persisted')")
            settings = conn.execute(
                "SELECT current_setting('max_connections'), current_setting('fsync'),"
                " current_setting('listen_addresses')"
            ).fetchone()
        assert settings == ("200", "on", "")

        second = EmbeddedPostgres(data_dir)
        assert second.start() == url
        assert not second.owned
        second.stop()
        assert server.running  # a reused server is left running

        server.stop()
        assert not server.running
        server.stop()  # idempotent

        with EmbeddedPostgres(data_dir) as again, psycopg.connect(again.url("postgres")) as conn:
            row = conn.execute("SELECT v FROM kept").fetchone()
        assert row == ("persisted",)
        assert not EmbeddedPostgres(data_dir).running
    finally:
        EmbeddedPostgres(data_dir).stop(force=True)


def test_embedded_server_in_an_unusable_directory_fails_clearly(short_tmp: Path) -> None:
    blocker = short_tmp / "file"
    blocker.write_text("")
    with pytest.raises(EmbeddedPostgresError, match="data directory .* is not usable"):
        EmbeddedPostgres(blocker / "pg").start()


def test_pgbench_is_shipped() -> None:
    assert os.access(pgbench_path(), os.X_OK)
