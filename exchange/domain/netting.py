"""Multilateral netting of a settlement batch.

A batch is a list of :class:`EntryLegs`: for each ledger entry, its settlement-currency
legs ``(party, amount)`` in micro-units (six decimal places), signed as posted to
``settlement(party)`` -- positive means the hub owes the party more, negative that the party
owes the hub more. A party is a merchant code or one of the hub's own accounts
(:data:`HUB_FEES`, :data:`HUB_CLEARING`). The legs of one entry sum to zero.

From these the batch reports:

* :func:`bilateral_obligations` -- who owes whom, gross, as the entries created it;
* :func:`net_bilateral` -- the same netted pairwise;
* :func:`net_positions` -- each party's multilateral net (the sum of its legs);
* :func:`payment_instructions` -- one payment per merchant to or from the hub, rounded
  toward zero to the settlement currency's minor unit, the remainder carried forward;
* :func:`netting_efficiency` -- how much of the gross the netting removed.

Every output is ordered by party (then counterparty), so equal inputs give equal outputs.
The rules are written out in ``docs/domain-rules.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

HUB_FEES = "hub:fees"
"""The hub's revenue account (conversion spreads)."""
HUB_CLEARING = "hub:clearing"
"""The outside world: money actually paid in or out at settlement."""
HUB_ACCOUNTS = frozenset({HUB_FEES, HUB_CLEARING})
"""The hub's own accounts: they never receive a payment instruction."""

MICRO_DIGITS = 6
"""Settlement amounts are integers of 10**-6 of the settlement currency."""

Party = str
Pair = tuple[str, str]
"""``(debtor, creditor)``."""


@dataclass(frozen=True)
class EntryLegs:
    """The settlement-currency legs of one ledger entry."""

    entry_id: int
    """The ledger entry's id."""
    legs: tuple[tuple[str, int], ...]
    """``(party, signed micro-units)``; a party may appear more than once; they sum to zero."""


@dataclass(frozen=True)
class NettingError:
    """One problem with a batch's entries; :func:`validate_entries` reports all of them."""

    code: str
    """Short upper-case code: ``UNBALANCED``, ``BAD_AMOUNT``, ``BAD_PARTY``, ``DUPLICATE_ENTRY``."""
    entry_id: int
    """The offending entry."""
    message: str
    """Explanation for a person."""

    def __str__(self) -> str:
        return f"{self.code} (entry {self.entry_id}): {self.message}"


