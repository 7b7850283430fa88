"""Finance in the GraphQL API: settlement batches, statements, payments, measures.

:class:`FinanceQuery` and :class:`FinanceMutation` are root types to merge into ``Query``
and ``Mutation``. Finance (and the hub's admin) sees every merchant; a merchant key sees its
own figures only: the obligations it is a party to, its own position, instruction,
statement and checkpoint, and its own programme measures. Coalition totals (gross, net,
efficiency, the trial balance) are for finance. Money is an exact decimal string; a batch is
identified by its number (``id``), as in ``GET /finance/statements/{id}.csv``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, TypeVar, cast

import strawberry

from exchange.api.context import Info, require_actor
from exchange.api.errors import InvalidArgument, UserError, user_errors_from
from exchange.api.fields import field
from exchange.api.nodes import Entry, EntryKind
from exchange.api.pagination import Connection, build_connection, check_first, decode_cursor
from exchange.api.pagination import encode_cursor as cursor_of
from exchange.api.scalars import micro_value, points_value, rate_value
from exchange.domain import advisor
from exchange.domain.errors import Refusal
from exchange.domain.money import AmountError, decimal_to_micro
from exchange.finance import batches, metrics, payments, reports
from exchange.finance import statements as statement_service
from exchange.finance.chain import GENESIS
from exchange.finance.lines import Line
from exchange.services.actors import ADMIN, FINANCE, MERCHANT, Actor
from exchange.services.tx import reading

F = TypeVar("F", bound=Callable[..., object])
OPERATORS = (FINANCE, ADMIN)
IDEMPOTENCY_KEY = (
    "1–128 of A–Z a–z 0–9 . _ : -; a retry with the same key replays the first result."
)


def mutation(*, description: str) -> Callable[[F], F]:
    """``strawberry.mutation`` as a typed decorator."""
    return cast("Callable[[F], F]", strawberry.mutation(description=description))


def _is_operator(actor: Actor) -> bool:
    return actor.role in OPERATORS


async def _merchant_code(info: Info, merchant_id: int | None) -> str | None:
    if merchant_id is None:
        return None
    async with reading(info.context.pool) as conn:
        cur = await conn.execute("SELECT code FROM merchants WHERE id = %s", (merchant_id,))
        row = await cur.fetchone()
    return None if row is None else str(row[0])


async def _merchant_id(info: Info, code: str) -> int | None:
    if len(code) > 64:
        return None
    async with reading(info.context.pool) as conn:
        cur = await conn.execute("SELECT id FROM merchants WHERE code = %s", (code,))
        row = await cur.fetchone()
    return None if row is None else int(row[0])


# -- batches -----------------------------------------------------------------------------------


@strawberry.enum(description="Which way a payment instruction's money flows.")
class PaymentDirection(enum.Enum):
    TO_HUB = "to_hub"
    FROM_HUB = "from_hub"


@strawberry.type(description="Who owes whom in a batch, gross, as the entries created it.")
class SettlementObligation:
    debtor: str = strawberry.field(description="A merchant code, or `hub:fees`.")
    creditor: str
    amount: Decimal


@strawberry.type(description="A party's multilateral net position in a batch.")
class SettlementPosition:
    party: str = strawberry.field(description="A merchant code, or `hub:fees`.")
    position: Decimal = strawberry.field(
        description="Positive: the hub owes the party; negative: the party owes the hub."
    )
    carried_in: Decimal = strawberry.field(description="Rounding remainder from the last batch.")
    carried_out: Decimal = strawberry.field(description="Remainder carried to the next batch.")


@strawberry.type(description="A confirmed payment of an instruction.")
class SettlementPayment:
    batch_id: int
    merchant: str
    direction: PaymentDirection
    amount: Decimal
    external_reference: str
    confirmed_at: datetime
    entry_id: strawberry.Private[int]

    @field(description="The settle entry that recorded the payment.")
    async def entry(self, info: Info) -> Entry | None:
        row = await info.context.loaders.entry.load(self.entry_id)
        return None if row is None else Entry.from_row(row, party=True)

    @classmethod
    def of(cls, batch_id: int, merchant: str, p: reports.Payment) -> SettlementPayment:
        return cls(
            batch_id=batch_id,
            merchant=merchant,
            direction=PaymentDirection(p.direction),
            amount=micro_value(p.amount_micro),
            external_reference=p.external_ref,
            confirmed_at=p.confirmed_at,
            entry_id=p.entry_id,
        )


@strawberry.type(description="One payment between a merchant and the hub.")
class PaymentInstruction:
    merchant: str
    direction: PaymentDirection
    amount: Decimal = strawberry.field(description="What is paid, in the minor unit.")
    payment: SettlementPayment | None = strawberry.field(
        description="The confirmation; null until finance confirms the payment."
    )

    @field(description="Whether the payment is confirmed.")
    def confirmed(self) -> bool:
        return self.payment is not None


@strawberry.type(description="What the hub signed for a merchant at a batch's close.")
class SettlementCheckpoint:
    batch_id: int
    merchant: str
    payload: str = strawberry.field(
        description="Canonical JSON: batch, merchant, opening, closing, lines, digest (of the"
        " statement's lines), chainBlock and chainHead (the hash chain at the close)."
    )
    signature: str = strawberry.field(description="Ed25519 over the payload, base64url.")
    key_id: str = strawberry.field(description="The `kid` of the hub's signing key.")

    @classmethod
    def of(cls, s: reports.StatementSummary) -> SettlementCheckpoint:
        return cls(
            batch_id=s.batch_id,
            merchant=s.merchant,
            payload=s.payload,
            signature=s.signature,
            key_id=s.key_id,
        )


@strawberry.type(description="A closed settlement batch (it never changes).")
class SettlementBatch:
    id: int = strawberry.field(description="The batch's number.")
    cutoff: datetime
    closed_at: datetime
    currency: str = strawberry.field(description="The settlement currency.")
    entry_count: int = strawberry.field(description="Entries in the batch (payments included).")
    chain_block: int = strawberry.field(description="The hash-chain block at the close.")
    chain_head: str = strawberry.field(description="That block's hash (hex).")
    settled: bool = strawberry.field(description="Every instruction is confirmed paid.")
    batch: strawberry.Private[reports.Batch]
    viewer: strawberry.Private[str | None]
    """The merchant code of a merchant caller; ``None`` for finance."""
    viewer_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, b: reports.Batch, viewer: str | None, viewer_id: int | None) -> SettlementBatch:
        return cls(
            id=b.id,
            cutoff=b.cutoff,
            closed_at=b.closed_at,
            currency=b.currency,
            entry_count=b.entry_count,
            chain_block=b.chain_block,
            chain_head=(b.chain_head or GENESIS).hex(),
            settled=b.settled,
            batch=b,
            viewer=viewer,
            viewer_id=viewer_id,
        )

    def _coalition(self, micro: int) -> Decimal | None:
        return micro_value(micro) if self.viewer is None else None

    @field(description="All bilateral obligations, both directions (finance; null for merchants).")
    def gross(self) -> Decimal | None:
        return self._coalition(self.batch.gross_micro)

    @field(description="What the payers owe in total (finance; null for merchants).")
    def net(self) -> Decimal | None:
        return self._coalition(self.batch.net_micro)

    @field(description="1 - net / gross, six places (finance; null for merchants).")
    def efficiency(self) -> Decimal | None:
        return self.batch.efficiency if self.viewer is None else None

    @field(description="The hub's conversion revenue in the batch (finance).")
    def hub_fees(self) -> Decimal | None:
        return self._coalition(self.batch.hub_fees_micro)

    @field(description="Cash the hub holds (or lacks) because of rounding (finance).")
    def hub_rounding(self) -> Decimal | None:
        return self._coalition(self.batch.hub_rounding_micro)

    @field(description="Gross obligations (a merchant sees those it is a party to).")
    async def obligations(self, info: Info) -> list[SettlementObligation]:
        async with reading(info.context.pool) as conn:
            found = await reports.obligations(conn, self.id, self.viewer)
        return [
            SettlementObligation(
                debtor=o.debtor, creditor=o.creditor, amount=micro_value(o.amount_micro)
            )
            for o in found
        ]

    @field(description="Net positions and carries (a merchant sees its own).")
    async def positions(self, info: Info) -> list[SettlementPosition]:
        async with reading(info.context.pool) as conn:
            found = await reports.positions(conn, self.id, self.viewer)
        return [
            SettlementPosition(
                party=p.party,
                position=micro_value(p.position_micro),
                carried_in=micro_value(p.carried_in_micro),
                carried_out=micro_value(p.carry_out_micro),
            )
            for p in found
        ]

    @field(description="Payment instructions (a merchant sees its own).")
    async def instructions(self, info: Info) -> list[PaymentInstruction]:
        async with reading(info.context.pool) as conn:
            found = await reports.instructions(conn, self.id, self.viewer_id)
        return [
            PaymentInstruction(
                merchant=i.merchant,
                direction=PaymentDirection(i.direction),
                amount=micro_value(i.amount_micro),
                payment=None
                if i.payment is None
                else SettlementPayment.of(self.id, i.merchant, i.payment),
            )
            for i in found
        ]

    @field(description="Signed checkpoints, one per merchant (a merchant sees its own).")
    async def checkpoints(self, info: Info) -> list[SettlementCheckpoint]:
        async with reading(info.context.pool) as conn:
            found = await reports.statements(conn, self.id, self.viewer_id)
        return [SettlementCheckpoint.of(s) for s in found]


# -- statements --------------------------------------------------------------------------------


@strawberry.type(description="One line of a statement: an entry seen from the merchant's side.")
class StatementLine:
    entry_id: int
    time: datetime = strawberry.field(description="When the hub recorded the entry.")
    kind: EntryKind
    counterparty: str = strawberry.field(description="A merchant code, or a hub account.")
    currency: str | None = strawberry.field(description="The point currency, if any.")
    points: Decimal | None
    rate: Decimal | None = strawberry.field(description="The rate the entry used.")
    value: Decimal = strawberry.field(
        description="Signed: positive when the counterparty owes the merchant."
    )

    @classmethod
    def of(cls, line: Line) -> StatementLine:
        return cls(
            entry_id=line.entry_id,
            time=line.time,
            kind=EntryKind(line.kind),
            counterparty=line.counterparty,
            currency=line.currency or None,
            points=Decimal(line.points) if line.points else None,
            rate=rate_value(Decimal(line.rate)) if line.rate else None,
            value=micro_value(line.value_micro),
        )


LINE_CURSOR = "statementLine"


@strawberry.type(description="A merchant's statement for one batch; opening + lines = closing.")
class Statement:
    batch_id: int
    merchant: str
    currency: str
    opening: Decimal = strawberry.field(description="The merchant's position before the batch.")
    closing: Decimal = strawberry.field(description="Opening plus every line.")
    position: Decimal = strawberry.field(description="The netted lines: the batch's position.")
    payments: Decimal = strawberry.field(description="Lines of confirmed payments (settle).")
    carried_in: Decimal
    instruction: Decimal = strawberry.field(
        description="The batch's payment, signed (negative: the merchant pays the hub)."
    )
    carried_out: Decimal
    line_count: int
    digest: str = strawberry.field(description="SHA-256 of the lines (hex), as signed.")
    checkpoint: SettlementCheckpoint
    loaded: strawberry.Private[statement_service.Statement]

    @classmethod
    def of(cls, s: statement_service.Statement) -> Statement:
        summary = s.summary
        return cls(
            batch_id=s.batch.id,
            merchant=s.merchant,
            currency=s.batch.currency,
            opening=micro_value(summary.opening_micro),
            closing=micro_value(summary.closing_micro),
            position=micro_value(summary.netted_micro),
            payments=micro_value(summary.payments_micro),
            carried_in=micro_value(s.position.carried_in_micro),
            instruction=micro_value(s.instruction_micro),
            carried_out=micro_value(s.position.carry_out_micro),
            line_count=summary.line_count,
            digest=summary.digest.hex(),
            checkpoint=SettlementCheckpoint.of(summary),
            loaded=s,
        )

    @field(description="The lines, in entry order.")
    async def lines(
        self, info: Info, first: int = 100, after: str | None = None
    ) -> Connection[StatementLine]:
        first = check_first(first)
        position = decode_cursor(after, LINE_CURSOR, (int, str))
        after_entry, after_party = (0, "") if position is None else position
        rows: list[Line] = []
        async with info.context.pool.connection() as conn, conn.transaction():
            lines = statement_service.statement_lines(
                conn, self.loaded, after_entry=max(after_entry - 1, 0)
            )
            async with contextlib.aclosing(lines):
                async for line in lines:
                    if (line.entry_id, line.counterparty) <= (after_entry, after_party):
                        continue
                    rows.append(line)
                    if len(rows) > first:
                        break
        return build_connection(
            rows,
            first,
            node=StatementLine.of,
            cursor=lambda line: cursor_of(LINE_CURSOR, line.entry_id, line.counterparty),
            has_previous=position is not None,
        )


# -- measures ----------------------------------------------------------------------------------


@strawberry.type(description="Programme measures of a point currency over a period.")
class ProgrammeMetrics:
    currency: str
    issuer: str
    merchant: str | None = strawberry.field(
        description="The merchant the figures are for; null for the whole coalition."
    )
    from_: datetime = strawberry.field(name="from")
    to: datetime
    issued: Decimal
    redeemed: Decimal
    redeemed_at_issuer: Decimal
    redeemed_elsewhere: Decimal
    converted_in: Decimal
    converted_out: Decimal
    expired: Decimal = strawberry.field(description="Breakage: points that expired.")
    reversed: Decimal
    reversed_issued: Decimal = strawberry.field(description="Points taken back by reversals.")
    reversed_redeemed: Decimal = strawberry.field(description="Points given back by reversals.")
    adjusted_in: Decimal
    adjusted_out: Decimal
    outstanding: Decimal | None = strawberry.field(
        description="Points in circulation at `to` (the issuer and finance only)."
    )
    rate: Decimal | None = strawberry.field(description="The rate in force now.")
    liability: Decimal | None = strawberry.field(
        description="The outstanding points' value at the current rate."
    )
    redemption_rate: Decimal | None = strawberry.field(description="redeemed / issued")
    breakage_rate: Decimal | None = strawberry.field(description="expired / issued")
    active_use_rate: Decimal | None = strawberry.field(
        description="members who redeemed / members who held points in the period"
    )
    members_redeemed: int
    members_holding: int

    @classmethod
    def of(cls, m: metrics.CurrencyMetrics) -> ProgrammeMetrics:
        f, scale = m.flows, m.scale

        def pts(n: int) -> Decimal:
            return points_value(n, scale)

        return cls(
            currency=m.currency,
            issuer=m.issuer,
            merchant=m.merchant,
            from_=m.start,
            to=m.end,
            issued=pts(f.issued),
            redeemed=pts(f.redeemed),
            redeemed_at_issuer=pts(f.redeemed_at_issuer),
            redeemed_elsewhere=pts(f.redeemed_elsewhere),
            converted_in=pts(f.converted_in),
            converted_out=pts(f.converted_out),
            expired=pts(f.expired),
            reversed=pts(f.reversed),
            reversed_issued=pts(f.reversed_issued),
            reversed_redeemed=pts(f.reversed_redeemed),
            adjusted_in=pts(f.adjusted_in),
            adjusted_out=pts(f.adjusted_out),
            outstanding=None if m.outstanding is None else pts(m.outstanding),
            rate=None if m.rate is None else rate_value(m.rate),
            liability=None if m.liability_micro is None else micro_value(m.liability_micro),
            redemption_rate=m.redemption_rate,
            breakage_rate=m.breakage_rate,
            active_use_rate=m.active_use_rate,
            members_redeemed=m.members_redeemed,
            members_holding=m.members_holding,
        )


@strawberry.type(description="One account class's total within an asset.")
class AccountClassTotal:
    account_class: str = strawberry.field(
        description="`wallet`, `outstanding`, `settlement`, `hub_fees` or `hub_clearing`."
    )
    accounts: int
    total: Decimal


@strawberry.type(description="An asset's trial balance: every class total; they sum to zero.")
class AssetTrialBalance:
    asset: str
    kind: str = strawberry.field(description="`points` or `settlement`.")
    total: Decimal
    balanced: bool = strawberry.field(
        description="The classes sum to zero (and for points, outstanding = -wallets)."
    )
    classes: list[AccountClassTotal]


@strawberry.type(description="The ledger's trial balance, per asset.")
class TrialBalance:
    balanced: bool
    assets: list[AssetTrialBalance]


@strawberry.type(description="A suggested point value from a redemption budget.")
class RateAdvice:
    budget: Decimal
    expected_points: int
    suggested_rate: Decimal = strawberry.field(
        description="budget / expected points, rounded down to six places."
    )


@strawberry.type(description="A public key of the hub, to verify checkpoints (JWK, Ed25519).")
class HubSigningKey:
    kid: str
    kty: str
    crv: str
    x: str
    alg: str


# -- root types --------------------------------------------------------------------------------


async def _batch_view(info: Info, actor: Actor, batch: reports.Batch) -> SettlementBatch:
    if _is_operator(actor):
        return SettlementBatch.of(batch, None, None)
    return SettlementBatch.of(
        batch, await _merchant_code(info, actor.merchant_id), actor.merchant_id
    )


@strawberry.type
class FinanceQuery:
    @field(description="Closed settlement batches, newest first (finance and merchants).")
    async def settlement_batches(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[SettlementBatch]:
        actor = require_actor(info, FINANCE, ADMIN, MERCHANT)
        first = check_first(first)
        position = decode_cursor(after, "settlementBatch", (int,))
        async with reading(info.context.pool) as conn:
            found = await reports.list_batches(
                conn, before=None if position is None else position[0], limit=first + 1
            )
        viewer = None if _is_operator(actor) else await _merchant_code(info, actor.merchant_id)
        return build_connection(
            found,
            first,
            node=lambda b: SettlementBatch.of(
                b, viewer, None if viewer is None else actor.merchant_id
            ),
            cursor=lambda b: cursor_of("settlementBatch", b.id),
            has_previous=position is not None,
        )

    @field(description="A closed settlement batch by number; null if there is none.")
    async def settlement_batch(self, info: Info, id: int) -> SettlementBatch | None:
        actor = require_actor(info, FINANCE, ADMIN, MERCHANT)
        async with reading(info.context.pool) as conn:
            found = await reports.get_batch(conn, id)
        return None if found is None else await _batch_view(info, actor, found)

    @field(
        description="A merchant's statement for a batch. Finance names the merchant; a"
        " merchant gets its own (naming another merchant gives null)."
    )
    async def statement(
        self, info: Info, batch_id: int, merchant_code: str | None = None
    ) -> Statement | None:
        actor = require_actor(info, FINANCE, ADMIN, MERCHANT)
        if _is_operator(actor):
            if merchant_code is None:
                raise InvalidArgument("Finance names the merchant.", argument="merchantCode")
            merchant_id = await _merchant_id(info, merchant_code)
        else:
            merchant_id = actor.merchant_id
            if merchant_code is not None and merchant_code != await _merchant_code(
                info, merchant_id
            ):
                return None
        if merchant_id is None:
            return None
        async with reading(info.context.pool) as conn:
            found = await statement_service.load_statement(conn, batch_id, merchant_id)
        return None if found is None else Statement.of(found)

    @field(description="Every account class's total per asset (finance).")
    async def trial_balance(self, info: Info) -> TrialBalance:
        require_actor(info, FINANCE, ADMIN)
        async with reading(info.context.pool) as conn:
            assets = await metrics.trial_balance(conn)
        out = [
            AssetTrialBalance(
                asset=a.asset,
                kind=a.kind,
                total=points_value(a.total, a.scale),
                balanced=a.balanced,
                classes=[
                    AccountClassTotal(
                        account_class=c.account_class,
                        accounts=c.accounts,
                        total=points_value(c.total, a.scale),
                    )
                    for c in a.classes
                ],
            )
            for a in assets
        ]
        return TrialBalance(balanced=all(a.balanced for a in out), assets=out)

    @field(
        description="Programme measures per point currency over [from, to). Finance: any"
        " merchant, or the whole coalition without one; a merchant: its own figures."
    )
    async def programme_metrics(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        currency: str | None = None,
        merchant: str | None = None,
    ) -> list[ProgrammeMetrics]:
        actor = require_actor(info, FINANCE, ADMIN, MERCHANT)
        if to <= from_:
            raise InvalidArgument("`to` must be after `from`.", argument="to")
        if _is_operator(actor):
            merchant_id = None if merchant is None else await _merchant_id(info, merchant)
            if merchant is not None and merchant_id is None:
                return []
        else:
            merchant_id = actor.merchant_id
            if merchant is not None and merchant != await _merchant_code(info, merchant_id):
                return []
        async with reading(info.context.pool) as conn:
            found = await metrics.programme_metrics(
                conn, start=from_, end=to, currency=currency, merchant_id=merchant_id
            )
        return [ProgrammeMetrics.of(m) for m in found]

    @field(description="A point value a redemption budget affords: budget / expected points.")
    def rate_advisor(self, info: Info, budget: Decimal, expected_points: int) -> RateAdvice:
        require_actor(info, FINANCE, ADMIN, MERCHANT)
        try:
            rate = advisor.rate_advisor(budget, expected_points)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        return RateAdvice(budget=budget, expected_points=expected_points, suggested_rate=rate)

    @field(description="The hub's public signing keys (to verify checkpoints).")
    def hub_signing_keys(self, info: Info) -> list[HubSigningKey]:
        require_actor(info)
        secrets = info.context.secrets
        if secrets is None:
            return []
        return [
            HubSigningKey(kid=k["kid"], kty=k["kty"], crv=k["crv"], x=k["x"], alg=k["alg"])
            for k in secrets.jwks()["keys"]
        ]


@strawberry.input(description="Close the next settlement batch.")
class CloseSettlementBatchInput:
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY)
    cutoff: datetime | None = strawberry.field(
        default=None,
        description="Entries recorded before it (and committed) are in the batch; default now.",
    )


@strawberry.type(description="The batch closed (or replayed).")
class CloseSettlementBatchPayload:
    batch: SettlementBatch | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="Confirm that an instruction was paid.")
class ConfirmPaymentInput:
    batch_id: int
    merchant_code: str
    amount: Decimal = strawberry.field(description="What was paid: the instruction's amount.")
    external_reference: str = strawberry.field(description="The bank's or PSP's reference.")
    idempotency_key: str = strawberry.field(description=IDEMPOTENCY_KEY)


@strawberry.type(description="The recorded payment.")
class ConfirmPaymentPayload:
    payment: SettlementPayment | None = None
    batch: SettlementBatch | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _amount(value: Decimal) -> int:
    if not value.is_finite() or value <= 0:
        raise Refusal("INVALID_AMOUNT", "amount must be greater than zero", "amount")
    try:
        return decimal_to_micro(format(value, "f"))
    except AmountError as exc:
        raise Refusal(exc.code, exc.message, "amount") from exc


@strawberry.type
class FinanceMutation:
    @mutation(description="Close the next settlement batch (finance).")
    async def close_settlement_batch(
        self, info: Info, input: CloseSettlementBatchInput
    ) -> CloseSettlementBatchPayload:
        actor = require_actor(info, FINANCE, ADMIN)
        secrets = info.context.secrets
        if secrets is None:
            raise RuntimeError("the hub's signing key is not loaded")
        try:
            closed = await batches.close_batch(
                info.context.pool,
                actor,
                secrets=secrets,
                minor_unit=info.context.settings.settlement_minor_unit,
                idempotency_key=input.idempotency_key,
                cutoff=input.cutoff,
            )
        except Refusal as refusal:
            return CloseSettlementBatchPayload(user_errors=user_errors_from(refusal))
        async with reading(info.context.pool) as conn:
            found = await reports.get_batch(conn, closed.batch_id)
        assert found is not None
        return CloseSettlementBatchPayload(
            batch=SettlementBatch.of(found, None, None), replayed=closed.replayed
        )

    @mutation(
        description="Confirm a payment instruction as paid (finance): posts the settle entry."
        " The same reference again replays; another reference is `ALREADY_CONFIRMED`."
    )
    async def confirm_payment(
        self, info: Info, input: ConfirmPaymentInput
    ) -> ConfirmPaymentPayload:
        actor = require_actor(info, FINANCE)
        try:
            done = await payments.confirm_payment(
                info.context.pool,
                actor,
                batch_id=input.batch_id,
                merchant_code=input.merchant_code,
                amount_micro=_amount(input.amount),
                external_ref=input.external_reference,
                idempotency_key=input.idempotency_key,
            )
        except Refusal as refusal:
            return ConfirmPaymentPayload(user_errors=user_errors_from(refusal))
        async with reading(info.context.pool) as conn:
            batch = await reports.get_batch(conn, done.batch_id)
            found = await reports.instructions(conn, done.batch_id, done.merchant_id)
        assert batch is not None
        assert found
        assert found[0].payment is not None
        return ConfirmPaymentPayload(
            payment=SettlementPayment.of(done.batch_id, found[0].merchant, found[0].payment),
            batch=SettlementBatch.of(batch, None, None),
            replayed=done.replayed,
        )


__all__ = ["FinanceMutation", "FinanceQuery"]
