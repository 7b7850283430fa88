"""Finance through the API: the GraphQL root types (on a schema built here from them) and
the streamed CSV statement route, with real credentials."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import strawberry
from starlette.applications import Starlette
from strawberry.tools import merge_types

from exchange.api.context import Context
from exchange.api.errors import error_code
from exchange.api.finance import FinanceMutation, FinanceQuery
from exchange.api.finance_http import routes
from exchange.api.loaders import Loaders
from exchange.api.queries import Query as CoreQuery
from exchange.api.schema import config
from exchange.config import Settings
from exchange.keys import load_or_create_secrets
from exchange.services.actors import ADMIN, FINANCE, MEMBER, Actor
from exchange.services.credentials import create_api_key, mint_operator_token
from tests.finance.support import Finance, worked_example_batch1

pytestmark = pytest.mark.anyio

SCHEMA = strawberry.Schema(
    query=merge_types("Query", (CoreQuery, FinanceQuery)),
    mutation=FinanceMutation,
    config=config(production=False),
)


class Api:
    def __init__(self, fin: Finance, settings: Settings) -> None:
        self.fin = fin
        self.settings = settings

    async def run(self, actor: Actor, query: str, **variables: Any) -> dict[str, Any]:
        context = Context(
            request=None,
            response=None,
            actor=actor,
            pool=self.fin.pool,
            settings=self.settings,
            secrets=self.fin.secrets,
            loaders=Loaders(self.fin.pool),
        )
        result = await SCHEMA.execute(query, variable_values=variables, context_value=context)
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [
                {"message": e.message, "code": (e.extensions or {}).get("code")}
                for e in result.errors
            ]
        return out

    async def data(self, actor: Actor, query: str, **variables: Any) -> dict[str, Any]:
        result = await self.run(actor, query, **variables)
        assert "errors" not in result, result
        data: dict[str, Any] = result["data"]
        return data


FINANCE_ACTOR = Actor(FINANCE, subject="desk")

CLOSE = """mutation($key: String!) {
  closeSettlementBatch(input: {idempotencyKey: $key}) {
    batch { id entryCount settled efficiency } replayed userErrors { code field message }
  }
}"""

BATCH = """query($id: Int!) {
  settlementBatch(id: $id) {
    id entryCount settled gross net efficiency hubFees hubRounding chainBlock chainHead
    obligations { debtor creditor amount }
    positions { party position carriedIn carriedOut }
    instructions { merchant direction amount confirmed payment { externalReference } }
    checkpoints { merchant payload signature keyId }
  }
}"""

STATEMENT = """query($batch: Int!, $merchant: String, $first: Int, $after: String) {
  statement(batchId: $batch, merchantCode: $merchant) {
    merchant opening closing position payments carriedIn instruction carriedOut lineCount digest
    checkpoint { payload }
    lines(first: $first, after: $after) {
      edges { cursor node { entryId kind counterparty currency points rate value } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""

CONFIRM = """mutation($batch: Int!, $merchant: String!, $amount: Decimal!, $ref: String!,
                   $key: String!) {
  confirmPayment(input: {batchId: $batch, merchantCode: $merchant, amount: $amount,
                         externalReference: $ref, idempotencyKey: $key}) {
    payment { merchant direction amount externalReference entry { kind } }
    batch { settled } replayed userErrors { code field message }
  }
}"""


@pytest.fixture
def api(fin: Finance, settings: Settings) -> Api:
    return Api(fin, settings)


async def test_finance_closes_and_reads_every_figure(api: Api) -> None:
    fin = api.fin
    await worked_example_batch1(fin)
    closed = (await api.data(FINANCE_ACTOR, CLOSE, key="close-1"))["closeSettlementBatch"]
    assert closed["batch"] == {
        "id": 1,
        "entryCount": 5,
        "settled": False,
        "efficiency": "0.642941",
    }
    assert closed["replayed"] is False
    again = (await api.data(FINANCE_ACTOR, CLOSE, key="close-1"))["closeSettlementBatch"]
    assert (again["batch"]["id"], again["replayed"]) == (1, True)

    batch = (await api.data(FINANCE_ACTOR, BATCH, id=1))["settlementBatch"]
    assert (batch["gross"], batch["net"], batch["hubFees"]) == (
        "40.617250",
        "14.502750",
        "0.120000",
    )
    assert {p["party"]: p["position"] for p in batch["positions"]} == {
        "hub:fees": "0.120000",
        "shop-a": "-10.000000",
        "shop-b": "-4.502750",
        "shop-c": "14.382750",
    }
    assert [(i["merchant"], i["direction"], i["amount"]) for i in batch["instructions"]] == [
        ("shop-a", "TO_HUB", "10.000000"),
        ("shop-b", "TO_HUB", "4.500000"),
        ("shop-c", "FROM_HUB", "14.380000"),
    ]
    assert [c["merchant"] for c in batch["checkpoints"]] == ["shop-a", "shop-b", "shop-c"]
    assert len(batch["chainHead"]) == 64

    merchant = fin.hub.merchants["b"]
    seen = (await api.data(merchant, BATCH, id=1))["settlementBatch"]
    assert (seen["gross"], seen["net"], seen["efficiency"]) == (None, None, None)
    assert [p["party"] for p in seen["positions"]] == ["shop-b"]
    assert all("shop-b" in (o["debtor"], o["creditor"]) for o in seen["obligations"])
    assert len(seen["obligations"]) == 3
    assert [i["merchant"] for i in seen["instructions"]] == ["shop-b"]
    assert [c["merchant"] for c in seen["checkpoints"]] == ["shop-b"]
    assert (await api.data(merchant, BATCH, id=7))["settlementBatch"] is None

    forbidden = await api.run(merchant, CLOSE, key="m-close")
    assert forbidden["errors"][0]["code"] == "FORBIDDEN"
    member = Actor(MEMBER, member_id=fin.hub.member_ids[0], merchant_id=fin.hub.merchant_ids["a"])
    assert (await api.run(member, BATCH, id=1))["errors"][0]["code"] == "FORBIDDEN"


async def test_statements_page_through_their_lines_and_stay_private(api: Api) -> None:
    fin = api.fin
    await worked_example_batch1(fin)
    await fin.close()
    merchant = fin.hub.merchants["b"]
    first = (await api.data(merchant, STATEMENT, batch=1, first=3))["statement"]
    assert (first["merchant"], first["opening"], first["closing"]) == (
        "shop-b",
        "0.000000",
        "-4.502750",
    )
    assert (first["instruction"], first["carriedOut"], first["lineCount"]) == (
        "-4.500000",
        "-0.002750",
        4,
    )
    page = first["lines"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (
        await api.data(merchant, STATEMENT, batch=1, first=3, after=page["pageInfo"]["endCursor"])
    )["statement"]["lines"]
    assert rest["pageInfo"]["hasNextPage"] is False
    lines = [e["node"] for e in page["edges"] + rest["edges"]]
    assert [(n["kind"], n["counterparty"], n["value"]) for n in lines] == [
        ("REDEEM", "shop-a", "3.000000"),
        ("EARN", "shop-c", "-20.000000"),
        ("CONVERT", "shop-a", "11.880000"),
        ("EARN", "shop-c", "0.617250"),
    ]
    total = Decimal(first["opening"]) + sum(Decimal(n["value"]) for n in lines)
    assert total == Decimal(first["closing"])

    assert (await api.data(merchant, STATEMENT, batch=1, merchant="shop-a"))["statement"] is None
    other = await api.data(FINANCE_ACTOR, STATEMENT, batch=1, merchant="shop-a")
    assert other["statement"]["closing"] == "-10.000000"
    unnamed = await api.run(FINANCE_ACTOR, STATEMENT, batch=1)
    assert unnamed["errors"][0]["code"] == "INVALID_ARGUMENT"


async def test_confirm_payment_through_the_api(api: Api) -> None:
    fin = api.fin
    await worked_example_batch1(fin)
    await fin.close()
    args = {"batch": 1, "merchant": "shop-b", "ref": "WIRE-B1", "key": "p1"}
    wrong = (await api.data(FINANCE_ACTOR, CONFIRM, amount="4.51", **args))["confirmPayment"]
    assert wrong["payment"] is None
    assert [(e["code"], e["field"]) for e in wrong["userErrors"]] == [
        (error_code("AMOUNT_MISMATCH").name, "amount")
    ]
    paid = (await api.data(FINANCE_ACTOR, CONFIRM, amount="4.50", **args))["confirmPayment"]
    assert paid["userErrors"] == []
    assert paid["payment"] == {
        "merchant": "shop-b",
        "direction": "TO_HUB",
        "amount": "4.500000",
        "externalReference": "WIRE-B1",
        "entry": {"kind": "SETTLE"},
    }
    assert paid["replayed"] is False
    again = (await api.data(FINANCE_ACTOR, CONFIRM, amount="4.50", **args))["confirmPayment"]
    assert again["replayed"] is True
    other = {**args, "ref": "WIRE-B2", "key": "p2"}
    refused = (await api.data(FINANCE_ACTOR, CONFIRM, amount="4.50", **other))["confirmPayment"]
    assert [e["field"] for e in refused["userErrors"]] == ["externalReference"]
    merchant = await api.run(fin.hub.merchants["b"], CONFIRM, amount="4.50", **args)
    assert merchant["errors"][0]["code"] == "FORBIDDEN"
    admin = await api.run(Actor(ADMIN, subject="root"), CONFIRM, amount="4.50", **args)
    assert admin["errors"][0]["code"] == "FORBIDDEN"


async def test_measures_trial_balance_and_advice(api: Api) -> None:
    fin = api.fin
    await worked_example_batch1(fin)
    query = """query($c: String, $m: String) {
      programmeMetrics(from: "2000-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z",
                       currency: $c, merchant: $m) {
        currency merchant issued redeemed redeemedAtIssuer redeemedElsewhere convertedOut
        outstanding liability redemptionRate activeUseRate breakageRate
      }
    }"""
    whole = (await api.data(FINANCE_ACTOR, query, c="APT"))["programmeMetrics"]
    assert whole == [
        {
            "currency": "APT",
            "merchant": None,
            "issued": "1500",
            "redeemed": "300",
            "redeemedAtIssuer": "0",
            "redeemedElsewhere": "300",
            "convertedOut": "1200",
            "outstanding": "0",
            "liability": "0.000000",
            "redemptionRate": "0.200000",
            "activeUseRate": "1.000000",
            "breakageRate": "0.000000",
        }
    ]
    own = (await api.data(fin.hub.merchants["c"], query, c="APT"))["programmeMetrics"]
    assert [(m["merchant"], m["issued"], m["outstanding"]) for m in own] == [
        ("shop-c", "500", None)
    ]
    foreign = await api.data(fin.hub.merchants["c"], query, c="APT", m="shop-a")
    assert foreign["programmeMetrics"] == []
    every = (await api.data(FINANCE_ACTOR, query))["programmeMetrics"]
    assert [m["currency"] for m in every] == ["APT", "BPT", "CPT"]

    trial = "{ trialBalance { balanced assets { asset kind total balanced } } }"
    assert (await api.data(FINANCE_ACTOR, trial))["trialBalance"]["balanced"] is True
    denied = await api.run(fin.hub.merchants["a"], trial)
    assert denied["errors"][0]["code"] == "FORBIDDEN"

    advice = '{ rateAdvisor(budget: "50000", expectedPoints: 5000000) { suggestedRate } }'
    assert (await api.data(FINANCE_ACTOR, advice))["rateAdvisor"] == {"suggestedRate": "0.01"}
    bad = '{ rateAdvisor(budget: "50000", expectedPoints: 0) { suggestedRate } }'
    assert (await api.run(FINANCE_ACTOR, bad))["errors"][0]["code"] == "INVALID_ARGUMENT"
    keys = (await api.data(FINANCE_ACTOR, "{ hubSigningKeys { kid crv x } }"))["hubSigningKeys"]
    assert keys[0]["kid"] == fin.secrets.signing_key.kid


# -- the CSV route ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def csv_client(fin: Finance, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette()
    app.state.settings = settings
    app.state.pool = fin.pool
    app.router.routes.extend(routes(app.state))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        yield client


async def test_the_csv_statement_streams_to_its_owner_and_to_finance(
    fin: Finance, settings: Settings
) -> None:
    await worked_example_batch1(fin)
    secrets = load_or_create_secrets(settings.data_dir)
    fin.secrets = secrets
    await fin.close()
    _, key = await create_api_key(
        fin.pool,
        Actor(ADMIN, subject="t"),
        pepper=secrets.api_key_pepper,
        role="merchant",
        merchant_id=fin.hub.merchant_ids["b"],
    )
    token = mint_operator_token(secrets, FINANCE, "desk", settings=settings).token
    merchant = {"Authorization": f"Bearer {key}"}
    finance = {"Authorization": f"Bearer {token}"}
    report = await fin.report(1)
    summary = next(s for s in report.statements if s.merchant == "shop-b")

    async with csv_client(fin, settings) as client:
        own = await client.get("/finance/statements/1.csv", headers=merchant)
        assert own.status_code == 200, own.text
        assert own.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(own.text)))
        by_record = {r["record"]: r for r in rows if r["record"] != "line"}
        lines = [r for r in rows if r["record"] == "line"]
        assert len(lines) == summary.line_count
        assert Decimal(by_record["opening"]["value"]) + sum(
            Decimal(r["value"]) for r in lines
        ) == Decimal(by_record["closing"]["value"])
        assert Decimal(by_record["closing"]["value"]) == Decimal(summary.closing_micro) / 10**6
        assert by_record["checkpoint"]["value"] == summary.signature

        named = await client.get("/finance/statements/1.csv?merchant=shop-b", headers=finance)
        assert named.status_code == 200
        assert named.text == own.text
        assert (await client.get("/finance/statements/1.csv", headers=finance)).status_code == 400
        foreign = await client.get("/finance/statements/1.csv?merchant=shop-a", headers=merchant)
        assert foreign.status_code == 404
        assert (await client.get("/finance/statements/9.csv", headers=merchant)).status_code == 404
        assert (await client.get("/finance/statements/1.csv")).status_code == 401
        bad = {"Authorization": "Bearer nonsense"}
        assert (await client.get("/finance/statements/1.csv", headers=bad)).status_code == 401


async def test_wired_into_the_hub_schema_over_http(
    fin: Finance,
    settings: Settings,
    database_url: str,
    make_client: Any,
) -> None:
    """Finance queries and mutations answer through the real app with real tokens."""
    await worked_example_batch1(fin)
    secrets = load_or_create_secrets(settings.data_dir)
    token = mint_operator_token(secrets, FINANCE, "desk", settings=settings).token
    headers = {"Authorization": f"Bearer {token}"}
    async with make_client(settings, database_url) as client:
        closed = await client.post(
            "/graphql", json={"query": CLOSE, "variables": {"key": "http-1"}}, headers=headers
        )
        assert closed.status_code == 200, closed.text
        body = closed.json()
        assert body["data"]["closeSettlementBatch"]["batch"]["efficiency"] == "0.642941"
        read = await client.post(
            "/graphql", json={"query": BATCH, "variables": {"id": 1}}, headers=headers
        )
        batch = read.json()["data"]["settlementBatch"]
        assert [c["merchant"] for c in batch["checkpoints"]] == ["shop-a", "shop-b", "shop-c"]
        anonymous = await client.post("/graphql", json={"query": BATCH, "variables": {"id": 1}})
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
