"""Configuration in one place.

Every setting has an environment variable prefixed ``EXCHANGE_`` and, where it makes sense
for an operator, a matching command-line flag (``exchange serve --port`` and so on). The
command line wins over the environment, the environment over the defaults.
``docs/configuration.md`` documents each setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

ENV_PREFIX = "EXCHANGE_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("exchange"))


@dataclass(frozen=True)
class Settings:
    """The hub's settings. Field names map to ``EXCHANGE_<NAME>`` environment variables."""

    database_url: str | None = None
    """PostgreSQL URL. When unset, a private embedded PostgreSQL is started in ``data_dir``."""
    data_dir: Path = Path()
    """Where the embedded database, signing keys and the API-key pepper live."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    mode: str = "production"
    """``production`` (no introspection, no IDE, masked errors) or ``development``."""
    settlement_currency: str = "CNY"
    settlement_minor_unit: int = 2
    """Decimal places of the settlement currency's minor unit (payment instructions round to it)."""
    pool_min_size: int = 2
    pool_max_size: int = 16
    statement_timeout_ms: int = 15_000
    jwt_issuer: str = "exchange"
    jwt_audience: str = "exchange-api"
    access_token_ttl_s: int = 900
    member_token_ttl_s: int = 900
    quote_ttl_s: int = 30
    conversion_fee_bp: int = 100
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    max_cost: int = 1_000
    cost_budget_per_minute: int = 20_000
    max_body_bytes: int = 1_000_000
    balance_stripes: int = 32
    """Rows per hot (non-wallet) account balance; writers spread over them."""
    log_level: str = "info"

    @property
    def production(self) -> bool:
        return self.mode == "production"

    def validate(self) -> Settings:
        if self.mode not in ("production", "development"):
            raise ConfigError(
                f"EXCHANGE_MODE must be 'production' or 'development', not {self.mode!r}"
            )
        if not (0 < self.port < 65536):
            raise ConfigError(f"EXCHANGE_PORT must be between 1 and 65535, not {self.port}")
        if self.workers < 1:
            raise ConfigError("EXCHANGE_WORKERS must be at least 1")
        if not (0 <= self.conversion_fee_bp < 10_000):
            raise ConfigError("EXCHANGE_CONVERSION_FEE_BP must be between 0 and 9999")
        if not (1 <= self.balance_stripes <= 256):
            raise ConfigError("EXCHANGE_BALANCE_STRIPES must be between 1 and 256")
        if self.pool_min_size < 1 or self.pool_max_size < self.pool_min_size:
            raise ConfigError("EXCHANGE_POOL_MIN_SIZE must be >= 1 and <= EXCHANGE_POOL_MAX_SIZE")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"EXCHANGE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        return self

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply non-``None`` overrides (from command-line flags)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given).validate()


def _coerce(name: str, raw: str, kind: Any) -> Any:
    kind_s = str(kind)
    try:
        if "int" in kind_s and "str" not in kind_s:
            return int(raw)
        if "Path" in kind_s:
            return Path(raw).expanduser()
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be an integer, not {raw!r}") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {"data_dir": default_data_dir()}
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None or raw == "":
            continue
        values[f.name] = _coerce(f.name, raw, f.type)
    return Settings(**values).validate()
