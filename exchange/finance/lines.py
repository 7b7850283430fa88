"""The figures of a settlement batch, computed from its entries' settlement legs.

Pure code: the closing of a batch, the statements and ``exchange verify`` all feed the same
rows through :class:`BatchFigures`, so the stored figures and the recomputed ones can only
agree when the ledger still says what it said at the close.

An entry's settlement legs become, for every merchant in it, one *statement line* per
counterparty, split exactly as :func:`exchange.domain.netting.allocate` splits the entry
into obligations; a merchant's lines sum to its net in the entry. Settle entries are
payments of earlier instructions: they appear on statements (counterparty
``hub:clearing``) but are not netted again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exchange.domain.money import micro_to_decimal, points_to_decimal
from exchange.domain.netting import (
    HUB_ACCOUNTS,
    EntryLegs,
    Instructions,
    InvalidEntries,
    allocate,
    bilateral_obligations,
    entry_positions,
    net_positions,
    payment_instructions,
    validate_entries,
)

SETTLE = "settle"
LINE_FIELDS = (
    "entry",
    "time",
    "kind",
    "counterparty",
    "currency",
    "points",
    "rate",
    "value",
)
"""The fields of a statement line, in the order they are digested and exported."""


@dataclass(frozen=True)
class EntryRow:
    """One ledger entry with its settlement-currency legs."""

    id: int
    kind: str
    recorded_at: datetime
    details: Mapping[str, Any]
    rates: Mapping[str, Any]
    legs: tuple[tuple[str, int], ...]

    @property
    def netted(self) -> bool:
        """Whether the entry is an obligation (everything but a payment)."""
        return self.kind != SETTLE

    def as_legs(self) -> EntryLegs:
        return EntryLegs(self.id, self.legs)


class Grouper:
    """Merges rows ``(id, kind, recorded_at, details, rates, party, amount)`` into entries.

    Rows must arrive ordered by entry id. :meth:`feed` returns an entry once its last row
    has been passed (that is, when the next entry's first row arrives); :meth:`flush`
    returns the last one.
    """

    def __init__(self) -> None:
        self._head: tuple[int, str, datetime, Mapping[str, Any], Mapping[str, Any]] | None = None
        self._legs: list[tuple[str, int]] = []

    def feed(self, row: Sequence[Any]) -> EntryRow | None:
        entry_id, kind, recorded_at, details, rates, party, amount = row
        done = None
        if self._head is not None and self._head[0] != entry_id:
            done = self.flush()
        if self._head is None:
            self._head = (int(entry_id), str(kind), recorded_at, details or {}, rates or {})
        self._legs.append((str(party), int(amount)))
        return done

    def flush(self) -> EntryRow | None:
        if self._head is None:
            return None
        entry = EntryRow(*self._head, legs=tuple(self._legs))
        self._head = None
        self._legs = []
        return entry


def group_entries(rows: Iterable[Sequence[Any]]) -> Iterator[EntryRow]:
    """Entries from rows ordered by entry id (see :class:`Grouper`)."""
    grouper = Grouper()
    for row in rows:
        entry = grouper.feed(row)
        if entry is not None:
            yield entry
    last = grouper.flush()
    if last is not None:
        yield last


def timestamp(moment: datetime) -> str:
    """A time as it appears on statements: ISO 8601 in UTC with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Line:
    """One line of a merchant's statement."""

    entry_id: int
    time: datetime
    kind: str
    counterparty: str
    currency: str
    points: str
    rate: str
    value_micro: int
    """Signed from the merchant's side: positive when the counterparty owes the merchant."""

    def fields(self) -> list[str]:
        """The line as text, in :data:`LINE_FIELDS` order (what the CSV holds)."""
        return [
            str(self.entry_id),
            timestamp(self.time),
            self.kind,
            self.counterparty,
            self.currency,
            self.points,
            self.rate,
            micro_to_decimal(self.value_micro),
        ]


def line_bytes(fields: Sequence[str]) -> bytes:
    """The canonical bytes of one line: a compact JSON array of its text fields, newline."""
    return json.dumps(list(fields), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _points_side(entry: EntryRow, paying: bool) -> tuple[str, int | None]:
    """The currency and points of the entry on the merchant's side."""
    details = entry.details
    if entry.kind == "convert":
        key_currency, key_points = ("from", "points") if paying else ("to", "received")
        currency, points = details.get(key_currency), details.get(key_points)
    else:
        currency, points = details.get("currency"), details.get("points")
    if not isinstance(currency, str) or isinstance(points, bool) or not isinstance(points, int):
        return "", None
    return currency, points


def merchant_lines(entry: EntryRow, merchant: str, scales: Mapping[str, int]) -> list[Line]:
    """The statement lines of ``merchant`` for one entry (none when its net there is 0)."""
    nets = entry_positions(entry.as_legs())
    net = nets.get(merchant, 0)
    if net == 0:
        return []
    currency, points = _points_side(entry, paying=net < 0)
    points_text = ""
    if points is not None and currency in scales:
        points_text = points_to_decimal(points, scales[currency])
    rate = entry.rates.get(currency, "") if currency else ""
    lines: list[Line] = []
    for debtor, creditor, amount in allocate(nets):
        if merchant not in (debtor, creditor):
            continue
        counterparty, value = (creditor, -amount) if debtor == merchant else (debtor, amount)
        lines.append(
            Line(
                entry.id,
                entry.recorded_at,
                entry.kind,
                counterparty,
                currency,
                points_text,
                str(rate),
                value,
            )
        )
    return sorted(lines, key=lambda line: line.counterparty)


@dataclass
class StatementSums:
    """What a merchant's lines in one batch add up to."""

    line_count: int = 0
    netted_micro: int = 0
    """The sum of the lines of netted entries: the merchant's net position in the batch."""
    payments_micro: int = 0
    """The sum of the lines of settle entries (payments of earlier instructions)."""
    hasher: Any = field(default_factory=hashlib.sha256)

    def add(self, line: Line, netted: bool) -> None:
        self.line_count += 1
        if netted:
            self.netted_micro += line.value_micro
        else:
            self.payments_micro += line.value_micro
        self.hasher.update(line_bytes(line.fields()))

    @property
    def digest(self) -> bytes:
        return bytes(self.hasher.digest())


@dataclass
class BatchFigures:
    """Obligations, positions and statement sums of one batch, built entry by entry."""

    scales: Mapping[str, int]
    entries: int = 0
    obligations: dict[tuple[str, str], int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    statements: dict[str, StatementSums] = field(default_factory=dict)

    def add(self, entry: EntryRow) -> None:
        """Add one entry; :class:`InvalidEntries` if its legs do not balance."""
        legs = entry.as_legs()
        problems = validate_entries([legs])
        if problems:
            raise InvalidEntries(problems)
        self.entries += 1
        if entry.netted:
            for pair, amount in bilateral_obligations([legs]).items():
                self.obligations[pair] = self.obligations.get(pair, 0) + amount
            for party, amount in net_positions([legs]).items():
                self.positions[party] = self.positions.get(party, 0) + amount
        for party in sorted({party for party, _ in entry.legs} - HUB_ACCOUNTS):
            sums = self.statements.setdefault(party, StatementSums())
            for line in merchant_lines(entry, party, self.scales):
                sums.add(line, entry.netted)

    def sorted_obligations(self) -> dict[tuple[str, str], int]:
        return dict(sorted(self.obligations.items()))

    def sorted_positions(self) -> dict[str, int]:
        return dict(sorted(self.positions.items()))

    def instructions(self, minor_unit: int, carried: Mapping[str, int]) -> Instructions:
        return payment_instructions(self.sorted_positions(), minor_unit, carried)

    def statement(self, merchant: str) -> StatementSums:
        return self.statements.get(merchant) or StatementSums()