class InvalidEntries(ValueError):
    """Raised when netting entries that :func:`validate_entries` rejects."""

    def __init__(self, errors: list[NettingError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors: tuple[NettingError, ...] = tuple(errors)


class Direction(StrEnum):
    """Which way a payment instruction's money flows."""

    TO_HUB = "to_hub"
    """The party pays the hub (its position is negative: it owes)."""
    FROM_HUB = "from_hub"
    """The hub pays the party (its position is positive: it is owed)."""


@dataclass(frozen=True)
class PaymentInstruction:
    """One payment between a merchant and the hub."""

    party: str
    """The merchant."""
    direction: Direction
    """Who pays whom."""
    amount_micro: int
    """The amount paid, in micro-units; positive and a multiple of one minor unit."""
    amount: Decimal
    """The same amount in the settlement currency, with exactly the minor unit's places."""

    @property
    def signed_micro(self) -> int:
        """The amount with the sign of the position it settles: negative when paying the hub."""
        return self.amount_micro if self.direction is Direction.FROM_HUB else -self.amount_micro


@dataclass(frozen=True)
class Instructions:
    """The payment instructions of a batch and what rounding left over.

    For every merchant ``p``: ``signed(p) + carry[p] == position[p] + carried[p]``; and
    ``sum(signed) + hub_fees + hub_clearing + hub_rounding == 0``.
    """

    minor_unit_digits: int
    """Decimal places of the settlement currency's minor unit (2 for CNY)."""
    instructions: tuple[PaymentInstruction, ...]
    """At most one per merchant, ordered by party; none for a merchant whose total rounds to 0."""
    carry: dict[str, int]
    """Remainder per merchant (micro-units, ``|carry| <`` one minor unit), to pass as
    ``carried`` to the next batch; ordered by party, zero remainders left out."""
    hub_fees: int
    """The batch's position of ``hub:fees``: the hub's revenue, in micro-units."""
    hub_clearing: int
    """The batch's position of ``hub:clearing`` (0 unless settle entries were included)."""
    hub_rounding: int
    """``sum(carry) - sum(carried)``: cash the hub holds (positive) or lacks (negative)
    because of rounding; equal to ``-sum(signed instructions)`` when the positions hold no
    hub account."""

    @property
    def hub_net(self) -> int:
        """Cash the hub keeps after executing the instructions: ``-sum(signed instructions)``."""
        return -sum(i.signed_micro for i in self.instructions)

    @property
    def total_to_hub(self) -> int:
        """Micro-units paid to the hub."""
        return sum(i.amount_micro for i in self.instructions if i.direction is Direction.TO_HUB)

    @property
    def total_from_hub(self) -> int:
        """Micro-units paid by the hub."""
        return sum(i.amount_micro for i in self.instructions if i.direction is Direction.FROM_HUB)


# --- validation -----------------------------------------------------------------------------


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(entry: EntryLegs) -> list[NettingError]:
    errors = []
    for party, amount in entry.legs:
        if not isinstance(party, str) or not party:
            errors.append(NettingError("BAD_PARTY", entry.entry_id, f"bad party {party!r}"))
        if not _is_amount(amount):
            errors.append(
                NettingError("BAD_AMOUNT", entry.entry_id, f"amount {amount!r} is not an int")
            )
    if not errors:
        total = sum(amount for _, amount in entry.legs)
        if total != 0:
            errors.append(NettingError("UNBALANCED", entry.entry_id, f"legs sum to {total}, not 0"))
    return errors


def validate_entries(entries: Iterable[EntryLegs]) -> list[NettingError]:
    """Every problem of a batch's entries, in entry order; empty when they can be netted."""
    errors: list[NettingError] = []
    seen: set[int] = set()
    for entry in entries:
        if entry.entry_id in seen:
            errors.append(
                NettingError("DUPLICATE_ENTRY", entry.entry_id, "entry appears twice in the batch")
            )
        seen.add(entry.entry_id)
        errors.extend(_check_entry(entry))
    return errors


def _valid(entries: Iterable[EntryLegs]) -> list[EntryLegs]:
    batch = list(entries)
    errors = validate_entries(batch)
    if errors:
        raise InvalidEntries(errors)
    return batch


# --- obligations and positions --------------------------------------------------------------


def entry_positions(entry: EntryLegs) -> dict[str, int]:
    """The net of one entry's legs per party, ordered by party (zero nets kept)."""
    nets: dict[str, int] = {}
    for party, amount in entry.legs:
        nets[party] = nets.get(party, 0) + amount
    return dict(sorted(nets.items()))


def allocate(nets: Mapping[str, int]) -> list[tuple[str, str, int]]:
    """Split one entry's nets into ``(debtor, creditor, amount)`` obligations.

    Debtors (negative nets) and creditors (positive nets) are each taken in sorted party
    order; the first debtor pays the first creditor as much as both still have, whichever
    is exhausted is replaced by the next one, and so on. With one debtor or one creditor
    (every earn, redeem and conversion) this is the only possible split; with several it is
    a deterministic one producing at most ``debtors + creditors - 1`` obligations.
    """
    debtors = [(p, -a) for p, a in sorted(nets.items()) if a < 0]
    creditors = [(p, a) for p, a in sorted(nets.items()) if a > 0]
    result: list[tuple[str, str, int]] = []
    d = c = 0
    owes = debtors[0][1] if debtors else 0
    due = creditors[0][1] if creditors else 0
    while d < len(debtors) and c < len(creditors):
        paid = min(owes, due)
        result.append((debtors[d][0], creditors[c][0], paid))
        owes -= paid
        due -= paid
        if owes == 0:
            d += 1
            owes = debtors[d][1] if d < len(debtors) else 0
        if due == 0:
            c += 1
            due = creditors[c][1] if c < len(creditors) else 0
    return result


def bilateral_obligations(entries: Iterable[EntryLegs]) -> dict[Pair, int]:
    """Gross obligations ``(debtor, creditor) -> micro-units`` summed over the batch.

    Within each entry the parties with a negative net owe those with a positive net, split
    by :func:`allocate`. Opposite obligations between two parties are kept apart (see
    :func:`net_bilateral`). For every party, what is owed to it minus what it owes equals
    its :func:`net_positions` figure. Ordered by ``(debtor, creditor)``; all amounts > 0.
    """
    totals: dict[Pair, int] = {}
    for entry in _valid(entries):
        for debtor, creditor, amount in allocate(entry_positions(entry)):
            totals[(debtor, creditor)] = totals.get((debtor, creditor), 0) + amount
    return dict(sorted(totals.items()))


def net_bilateral(obligations: Mapping[Pair, int]) -> dict[Pair, int]:
    """Pairwise net of gross obligations: A owes B 5 and B owes A 3 become A owes B 2.

    Ordered by ``(debtor, creditor)``; pairs that cancel out are left out.
    """
    nets: dict[Pair, int] = {}
    for (debtor, creditor), amount in obligations.items():
        if debtor == creditor:
            continue
        key, signed = (
            ((debtor, creditor), amount) if debtor < creditor else ((creditor, debtor), -amount)
        )
        nets[key] = nets.get(key, 0) + signed
    result: dict[Pair, int] = {}
    for (low, high), amount in nets.items():
        if amount > 0:
            result[(low, high)] = amount
        elif amount < 0:
            result[(high, low)] = -amount
    return dict(sorted(result.items()))


def net_positions(entries: Iterable[EntryLegs]) -> dict[str, int]:
    """Each party's multilateral net position: the sum of its legs over the batch.

    Positive: the hub owes the party; negative: the party owes the hub. Every party that
    appears in the batch is listed (ordered), even at 0; the positions sum to zero.
    """
    totals: dict[str, int] = {}
    for entry in _valid(entries):
        for party, amount in entry.legs:
            totals[party] = totals.get(party, 0) + amount
    return dict(sorted(totals.items()))


# --- payment instructions -------------------------------------------------------------------


def minor_unit_micro(minor_unit_digits: int) -> int:
    """Micro-units in one minor unit: 10_000 for 2 digits, 1_000_000 for 0."""
    if (
        isinstance(minor_unit_digits, bool)
        or not isinstance(minor_unit_digits, int)
        or not 0 <= minor_unit_digits <= MICRO_DIGITS
    ):
        raise ValueError(f"minor_unit_digits must be an int from 0 to {MICRO_DIGITS}")
    return int(10 ** (MICRO_DIGITS - minor_unit_digits))


def round_toward_zero(micro: int, quantum: int) -> int:
    """``micro`` rounded toward zero to a multiple of ``quantum``."""
    magnitude = abs(micro) // quantum * quantum
    return magnitude if micro >= 0 else -magnitude


def micro_to_decimal(micro: int, minor_unit_digits: int) -> Decimal:
    """Micro-units as a settlement-currency ``Decimal`` with ``minor_unit_digits`` places.

    ``micro`` must be a multiple of one minor unit, so the conversion is exact.
    """
    quantum = minor_unit_micro(minor_unit_digits)
    if micro % quantum:
        raise ValueError(f"{micro} micro-units is not a whole number of minor units")
    return Decimal(micro // quantum).scaleb(-minor_unit_digits)


def payment_instructions(
    positions: Mapping[str, int],
    minor_unit_digits: int,
    carried: Mapping[str, int],
) -> Instructions:
    """One payment per merchant, rounded toward zero, remainders carried forward.

    For each merchant, ``total = position + carried``; the instruction is ``total`` rounded
    toward zero to a whole minor unit (a merchant never pays more than it owes and is never
    paid more than it is owed), and ``total - instruction`` is carried to the next batch.
    Merchants whose total rounds to zero get no instruction. The hub's own accounts get no
    instruction and may not carry anything.
    """
    quantum = minor_unit_micro(minor_unit_digits)
    for party, amount in [*positions.items(), *carried.items()]:
        if not _is_amount(amount):
            raise ValueError(f"amount of {party!r} is not an int: {amount!r}")
    hub_carry = sorted(p for p, a in carried.items() if p in HUB_ACCOUNTS and a)
    if hub_carry:
        raise ValueError(f"the hub's own accounts carry nothing: {', '.join(hub_carry)}")

    merchants = sorted((set(positions) | set(carried)) - HUB_ACCOUNTS)
    instructions: list[PaymentInstruction] = []
    carry: dict[str, int] = {}
    for party in merchants:
        total = positions.get(party, 0) + carried.get(party, 0)
        paid = round_toward_zero(total, quantum)
        if paid:
            direction = Direction.FROM_HUB if paid > 0 else Direction.TO_HUB
            instructions.append(
                PaymentInstruction(
                    party, direction, abs(paid), micro_to_decimal(abs(paid), minor_unit_digits)
                )
            )
        if total != paid:
            carry[party] = total - paid
    return Instructions(
        minor_unit_digits=minor_unit_digits,
        instructions=tuple(instructions),
        carry=carry,
        hub_fees=positions.get(HUB_FEES, 0),
        hub_clearing=positions.get(HUB_CLEARING, 0),
        hub_rounding=sum(carry.values()) - sum(carried.values()),
    )


# --- efficiency -----------------------------------------------------------------------------


def gross_total(obligations: Mapping[Pair, int]) -> int:
    """The gross: the sum of all bilateral obligations, both directions counted."""
    return sum(obligations.values())


def net_total(positions: Mapping[str, int]) -> int:
    """The net: what the payers (parties with a negative position) owe in total.

    Because positions sum to zero this is also what the payees are owed; it is never more
    than the gross of the same entries.
    """
    return sum(-amount for amount in positions.values() if amount < 0)


EFFICIENCY_PLACES = 6
"""Decimal places of :func:`netting_efficiency`."""


def netting_efficiency(gross: int, net: int) -> Decimal:
    """``1 - net / gross``: the share of the gross that netting removed, in ``[0, 1]``.

    ``gross`` is :func:`gross_total` of the batch's bilateral obligations and ``net`` its
    :func:`net_total` (both before rounding to the minor unit). The ratio is rounded
    half-even to :data:`EFFICIENCY_PLACES` places. A batch without obligations has
    efficiency 0. Raises ``ValueError`` unless ``0 <= net <= gross``.
    """
    for name, value in (("gross", gross), ("net", net)):
        if not _is_amount(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, not {value!r}")
    if net > gross:
        raise ValueError(f"net {net} exceeds gross {gross}")
    scale = 10**EFFICIENCY_PLACES
    if gross == 0:
        return Decimal(0).scaleb(-EFFICIENCY_PLACES)
    quotient, remainder = divmod(net * scale, gross)
    if 2 * remainder > gross or (2 * remainder == gross and quotient % 2):
        quotient += 1
    return Decimal(scale - quotient).scaleb(-EFFICIENCY_PLACES)
