"""Building a small alliance for API tests: merchants with keys, currencies, members, points.

Everything goes through the real services (and real credentials), as a client would see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from exchange.config import Settings
from exchange.domain.expiry import ExpiryPolicy
from exchange.keys import Secrets, load_or_create_secrets
from exchange.services import catalog, members, points
from exchange.services.actors import ADMIN, MERCHANT, Actor
from exchange.services.credentials import create_api_key, mint_member_token, mint_operator_token
from exchange.services.tx import Pool, transaction

ADMIN_ACTOR = Actor(role=ADMIN, subject="tests")


@dataclass
class Shop:
    id: int
    code: str
    key: str
    actor: Actor

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    pool: Pool
    settings: Settings
    secrets: Secrets
    shops: dict[str, Shop] = field(default_factory=dict)
    _keys: int = 0

    async def shop(self, code: str) -> Shop:
        merchant = await catalog.create_merchant(
            self.pool, ADMIN_ACTOR, code=code, name=code.title(), stripes=4
        )
        _info, key = await create_api_key(
            self.pool,
            ADMIN_ACTOR,
            pepper=self.secrets.api_key_pepper,
            role=MERCHANT,
            merchant_id=merchant.id,
            label=f"{code} test key",
        )
        shop = Shop(merchant.id, code, key, Actor(role=MERCHANT, merchant_id=merchant.id))
        self.shops[code] = shop
        return shop

    async def currency(
        self,
        shop: Shop,
        code: str,
        rate: str,
        *,
        scale: int = 0,
        expiry: ExpiryPolicy | None = None,
    ) -> None:
        await catalog.register_currency(
            self.pool,
            shop.actor,
            code=code,
            name=f"{code} points",
            scale=scale,
            rate=Decimal(rate),
            expiry=expiry or ExpiryPolicy("never"),
            stripes=4,
        )

    async def member(self, shop: Shop, ref: str) -> int:
        member_id, _created = await members.link_member(self.pool, shop.actor, ref)
        return member_id

    async def link(self, shop: Shop, ref: str, member_id: int) -> None:
        await members.link_member(self.pool, shop.actor, ref, member_id=member_id)

    async def earn(self, shop: Shop, member_id: int, code: str, n: int, **details: Any) -> int:
        self._keys += 1
        outcome = await points.earn(
            self.pool,
            shop.actor,
            member_id=member_id,
            currency_code=code,
            points=n,
            idempotency_key=f"earn-{self._keys}",
            details=details or None,
        )
        return outcome.entry_id

    async def redeem(self, shop: Shop, member_id: int, code: str, n: int) -> int:
        self._keys += 1
        outcome = await points.redeem(
            self.pool,
            shop.actor,
            member_id=member_id,
            currency_code=code,
            points=n,
            idempotency_key=f"redeem-{self._keys}",
        )
        return outcome.entry_id

    async def member_headers(self, shop: Shop, ref: str) -> dict[str, str]:
        issued = await mint_member_token(
            self.pool, shop.actor, ref, secrets=self.secrets, settings=self.settings
        )
        return {"Authorization": f"Bearer {issued.token}"}

    def operator_headers(self, role: str = ADMIN) -> dict[str, str]:
        issued = mint_operator_token(self.secrets, role, "ops", settings=self.settings)
        return {"Authorization": f"Bearer {issued.token}"}


async def make_world(pool: Pool, settings: Settings) -> World:
    await transaction(pool, lambda conn: catalog.bootstrap(conn, settings.settlement_currency, 4))
    return World(pool=pool, settings=settings, secrets=load_or_create_secrets(settings.data_dir))


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    status: int = 200,
) -> dict[str, Any]:
    """POST a GraphQL request; check the HTTP status and return the JSON body."""
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def data(body: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a response that must have no errors."""
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


def codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
