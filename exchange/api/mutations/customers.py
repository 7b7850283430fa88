"""Customers: a merchant links its customer references and opens member sessions; a member
creates the one-time code that links it at another merchant."""

from __future__ import annotations

from datetime import datetime

import strawberry

from exchange.api.context import Info, require_actor
from exchange.api.errors import UserError
from exchange.api.mutations.common import check_text, errors_of, mutation
from exchange.api.nodes import Member
from exchange.domain.errors import Refusal
from exchange.services import credentials, links
from exchange.services.actors import MEMBER, MERCHANT

MAX_REF_INPUT = 256


@strawberry.input(description="Link your customer reference to a member of the alliance.")
class LinkCustomerInput:
    customer_ref: str = strawberry.field(
        description="Your own, stable reference for the customer (1–128 printable characters)."
    )
    link_code: str | None = strawberry.field(
        default=None,
        description="A code the member created (`createLinkCode`) to link an existing"
        " membership; without one a new member is created.",
    )


@strawberry.type(description="The member your reference is linked to.")
class LinkCustomerPayload:
    member: Member | None = None
    created: bool = strawberry.field(
        default=False, description="False when the reference was already linked (a replay)."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="Open a session for one of your customers.")
class StartMemberSessionInput:
    customer_ref: str
    ttl_seconds: int | None = strawberry.field(
        default=None, description="Token lifetime (60 to 3600 s); the hub's default if null."
    )


@strawberry.type(description="A member access token: give it to the member's app, not logs.")
class StartMemberSessionPayload:
    token: str | None = None
    expires_at: datetime | None = None
    member: Member | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="Nothing to give: the code is for the calling member.")
class CreateLinkCodeInput:
    client_mutation_id: str | None = strawberry.field(
        default=None, description="Echoed back, for the client's own bookkeeping."
    )


@strawberry.type(description="A one-time link code, shown once; valid for ten minutes.")
class CreateLinkCodePayload:
    link_code: str | None = None
    expires_at: datetime | None = None
    client_mutation_id: str | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CustomerMutations:
    @mutation(
        description="Link your customer reference to a member (merchant). Without `linkCode` a"
        " new member is created; with it, the member who created the code. Calling it again for"
        " a linked reference answers the same member."
    )
    async def link_customer(
        self,
        info: Info,
        input: LinkCustomerInput,
    ) -> LinkCustomerPayload:
        actor = require_actor(info, MERCHANT)
        try:
            check_text(input.customer_ref, "customerRef", max_len=MAX_REF_INPUT)
            if input.link_code is not None:
                check_text(input.link_code, "linkCode", max_len=links.MAX_CODE_INPUT)
            link = await links.link_customer(
                info.context.pool, actor, input.customer_ref, input.link_code
            )
        except Refusal as refusal:
            return LinkCustomerPayload(user_errors=errors_of(refusal))
        return LinkCustomerPayload(
            member=Member(
                id=link.member_id,
                customer_ref=link.customer_ref,
                viewer_merchant_id=actor.merchant_id,
            ),
            created=link.created,
        )

    @mutation(
        description="A short-lived access token for one of your customers (merchant), for the"
        " member's own calls (conversions, link codes)."
    )
    async def start_member_session(
        self,
        info: Info,
        input: StartMemberSessionInput,
    ) -> StartMemberSessionPayload:
        actor = require_actor(info, MERCHANT)
        secrets = info.context.secrets
        assert secrets is not None, "the hub runs without signing keys"
        try:
            check_text(input.customer_ref, "customerRef", max_len=MAX_REF_INPUT)
            issued = await credentials.mint_member_token(
                info.context.pool,
                actor,
                input.customer_ref,
                input.ttl_seconds,
                secrets=secrets,
                settings=info.context.settings,
            )
        except Refusal as refusal:
            return StartMemberSessionPayload(user_errors=errors_of(refusal))
        member_id = int(issued.subject.removeprefix(credentials.MEMBER_SUBJECT_PREFIX))
        return StartMemberSessionPayload(
            token=issued.token,
            expires_at=issued.expires_at,
            member=Member(
                id=member_id,
                customer_ref=input.customer_ref.strip(),
                viewer_merchant_id=actor.merchant_id,
            ),
        )

    @mutation(
        description="A one-time code (valid ten minutes) that lets another merchant link you"
        " (member). Hand it to that merchant; it is shown only once."
    )
    async def create_link_code(
        self,
        info: Info,
        input: CreateLinkCodeInput | None = None,
    ) -> CreateLinkCodePayload:
        actor = require_actor(info, MEMBER)
        echo = None if input is None else input.client_mutation_id
        try:
            if echo is not None:
                check_text(echo, "clientMutationId", max_len=128, required=False)
            made = await links.create_link_code(info.context.pool, actor)
        except Refusal as refusal:
            return CreateLinkCodePayload(user_errors=errors_of(refusal), client_mutation_id=echo)
        return CreateLinkCodePayload(
            link_code=made.code, expires_at=made.expires_at, client_mutation_id=echo
        )
