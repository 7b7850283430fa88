"""The merchant guide stays true: its GraphQL documents run, in order, without errors.

Each ```graphql block of ``docs/merchants.md`` is sent with the variables of the ```json
block that directly follows it (if any). A block whose first line mentions "member's
token" is sent with the member token that ``startMemberSession`` returned; the others with
the reader's API key. Placeholders in capitals are filled from earlier answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from exchange.config import Settings
from exchange.services.tx import Pool
from tests.api.mutation_kit import Hub, make_hub

pytestmark = pytest.mark.anyio

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "merchants.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)

# placeholder: (root field of the answer, path inside it)
CAPTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ENTRY_ID": ("earnForPurchase", ("entry", "id")),
    "RULE_ID": ("createEarningRule", ("rule", "id")),
    "MEMBER_TOKEN": ("startMemberSession", ("token",)),
}

# What the guide's prose promises about some answers: operation name -> (path, value).
PROMISES: dict[str, tuple[tuple[str, ...], Any]] = {
    "PayWithPoints": (("redeemPoints", "cashDue"), "29.500000"),
    "WelcomeAgain": (("awardPoints", "replayed"), True),
    "Link": (("linkCustomer", "created"), True),
    "LinkExistingMember": (("linkCustomer", "created"), True),
}
OPERATION = re.compile(r"^\s*(?:query|mutation)\s+(\w+)", re.MULTILINE)


def examples(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The guide's GraphQL documents with their variables, in order."""
    blocks = list(FENCE.finditer(text))
    out: list[tuple[str, dict[str, Any]]] = []
    for i, block in enumerate(blocks):
        if block.group(1) != "graphql":
            continue
        variables: dict[str, Any] = {}
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if (
            following is not None
            and following.group(1) == "json"
            and not text[block.end() : following.start()].strip()
        ):
            variables = json.loads(following.group(2))
        out.append((block.group(2), variables))
    return out


def fill(value: Any, known: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: fill(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, known) for v in value]
    if isinstance(value, str) and value in known:
        return known[value]
    return value


def dig(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


def test_the_guide_has_examples() -> None:
    found = examples(GUIDE.read_text())
    assert len(found) >= 15
    assert sum(1 for _doc, variables in found if variables) >= 12


async def test_every_example_of_the_guide_runs(hub: Hub) -> None:
    reader = await hub.onboard("tea-house")
    # A member known to another merchant, who brings a link code (section 5).
    other = await hub.onboard("book-shop")
    await hub.link(other, "B-42")
    member_at_other = await hub.member_headers(other, "B-42")
    made = await hub.data("mutation { createLinkCode { linkCode } }", headers=member_at_other)
    known: dict[str, str] = {"LINK_CODE": made["createLinkCode"]["linkCode"]}
    promises = dict(PROMISES)

    for document, variables in examples(GUIDE.read_text()):
        first_line = document.strip().splitlines()[0]
        if "member's token" in first_line:
            headers = {"Authorization": f"Bearer {known['MEMBER_TOKEN']}"}
        else:
            headers = reader.headers
        body = await hub.gql(document, fill(variables, known), headers)
        assert "errors" not in body, (document, body)
        operation = OPERATION.search(document)
        if operation is not None and operation.group(1) in promises:
            path, value = promises.pop(operation.group(1))
            assert dig(body["data"], path) == value, (document, body)
        for field, answer in body["data"].items():
            if isinstance(answer, dict) and "userErrors" in answer:
                assert answer["userErrors"] == [], (document, answer)
            for name, (root, path) in CAPTURES.items():
                if field == root and isinstance(answer, dict):
                    known[name] = dig(answer, path)
    assert {"ENTRY_ID", "RULE_ID", "MEMBER_TOKEN"} <= set(known)
    assert promises == {}, "the guide no longer has these examples"
    # The retried award of section 11 was a replay.
    replays = await hub.scalar(
        "SELECT count(*) FROM entries WHERE idempotency_key = 'c1001-welcome'"
    )
    assert replays == 1
