"""A hub driven over HTTP for the mutation tests: operators, merchants, members, ledger reads.

Merchants are onboarded with the ``createMerchant`` mutation under a real admin token, and
use the API key it returns; members act with tokens from ``startMemberSession``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from exchange.config import Settings
from exchange.keys import Secrets, load_or_create_secrets
from exchange.services import catalog
from exchange.services.actors import ADMIN
from exchange.services.credentials import mint_operator_token
from exchange.services.tx import Pool, transaction

_keys = itertools.count(1)


def new_key(prefix: str = "k") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{next(_keys)}"


CREATE_MERCHANT = """
mutation($input: CreateMerchantInput!) {
  createMerchant(input: $input) {
    merchant { merchant { id code } exposureLimit }
    apiKey
    userErrors { code field message }
  }
}"""

REGISTER_CURRENCY = """
mutation($input: RegisterCurrencyInput!) {
  registerCurrency(input: $input) {
    currency { id code scale rate }
    userErrors { code field message }
  }
}"""

LINK_CUSTOMER = """
mutation($input: LinkCustomerInput!) {
  linkCustomer(input: $input) {
    member { id customerRef }
    created
    userErrors { code field message }
  }
}"""

START_SESSION = """
mutation($input: StartMemberSessionInput!) {
  startMemberSession(input: $input) {
    token expiresAt member { id }
    userErrors { code field message }
  }
}"""

CREATE_RULE = """
mutation($input: CreateEarningRuleInput!) {
  createEarningRule(input: $input) {
    rule { id kind name active }
    userErrors { code field message }
  }
}"""

AWARD = """
mutation($input: AwardPointsInput!) {
  awardPoints(input: $input) {
    entry { id kind points }
    points replayed
    appliedRules { ruleId name kind points factor }
    cappedBy
    userErrors { code field message }
  }
}"""

EARN_PURCHASE = """
mutation($input: EarnForPurchaseInput!) {
  earnForPurchase(input: $input) {
    entry { id kind points value }
    points replayed cappedBy
    appliedRules { ruleId name kind points factor }
    userErrors { code field message }
  }
}"""

REDEEM = """
mutation($input: RedeemPointsInput!) {
  redeemPoints(input: $input) {
    entry { id kind points }
    pointsUsed value cashDue replayed
    userErrors { code field message }
  }
}"""


@dataclass
class Shop:
    code: str
    id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Hub:
    client: httpx.AsyncClient
    pool: Pool
    settings: Settings
    secrets: Secrets
    shops: dict[str, Shop] = field(default_factory=dict)

    # -- transport ---------------------------------------------------------------------------

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
        )

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        status: int = 200,
    ) -> dict[str, Any]:
        response = await self.post(query, variables, headers)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``data`` of a request that must succeed without any error or user error."""
        body = await self.gql(query, variables, headers)
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]
        for value in result.values():
            if isinstance(value, dict) and "userErrors" in value:
                assert value["userErrors"] == [], value
        return result

    async def payload(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The single payload of a mutation (user errors allowed, top-level errors not)."""
        body = await self.gql(query, variables, headers)
        assert "errors" not in body, body
        (value,) = body["data"].values()
        assert isinstance(value, dict)
        return value

    # -- actors ------------------------------------------------------------------------------

    def operator_headers(self, role: str = ADMIN) -> dict[str, str]:
        issued = mint_operator_token(self.secrets, role, f"{role}-ops", settings=self.settings)
        return {"Authorization": f"Bearer {issued.token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.operator_headers(ADMIN)

    async def onboard(self, code: str, exposure_limit: str | None = None) -> Shop:
        result = await self.data(
            CREATE_MERCHANT,
            {"input": {"code": code, "name": code.title(), "exposureLimit": exposure_limit}},
            self.admin,
        )
        made = result["createMerchant"]
        shop = Shop(code=code, id=int(await self._merchant_id(code)), key=made["apiKey"])
        self.shops[code] = shop
        return shop

    async def _merchant_id(self, code: str) -> int:
        return int(await self.scalar("SELECT id FROM merchants WHERE code = %s", (code,)))

    async def register(
        self,
        shop: Shop,
        code: str,
        rate: str,
        *,
        scale: int = 0,
        expiry: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        result = await self.data(
            REGISTER_CURRENCY,
            {
                "input": {
                    "code": code,
                    "name": f"{code} points",
                    "scale": scale,
                    "rate": rate,
                    "expiry": expiry or {"kind": "NEVER"},
                }
            },
            shop.headers,
        )
        currency: dict[str, Any] = result["registerCurrency"]["currency"]
        return currency

    async def link(self, shop: Shop, ref: str, link_code: str | None = None) -> str:
        """Link ``ref`` at ``shop``; the member's global ID."""
        result = await self.data(
            LINK_CUSTOMER, {"input": {"customerRef": ref, "linkCode": link_code}}, shop.headers
        )
        member_id: str = result["linkCustomer"]["member"]["id"]
        return member_id

    async def member_headers(self, shop: Shop, ref: str) -> dict[str, str]:
        result = await self.data(START_SESSION, {"input": {"customerRef": ref}}, shop.headers)
        return {"Authorization": f"Bearer {result['startMemberSession']['token']}"}

    async def rule(self, shop: Shop, currency: str, name: str, **kind: Any) -> str:
        result = await self.data(
            CREATE_RULE, {"input": {"currency": currency, "name": name, **kind}}, shop.headers
        )
        rule_id: str = result["createEarningRule"]["rule"]["id"]
        return rule_id

    async def award(
        self, shop: Shop, ref: str, currency: str, points: str, key: str | None = None
    ) -> dict[str, Any]:
        result = await self.data(
            AWARD,
            {
                "input": {
                    "customerRef": ref,
                    "currency": currency,
                    "points": points,
                    "reason": "welcome",
                    "idempotencyKey": key or new_key("award"),
                }
            },
            shop.headers,
        )
        award: dict[str, Any] = result["awardPoints"]
        return award

    # -- ledger reads ------------------------------------------------------------------------

    async def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            assert row is not None
            return row[0]

    async def count(self, table: str) -> int:
        return int(await self.scalar(f"SELECT count(*) FROM {table}"))

    async def ledger_size(self) -> tuple[int, int, int, int]:
        """Entries, postings, lots and lot moves: all unchanged by a refused request."""
        return (
            await self.count("entries"),
            await self.count("postings"),
            await self.count("lots"),
            await self.count("lot_moves"),
        )

    async def wallet(self, member_global_id: str, code: str) -> int:
        """A member's balance in smallest units (summing the balance rows)."""
        member_id = member_db_id(member_global_id)
        return int(
            await self.scalar(
                "SELECT coalesce(sum(b.amount), 0) FROM balances b"
                "  JOIN accounts a ON a.id = b.account_id JOIN currencies c ON c.id = a.asset_id"
                " WHERE a.kind = 'wallet' AND a.member_id = %s AND c.code = %s",
                (member_id, code),
            )
        )

    async def position(self, shop: Shop) -> Decimal:
        """A merchant's settlement position (+: the hub owes it), in the settlement currency."""
        micro = await self.scalar(
            "SELECT coalesce(sum(b.amount), 0) FROM balances b"
            "  JOIN accounts a ON a.id = b.account_id"
            " WHERE a.kind = 'settlement' AND a.merchant_id = %s",
            (shop.id,),
        )
        return Decimal(int(micro)).scaleb(-6)

    async def hub_account(self, kind: str) -> Decimal:
        micro = await self.scalar(
            "SELECT coalesce(sum(b.amount), 0) FROM balances b"
            "  JOIN accounts a ON a.id = b.account_id WHERE a.kind = %s",
            (kind,),
        )
        return Decimal(int(micro)).scaleb(-6)

    async def outstanding(self, code: str) -> int:
        return int(
            await self.scalar(
                "SELECT coalesce(sum(b.amount), 0) FROM balances b"
                "  JOIN accounts a ON a.id = b.account_id JOIN currencies c ON c.id = a.asset_id"
                " WHERE a.kind = 'outstanding' AND c.code = %s",
                (code,),
            )
        )

    async def check_invariants(self) -> None:
        """Zero-sum per asset, outstanding = −Σ wallets, settlement sums to zero."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.code, c.kind, sum(b.amount) FROM balances b"
                "  JOIN accounts a ON a.id = b.account_id JOIN currencies c ON c.id = a.asset_id"
                " GROUP BY c.code, c.kind"
            )
            for code, _kind, total in await cur.fetchall():
                assert int(total) == 0, f"{code} does not sum to zero: {total}"
            cur = await conn.execute(
                "SELECT p.entry_id, p.asset_id, sum(p.amount) FROM postings p"
                " GROUP BY 1, 2 HAVING sum(p.amount) <> 0"
            )
            assert await cur.fetchall() == []


def member_db_id(global_id: str) -> int:
    import base64

    raw = base64.b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    type_name, _, number = raw.partition(":")
    assert type_name == "Member", raw
    return int(number)


async def make_hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    """A bootstrapped hub (settlement currency and hub accounts) reached through ``client``."""
    await transaction(
        pool,
        lambda conn: catalog.bootstrap(
            conn, settings.settlement_currency, settings.balance_stripes
        ),
    )
    return Hub(
        client=client,
        pool=pool,
        settings=settings,
        secrets=load_or_create_secrets(settings.data_dir),
    )


def error_codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["userErrors"]]


def top_codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
