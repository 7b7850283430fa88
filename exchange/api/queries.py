"""Root query fields: the hub's version, who is calling, wallets, customers and nodes."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
from importlib.metadata import PackageNotFoundError, version

import strawberry
from strawberry import relay
from strawberry.relay.types import GlobalIDValueError

from exchange.api.context import Info, require_actor
from exchange.api.errors import InvalidArgument
from exchange.api.fields import field
from exchange.api.loaders import fetch_all
from exchange.api.nodes import Member, Merchant, merchant_by_id, visible_member
from exchange.api.wallet import Wallet, open_wallet
from exchange.services.actors import MEMBER, MERCHANT
from exchange.services.members import MAX_REF

MAX_NODES = 100


@functools.cache
def hub_version() -> str:
    try:
        return version("exchange")
    except PackageNotFoundError:
        return "0+unknown"


@strawberry.enum(description="The kind of credential a request acts with.")
class Role(enum.Enum):
    ADMIN = "admin"
    FINANCE = "finance"
    MERCHANT = "merchant"
    MEMBER = "member"


@strawberry.type(description="Who is calling.")
class Viewer:
    role: Role
    merchant_id: strawberry.Private[int | None]
    member_id: strawberry.Private[int | None]

    @field(description="The merchant a merchant key acts for.")
    async def merchant(self, info: Info) -> Merchant | None:
        if self.role != Role.MERCHANT:
            return None
        return await merchant_by_id(info, self.merchant_id)

    @field(description="The member a member token acts for.")
    def member(self) -> Member | None:
        if self.role != Role.MEMBER or self.member_id is None:
            return None
        return Member(id=self.member_id, customer_ref=None)


async def _resolve_node(info: Info, gid: relay.GlobalID) -> relay.Node | None:
    try:
        node_type = gid.resolve_type(info)
    except GlobalIDValueError:
        return None
    found = node_type.resolve_nodes(info=info, node_ids=[gid.node_id], required=False)
    if inspect.isawaitable(found):
        found = await found
    node = next(iter(found), None)
    return node if isinstance(node, relay.Node) else None


@strawberry.type
class Query:
    hub_version: str = strawberry.field(
        resolver=hub_version, description="The version of the hub software."
    )

    @field(description="The caller's role and identity.")
    def viewer(self, info: Info) -> Viewer:
        actor = require_actor(info)
        return Viewer(
            role=Role(actor.role), merchant_id=actor.merchant_id, member_id=actor.member_id
        )

    @field(description="The calling member's wallet (member credentials only).")
    async def wallet(self, info: Info) -> Wallet:
        actor = require_actor(info, MEMBER)
        assert actor.member_id is not None
        return await open_wallet(info, actor.member_id)

    @field(
        description="A member linked to the calling merchant under its own customer reference;"
        " null when there is no such link (merchant credentials only)."
    )
    async def customer(self, info: Info, customer_ref: str) -> Member | None:
        actor = require_actor(info, MERCHANT)
        ref = customer_ref.strip()
        if not 1 <= len(ref) <= MAX_REF:
            return None
        rows = await fetch_all(
            info.context.pool,
            "SELECT member_id FROM member_links WHERE merchant_id = %s AND customer_ref = %s",
            (actor.merchant_id, ref),
        )
        if not rows:
            return None
        member_id = int(rows[0][0])
        info.context.loaders.customer_ref.prime((actor.merchant_id or 0, member_id), ref)
        return await visible_member(info, member_id)

    @field(description="The object with this ID, or null if it is not visible.")
    async def node(self, info: Info, id: relay.GlobalID) -> relay.Node | None:
        require_actor(info)
        return await _resolve_node(info, id)

    @field(description="The objects with these IDs (null where not visible).")
    async def nodes(self, info: Info, ids: list[relay.GlobalID]) -> list[relay.Node | None]:
        require_actor(info)
        if len(ids) > MAX_NODES:
            raise InvalidArgument(f"At most {MAX_NODES} ids at once.", argument="ids")
        found = await asyncio.gather(*(_resolve_node(info, gid) for gid in ids))
        return list(found)
