"""The finance commands: seal, close-batch, statement, trial-balance, and verify's checks."""

from __future__ import annotations

import asyncio
import csv
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.cli import main
from tests.finance.support import Finance, worked_example_batch1
from tests.ledger.support import build_hub


async def _example(url: str) -> None:
    fin = Finance(await build_hub(url))
    try:
        await worked_example_batch1(fin)
    finally:
        await fin.pool.close()


def test_the_commands_close_print_and_verify(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(_example(database_url))
    monkeypatch.setenv("EXCHANGE_DATABASE_URL", database_url)
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(tmp_path / "data"))

    assert main(["seal"]) == 0
    assert "sealed 6 entries in 1 block(s)" in capsys.readouterr().out
    assert main(["close-batch", "--key", "cli-close-1"]) == 0
    out = capsys.readouterr().out
    assert "closed batch 1: 5 entries" in out
    assert "efficiency 0.642941" in out
    assert main(["close-batch", "--key", "cli-close-1"]) == 0
    assert "replayed batch 1" in capsys.readouterr().out

    assert main(["statement", "--batch", "1", "--merchant", "shop-b"]) == 0
    printed = capsys.readouterr().out
    assert "closing" in printed
    assert "-4.502750" in printed
    target = tmp_path / "b.csv"
    assert main(["statement", "--batch", "1", "--merchant", "shop-b", "--csv", str(target)]) == 0
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    closing = next(r for r in rows if r["record"] == "closing")
    assert Decimal(closing["value"]) == Decimal("-4.502750")
    assert sum(1 for r in rows if r["record"] == "line") == 4

    assert main(["statement", "--batch", "9", "--merchant", "shop-b"]) == 1
    assert "no statement" in capsys.readouterr().err

    assert main(["trial-balance"]) == 0
    assert "CNY (settlement): balanced" in capsys.readouterr().out
    assert main(["verify", "--quiet"]) == 0
    assert "OK: every invariant holds" in capsys.readouterr().out
