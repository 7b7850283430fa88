"""Signed checkpoints: what the hub attests to each merchant at each batch close.

The payload is a compact JSON object with sorted keys::

    {"batch": 7, "chainBlock": 42, "chainHead": "<64 hex>", "closing": "-12.340000",
     "digest": "<64 hex>", "lines": 3, "merchant": "shop-a", "opening": "0.000000"}

``digest`` is the SHA-256 of the statement's lines (:func:`exchange.finance.lines.line_bytes`
of each line, in order), ``lines`` their number, ``closing`` the merchant's position after
the batch, ``chainHead`` the hash of block ``chainBlock``, which covers every entry of the
batch. The signature is Ed25519 over the payload's UTF-8 bytes with the hub's signing key
(:attr:`exchange.keys.Secrets.signing_key`), base64url without padding; ``key_id`` is that
key's ``kid`` in the hub's public key set.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.domain.money import micro_to_decimal
from exchange.keys import SigningKey


@dataclass(frozen=True)
class Checkpoint:
    payload: str
    signature: str
    key_id: str


def payload_text(
    *,
    batch: int,
    merchant: str,
    opening_micro: int,
    closing_micro: int,
    lines: int,
    digest: bytes,
    chain_block: int,
    chain_head: bytes,
) -> str:
    body: dict[str, Any] = {
        "batch": batch,
        "chainBlock": chain_block,
        "chainHead": chain_head.hex(),
        "closing": micro_to_decimal(closing_micro),
        "digest": digest.hex(),
        "lines": lines,
        "merchant": merchant,
        "opening": micro_to_decimal(opening_micro),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: SigningKey, payload: str) -> Checkpoint:
    signature = key.private_key.sign(payload.encode())
    return Checkpoint(payload=payload, signature=_b64url(signature), key_id=key.kid)


def verify(public_key: Ed25519PublicKey, payload: str, signature: str) -> bool:
    """Whether ``signature`` is the key's signature of ``payload``."""
    try:
        public_key.verify(_b64url_decode(signature), payload.encode())
    except (InvalidSignature, ValueError):
        return False
    return True
