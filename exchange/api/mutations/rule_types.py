"""GraphQL types of earning rules: the ``EarningRule`` node, its parameters, applied rules."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry import relay

from exchange.api.context import Info
from exchange.api.fields import field
from exchange.api.loaders import fetch_all
from exchange.api.nodes import Currency, currency_by_code
from exchange.api.scalars import points_value
from exchange.services.actors import ADMIN, FINANCE
from exchange.services.rule_earning import AppliedRuleRecord
from exchange.services.rules import StoredRule


@strawberry.enum(description="The kind of an earning rule.")
class EarningRuleKind(enum.Enum):
    SPEND = "spend"
    ACTION = "action"
    MULTIPLIER = "multiplier"
    CAP = "cap"


@strawberry.enum(description="The period of a cap, in the rule set's time zone.")
class CapPeriod(enum.Enum):
    DAY = "day"
    MONTH = "month"


@strawberry.type(description="Points per amount spent, rounded down.")
class SpendParams:
    points_per_unit: Decimal = strawberry.field(description="Points per full `unitAmount`.")
    unit_amount: Decimal = strawberry.field(description="The amount spent that earns them.")


@strawberry.type(description="Fixed points for a named action.")
class ActionParams:
    action: str
    points: Decimal


@strawberry.type(description="A factor on purchase points inside a date and weekday window.")
class MultiplierParams:
    factor: Decimal
    starts_on: date | None = strawberry.field(description="First day (inclusive); null: open.")
    ends_on: date | None = strawberry.field(description="Last day (inclusive); null: open.")
    weekdays: list[int] | None = strawberry.field(
        description="ISO weekdays (1 = Monday … 7 = Sunday); null: every day."
    )


@strawberry.type(description="The most points one member may earn by rules per period.")
class CapParams:
    period: CapPeriod
    max_points: Decimal


@strawberry.type(description="An earning rule of a point currency, written by its issuer.")
class EarningRule(relay.Node):
    id: relay.NodeID[int]
    kind: EarningRuleKind
    name: str
    active: bool
    created_at: datetime
    updated_at: datetime | None
    spend: SpendParams | None = strawberry.field(description="Set for SPEND rules.")
    action: ActionParams | None = strawberry.field(description="Set for ACTION rules.")
    multiplier: MultiplierParams | None = strawberry.field(description="Set for MULTIPLIER rules.")
    cap: CapParams | None = strawberry.field(description="Set for CAP rules.")
    currency_code: strawberry.Private[str]

    @field(description="The currency the rule awards.")
    async def currency(self, info: Info) -> Currency:
        found = await currency_by_code(info, self.currency_code)
        assert found is not None
        return found

    @classmethod
    def from_stored(cls, rule: StoredRule) -> EarningRule:
        p = rule.params
        s = rule.scale
        out = cls(
            id=rule.id,
            kind=EarningRuleKind(rule.kind),
            name=rule.name,
            active=rule.active,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
            spend=None,
            action=None,
            multiplier=None,
            cap=None,
            currency_code=rule.currency_code,
        )
        if rule.kind == "spend":
            out.spend = SpendParams(
                points_per_unit=points_value(int(p["pointsPerUnit"]), s),
                unit_amount=Decimal(str(p["unitAmount"])),
            )
        elif rule.kind == "action":
            out.action = ActionParams(
                action=str(p["action"]), points=points_value(int(p["points"]), s)
            )
        elif rule.kind == "multiplier":
            out.multiplier = MultiplierParams(
                factor=Decimal(str(p["factor"])),
                starts_on=None if p.get("startsOn") is None else date.fromisoformat(p["startsOn"]),
                ends_on=None if p.get("endsOn") is None else date.fromisoformat(p["endsOn"]),
                weekdays=None if p.get("weekdays") is None else [int(d) for d in p["weekdays"]],
            )
        else:
            out.cap = CapParams(
                period=CapPeriod(str(p["period"])),
                max_points=points_value(int(p["maxPoints"]), s),
            )
        return out

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[EarningRule | None]:
        """Active rules are public to authenticated callers; inactive ones to their issuer."""
        ids: list[int | None] = []
        for raw in node_ids:
            try:
                value = int(raw)
            except (TypeError, ValueError):
                value = None
            ids.append(value if value is not None and 0 < value < 2**63 else None)
        actor = info.context.actor
        wanted = [i for i in ids if i is not None]
        if actor is None or not wanted:
            return [None for _ in ids]
        rows = await fetch_all(info.context.pool, RULES_BY_ID_SQL, (wanted,))
        found: dict[int, EarningRule] = {}
        for r in rows:
            rule = stored_rule(r)
            issuer = int(r[10])
            own = actor.is_merchant and actor.merchant_id == issuer
            if rule.active or own or actor.role in (ADMIN, FINANCE):
                found[rule.id] = cls.from_stored(rule)
        return [None if i is None else found.get(i) for i in ids]


RULES_BY_ID_SQL = """
SELECT r.id, c.code, c.scale, r.kind, r.name, r.params, r.active, r.created_at, r.created_by,
       r.updated_at, c.issuer_id
  FROM earning_rules r JOIN currencies c ON c.id = r.currency_id
 WHERE r.id = ANY(%s)
"""


def stored_rule(r: Any) -> StoredRule:
    return StoredRule(
        id=int(r[0]),
        currency_code=str(r[1]),
        scale=int(r[2]),
        kind=str(r[3]),
        name=str(r[4]),
        params=dict(r[5]),
        active=bool(r[6]),
        created_at=r[7],
        created_by=str(r[8]),
        updated_at=r[9],
    )


@strawberry.type(description="What one rule contributed to an award.")
class AppliedRule:
    rule_id: relay.GlobalID = strawberry.field(description="The `EarningRule`'s ID.")
    name: str
    kind: EarningRuleKind
    points: Decimal = strawberry.field(
        description="Points the rule contributed: base points of a spend or action rule, the"
        " points a multiplier added, or minus the points a cap removed."
    )
    factor: Decimal | None = strawberry.field(description="A multiplier's factor.")

    @classmethod
    def from_record(cls, record: AppliedRuleRecord, scale: int) -> AppliedRule:
        return cls(
            rule_id=relay.GlobalID("EarningRule", str(record.rule_id)),
            name=record.name,
            kind=EarningRuleKind(record.kind),
            points=points_value(record.points, scale),
            factor=record.factor,
        )
