"""Token-signing keys and the API-key pepper, kept in the data directory.

Layout under ``<data_dir>/secrets/`` (directory mode 0700, files 0600):

- ``jwt-keys.json``: a JWK set of Ed25519 keys *with* their private part (``d``). The newest
  key (last in the file) signs; every listed key verifies. ``kid`` is the key's RFC 7638
  thumbprint.
- ``pepper``: 32 random bytes mixed into API-key hashes.

``EXCHANGE_JWT_KEYS_FILE`` and ``EXCHANGE_API_KEY_PEPPER_FILE`` name files to use instead;
such files must exist (they are never created). There is no built-in default secret.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

SECRETS_DIR = "secrets"
JWT_KEYS_FILE = "jwt-keys.json"
PEPPER_FILE = "pepper"
JWT_KEYS_ENV = "EXCHANGE_JWT_KEYS_FILE"
PEPPER_ENV = "EXCHANGE_API_KEY_PEPPER_FILE"
PEPPER_BYTES = 32
JWT_ALGORITHM = "EdDSA"


class SecretsError(RuntimeError):
    """The keys or the pepper cannot be read or created."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key with its key id."""

    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(kid=thumbprint(key.public_key()), private_key=key, created_at=_now())

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(_raw_public(self.public_key)),
            "kid": self.kid,
            "alg": JWT_ALGORITHM,
            "use": "sig",
        }

    def private_jwk(self) -> dict[str, str]:
        raw = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {
            **self.public_jwk(),
            "d": _b64url(raw),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" not in jwk:
            raise ValueError("not an Ed25519 private key")
        key = Ed25519PrivateKey.from_private_bytes(_b64url_decode(str(jwk["d"])))
        if "x" in jwk and _b64url(_raw_public(key.public_key())) != jwk["x"]:
            raise ValueError("public part does not match the private key")
        created = jwk.get("created_at")
        created_at = datetime.fromisoformat(created) if isinstance(created, str) else _now()
        kid = str(jwk.get("kid") or thumbprint(key.public_key()))
        return cls(kid=kid, private_key=key, created_at=created_at)


@dataclass(frozen=True)
class Secrets:
    jwt_keys: tuple[SigningKey, ...]
    """Oldest first; the last one signs."""
    api_key_pepper: bytes

    @property
    def signing_key(self) -> SigningKey:
        return self.jwt_keys[-1]

    def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        for key in self.jwt_keys:
            if key.kid == kid:
                return key.public_key
        return None

    def knows(self, kid: str) -> bool:
        """True while ``kid`` is in the key set."""
        return any(key.kid == kid for key in self.jwt_keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK set (no private material)."""
        return {"keys": [key.public_jwk() for key in self.jwt_keys]}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def thumbprint(key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(key))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


# -- files -------------------------------------------------------------------------------------


def secrets_dir(data_dir: Path) -> Path:
    return Path(data_dir) / SECRETS_DIR


def _override(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "")
    return Path(value).expanduser() if value else None


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077 and directory.stat().st_uid == os.geteuid():
            directory.chmod(0o700)
        probe = directory / f".probe-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SecretsError(
            f"cannot create secrets in {directory}: {exc.strerror or exc}; set EXCHANGE_DATA_DIR "
            f"to a writable directory, or provide {JWT_KEYS_ENV} and {PEPPER_ENV}"
        ) from exc


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise writers (several workers may start at once)."""
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            path.chmod(0o600)
    except OSError as exc:
        raise SecretsError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from exc
    return data


def _parse_keys(path: Path, data: bytes) -> tuple[SigningKey, ...]:
    try:
        document = json.loads(data)
        keys = tuple(SigningKey.from_jwk(jwk) for jwk in document["keys"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretsError(f"{path} is not a valid signing-key file: {exc}") from exc
    if not keys:
        raise SecretsError(f"{path} holds no signing key")
    return keys


def _serialise_keys(keys: tuple[SigningKey, ...]) -> bytes:
    document = {"keys": [key.private_jwk() for key in keys]}
    return (json.dumps(document, indent=2) + "\n").encode()


def _parse_pepper(path: Path, data: bytes) -> bytes:
    text = data.strip()
    if len(text) >= 2 * PEPPER_BYTES and all(chr(c) in string.hexdigits for c in text):
        try:
            return bytes.fromhex(text.decode("ascii"))
        except ValueError:
            pass
    if len(data) < PEPPER_BYTES:
        raise SecretsError(
            f"{path} must hold at least {PEPPER_BYTES} random bytes (raw, or as hex text)"
        )
    return data


def _load_or_create_keys(path: Path, create: bool) -> tuple[SigningKey, ...]:
    if path.exists() or not create:
        if not path.exists():
            raise SecretsError(f"signing-key file {path} (from {JWT_KEYS_ENV}) does not exist")
        return _parse_keys(path, _read(path, "signing-key"))
    with _locked(path.parent):
        if path.exists():
            return _parse_keys(path, _read(path, "signing-key"))
        keys = (SigningKey.generate(),)
        _write_private(path, _serialise_keys(keys))
        return keys


def _load_or_create_pepper(path: Path, create: bool) -> bytes:
    if path.exists() or not create:
        if not path.exists():
            raise SecretsError(f"pepper file {path} (from {PEPPER_ENV}) does not exist")
        return _parse_pepper(path, _read(path, "pepper"))
    with _locked(path.parent):
        if path.exists():
            return _parse_pepper(path, _read(path, "pepper"))
        pepper = secrets.token_bytes(PEPPER_BYTES)
        _write_private(path, pepper)
        return pepper


def load_or_create_secrets(data_dir: Path, environ: Mapping[str, str] | None = None) -> Secrets:
    """Read the keys and the pepper, creating them in ``data_dir`` on first use."""
    env = os.environ if environ is None else environ
    keys_override = _override(env, JWT_KEYS_ENV)
    pepper_override = _override(env, PEPPER_ENV)
    directory = secrets_dir(data_dir)
    if keys_override is None or pepper_override is None:
        keys_path = directory / JWT_KEYS_FILE
        pepper_path = directory / PEPPER_FILE
        if not (keys_path.exists() and pepper_path.exists()):
            _prepare_dir(directory)
    keys = _load_or_create_keys(
        keys_override or directory / JWT_KEYS_FILE, create=keys_override is None
    )
    pepper = _load_or_create_pepper(
        pepper_override or directory / PEPPER_FILE, create=pepper_override is None
    )
    return Secrets(jwt_keys=keys, api_key_pepper=pepper)


def rotate_jwt_key(data_dir: Path, environ: Mapping[str, str] | None = None) -> SigningKey:
    """Add a new signing key (it signs from now on); older keys stay for verification."""
    env = os.environ if environ is None else environ
    override = _override(env, JWT_KEYS_ENV)
    if override is None:
        _prepare_dir(secrets_dir(data_dir))
        path = secrets_dir(data_dir) / JWT_KEYS_FILE
    else:
        path = override
    try:
        with _locked(path.parent):
            existing = _parse_keys(path, _read(path, "signing-key")) if path.exists() else ()
            if not existing and override is not None:
                raise SecretsError(f"signing-key file {path} (from {JWT_KEYS_ENV}) does not exist")
            new = SigningKey.generate()
            _write_private(path, _serialise_keys((*existing, new)))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SecretsError(f"cannot write the signing-key file {path}: {reason}") from exc
    return new
