"""Hub administration: onboarding merchants, their limits and status, the conversion fee,
and API keys."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry import relay

from exchange.api import auth
from exchange.api.context import Info, require_actor
from exchange.api.errors import UserError
from exchange.api.loaders import fetch_all
from exchange.api.mutations.common import (
    check_code,
    check_text,
    decode_id,
    errors_of,
    mutation,
    parse_money,
)
from exchange.api.nodes import Merchant
from exchange.api.scalars import micro_value
from exchange.domain.errors import NotFound, Refusal
from exchange.services import catalog, credentials, merchants
from exchange.services.actors import ADMIN, MERCHANT, Actor
from exchange.services.catalog import Merchant as MerchantRecord
from exchange.services.credentials import ApiKeyInfo

MAX_LABEL_INPUT = 200


@strawberry.enum(description="What an API key may do.")
class ApiKeyRole(enum.Enum):
    MERCHANT = "merchant"
    FINANCE = "finance"
    ADMIN = "admin"


@strawberry.enum(description="Whether an API key still authenticates.")
class ApiKeyStatus(enum.Enum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@strawberry.type(description="An API key as the hub knows it: never the key itself.")
class ApiKey(relay.Node):
    id: relay.NodeID[int]
    role: ApiKeyRole
    merchant_code: str | None
    label: str
    hint: str = strawberry.field(description="The key's first and last characters.")
    status: ApiKeyStatus
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    merchant_id: strawberry.Private[int | None]

    @classmethod
    def from_info(cls, key: ApiKeyInfo) -> ApiKey:
        return cls(
            id=key.id,
            role=ApiKeyRole(key.role),
            merchant_code=key.merchant_code,
            label=key.label,
            hint=key.hint,
            status=ApiKeyStatus(key.status()),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
            merchant_id=key.merchant_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[ApiKey | None]:
        """An admin sees every key, a merchant its own keys, nobody else any."""
        actor = info.context.actor
        ids = [int(i) if str(i).isdigit() and 0 < int(i) < 2**63 else None for i in node_ids]
        if actor is None or not (actor.role == ADMIN or actor.is_merchant):
            return [None for _ in ids]
        keys = await credentials.list_api_keys(info.context.pool, actor)
        found = {k.id: cls.from_info(k) for k in keys if k.id in ids}
        return [None if i is None else found.get(i) for i in ids]


@strawberry.type(description="A merchant with its exposure limit, as the administrator sees it.")
class MerchantAccount:
    merchant: Merchant
    exposure_limit: Decimal | None = strawberry.field(
        description="The most liability its currencies may carry (settlement currency);"
        " null: no limit."
    )

    @classmethod
    def of(cls, record: MerchantRecord) -> MerchantAccount:
        limit = record.exposure_limit_micro
        return cls(
            merchant=Merchant(
                id=record.id, code=record.code, name=record.name, active=record.status == "active"
            ),
            exposure_limit=None if limit is None else micro_value(limit),
        )


# -- inputs and payloads -----------------------------------------------------------------------


@strawberry.input(description="A new merchant of the alliance.")
class CreateMerchantInput:
    code: str = strawberry.field(description="2–32 of a–z, 0–9 and '-', e.g. `tea-house`.")
    name: str
    exposure_limit: Decimal | None = strawberry.field(
        default=None, description="The most liability its currencies may carry; null: none."
    )
    api_key_label: str = strawberry.field(default="", description="Label of its first API key.")


@strawberry.type(description="The merchant and its first API key, shown only this once.")
class CreateMerchantPayload:
    merchant: MerchantAccount | None = None
    api_key: str | None = strawberry.field(
        default=None,
        description="The merchant's first API key: store it now, it is never shown again.",
    )
    key: ApiKey | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetExposureLimitInput:
    merchant_code: str
    limit: Decimal | None = strawberry.field(description="Null removes the limit.")


@strawberry.type
class MerchantAccountPayload:
    merchant: MerchantAccount | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class MerchantStatusInput:
    merchant_code: str


@strawberry.input
class SetConversionFeeInput:
    basis_points: int = strawberry.field(description="0 to 9999; quotes made from now on use it.")


@strawberry.type
class SetConversionFeePayload:
    basis_points: int | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="A new API key.")
class CreateApiKeyInput:
    role: ApiKeyRole
    merchant_code: str | None = strawberry.field(
        default=None, description="The merchant of a MERCHANT key (none for the others)."
    )
    label: str = ""
    expires_at: datetime | None = None


@strawberry.type(description="The key, shown only this once, and what the hub keeps of it.")
class CreateApiKeyPayload:
    api_key: str | None = None
    key: ApiKey | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RevokeApiKeyInput:
    id: strawberry.ID = strawberry.field(description="The `ApiKey`'s ID.")


@strawberry.type
class RevokeApiKeyPayload:
    key: ApiKey | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _pepper(info: Info) -> bytes:
    secrets = info.context.secrets
    assert secrets is not None, "the hub runs without its API-key pepper"
    return secrets.api_key_pepper


async def _merchant_id(info: Info, code: str) -> int:
    check_code(code, "merchantCode")
    rows = await fetch_all(info.context.pool, "SELECT id FROM merchants WHERE code = %s", (code,))
    if not rows:
        raise NotFound("merchant", "merchantCode")
    return int(rows[0][0])


async def _set_status(
    info: Info, actor: Actor, code: str, *, active: bool
) -> MerchantAccountPayload:
    try:
        check_code(code, "merchantCode")
        record = await merchants.set_merchant_status(
            info.context.pool, actor, merchant_code=code, active=active
        )
    except Refusal as refusal:
        return MerchantAccountPayload(user_errors=errors_of(refusal))
    auth.API_KEY_CACHE.clear()  # this process stops accepting a suspended merchant's keys now
    return MerchantAccountPayload(merchant=MerchantAccount.of(record))


@strawberry.type
class AdminMutations:
    @mutation(
        description="Onboard a merchant and create its first API key (admin). The key is in"
        " the payload only this once."
    )
    async def create_merchant(
        self,
        info: Info,
        input: CreateMerchantInput,
    ) -> CreateMerchantPayload:
        actor = require_actor(info, ADMIN)
        pool = info.context.pool
        try:
            check_code(input.code, "code")
            check_text(input.name, "name")
            check_text(input.api_key_label, "apiKeyLabel", max_len=MAX_LABEL_INPUT, required=False)
            limit = (
                None
                if input.exposure_limit is None
                else parse_money(input.exposure_limit, "exposureLimit", allow_zero=True)
            )
            merchants.check_exposure_limit(limit)
            record = await catalog.create_merchant(
                pool,
                actor,
                code=input.code,
                name=input.name,
                stripes=info.context.settings.balance_stripes,
                exposure_limit_micro=limit,
            )
            key_info, key = await credentials.create_api_key(
                pool,
                actor,
                pepper=_pepper(info),
                role=MERCHANT,
                merchant_id=record.id,
                label=input.api_key_label or "first key",
            )
        except Refusal as refusal:
            return CreateMerchantPayload(user_errors=errors_of(refusal))
        return CreateMerchantPayload(
            merchant=MerchantAccount.of(record), api_key=key, key=ApiKey.from_info(key_info)
        )

    @mutation(description="Set or remove a merchant's exposure limit (admin).")
    async def set_exposure_limit(
        self,
        info: Info,
        input: SetExposureLimitInput,
    ) -> MerchantAccountPayload:
        actor = require_actor(info, ADMIN)
        try:
            check_code(input.merchant_code, "merchantCode")
            limit = (
                None if input.limit is None else parse_money(input.limit, "limit", allow_zero=True)
            )
            record = await merchants.set_exposure_limit(
                info.context.pool, actor, merchant_code=input.merchant_code, limit_micro=limit
            )
        except Refusal as refusal:
            return MerchantAccountPayload(user_errors=errors_of(refusal))
        return MerchantAccountPayload(merchant=MerchantAccount.of(record))

    @mutation(description="Set the hub's conversion fee in basis points (admin).")
    async def set_conversion_fee(
        self,
        info: Info,
        input: SetConversionFeeInput,
    ) -> SetConversionFeePayload:
        actor = require_actor(info, ADMIN)
        try:
            fee = await merchants.set_conversion_fee(info.context.pool, actor, input.basis_points)
        except Refusal as refusal:
            return SetConversionFeePayload(user_errors=errors_of(refusal))
        return SetConversionFeePayload(basis_points=fee)

    @mutation(
        description="Suspend a merchant (admin): its keys stop working and its currencies stop"
        " issuing points; points already issued can still be redeemed."
    )
    async def suspend_merchant(
        self,
        info: Info,
        input: MerchantStatusInput,
    ) -> MerchantAccountPayload:
        actor = require_actor(info, ADMIN)
        return await _set_status(info, actor, input.merchant_code, active=False)

    @mutation(description="Reactivate a suspended merchant (admin).")
    async def reactivate_merchant(
        self,
        info: Info,
        input: MerchantStatusInput,
    ) -> MerchantAccountPayload:
        actor = require_actor(info, ADMIN)
        return await _set_status(info, actor, input.merchant_code, active=True)

    @mutation(description="Create an API key (admin); shown only in this payload.")
    async def create_api_key(
        self,
        info: Info,
        input: CreateApiKeyInput,
    ) -> CreateApiKeyPayload:
        actor = require_actor(info, ADMIN)
        try:
            check_text(input.label, "label", max_len=MAX_LABEL_INPUT, required=False)
            merchant_id = (
                None
                if input.merchant_code is None
                else await _merchant_id(info, input.merchant_code)
            )
            key_info, key = await credentials.create_api_key(
                info.context.pool,
                actor,
                pepper=_pepper(info),
                role=input.role.value,
                merchant_id=merchant_id,
                label=input.label,
                expires_at=input.expires_at,
            )
        except Refusal as refusal:
            return CreateApiKeyPayload(user_errors=errors_of(refusal))
        return CreateApiKeyPayload(api_key=key, key=ApiKey.from_info(key_info))

    @mutation(
        description="Revoke an API key (admin: any key; merchant: its own). Revoking twice is"
        " harmless."
    )
    async def revoke_api_key(
        self,
        info: Info,
        input: RevokeApiKeyInput,
    ) -> RevokeApiKeyPayload:
        actor = require_actor(info, ADMIN, MERCHANT)
        try:
            key_id = decode_id(str(input.id), "ApiKey", "id")
            key_info = await credentials.revoke_api_key(info.context.pool, actor, key_id)
        except Refusal as refusal:
            return RevokeApiKeyPayload(user_errors=errors_of(refusal))
        auth.API_KEY_CACHE.clear()  # this process stops accepting the key now
        return RevokeApiKeyPayload(key=ApiKey.from_info(key_info))
