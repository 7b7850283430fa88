"""The merchant's checkpoint verification, run exactly as docs/finance.md prints it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature

from exchange.finance.statements import csv_records, csv_text, load_statement
from tests.finance.support import Finance, worked_example_batch1

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "finance.md"


def merchant_snippet() -> dict[str, Any]:
    """The documented snippet, executed: its functions by name."""
    text = DOC.read_text()
    found = re.search(r"<!-- merchant-verification -->\n```python\n(.*?)```", text, re.S)
    assert found is not None, "the verification snippet is missing from docs/finance.md"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), str(DOC), "exec"), namespace)  # noqa: S102
    return namespace


async def _statement_csv(fin: Finance, batch: int, shop: str) -> str:
    async with fin.pool.connection() as conn, conn.transaction():
        statement = await load_statement(conn, batch, fin.hub.merchant_ids[shop])
        assert statement is not None
        return "".join([csv_text(r) async for r in csv_records(conn, statement)])


async def test_a_merchant_verifies_its_statement_with_the_documented_code(fin: Finance) -> None:
    verify_statement = merchant_snippet()["verify_statement"]
    hub_keys = fin.secrets.jwks()["keys"]
    await worked_example_batch1(fin)
    await fin.close()
    await fin.redeem("a", "CPT", 100)
    await fin.close()

    first = verify_statement(await _statement_csv(fin, 1, "b"), hub_keys)
    assert (first["batch"], first["merchant"], first["lines"]) == (1, "shop-b", 4)
    assert (first["opening"], first["closing"]) == ("0.000000", "-4.502750")
    second = verify_statement(await _statement_csv(fin, 2, "b"), hub_keys)
    assert second["opening"] == first["closing"]
    assert second["chainBlock"] >= first["chainBlock"]
    c1 = verify_statement(await _statement_csv(fin, 1, "c"), hub_keys)
    assert c1["chainHead"] == first["chainHead"]


async def test_the_documented_code_rejects_altered_statements(fin: Finance) -> None:
    verify_statement = merchant_snippet()["verify_statement"]
    hub_keys = fin.secrets.jwks()["keys"]
    await worked_example_batch1(fin)
    await fin.close()
    text = await _statement_csv(fin, 1, "b")
    assert verify_statement(text, hub_keys)["lines"] == 4

    # A line's counterparty changed: the figures still add up, the digest does not.
    moved = text.replace(",earn,shop-c,CPT,", ",earn,shop-a,CPT,")
    assert moved != text
    with pytest.raises(InvalidSignature):
        verify_statement(moved, hub_keys)
    # A line's value and the closing changed together: the signature no longer matches.
    inflated = text.replace(",0.617250\r\n", ",1.617250\r\n").replace(
        ",-4.502750\r\n", ",-3.502750\r\n", 1
    )
    assert inflated != text
    with pytest.raises(InvalidSignature):
        verify_statement(inflated, hub_keys)
    # A line removed: the figures no longer add up.
    dropped = "".join(
        line for line in text.splitlines(keepends=True) if ",redeem,shop-a," not in line
    )
    with pytest.raises(ValueError, match="opening"):
        verify_statement(dropped, hub_keys)
    # Signed by another key: refused.
    other = [{**hub_keys[0], "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
    with pytest.raises(InvalidSignature):
        verify_statement(text, other)
