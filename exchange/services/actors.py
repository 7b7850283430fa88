"""Who is calling: the principal a request acts for, derived from its credentials."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN = "admin"
FINANCE = "finance"
MERCHANT = "merchant"
MEMBER = "member"
SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    role: str
    merchant_id: int | None = None
    """The merchant a merchant key belongs to, or that minted a member's token."""
    member_id: int | None = None
    subject: str = ""
    """What authenticated: an API key id, a token subject."""

    @property
    def initiator(self) -> str:
        """The namespace of this caller's idempotency keys."""
        if self.role == MERCHANT:
            return f"merchant:{self.merchant_id}"
        if self.role == MEMBER:
            return f"member:{self.member_id}"
        if self.role == SYSTEM:
            return f"system:{self.subject}"
        return self.role

    @property
    def is_merchant(self) -> bool:
        return self.role == MERCHANT and self.merchant_id is not None


SYSTEM_EXPIRY = Actor(role=SYSTEM, subject="expiry")
