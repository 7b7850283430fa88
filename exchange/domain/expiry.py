"""Expiry policies of a point currency: when a lot earned at a given time expires."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

KINDS = ("never", "days", "months_end")


@dataclass(frozen=True)
class ExpiryPolicy:
    kind: str
    """``never``; ``days`` (N days after earning); ``months_end`` (end of the Nth month)."""
    param: int | None = None
    tz: str = "Asia/Shanghai"
    """The time zone whose calendar defines "end of month"."""

    def validate(self) -> list[str]:
        problems: list[str] = []
        if self.kind not in KINDS:
            problems.append(f"expiry kind must be one of {', '.join(KINDS)}")
        elif self.kind == "never" and self.param is not None:
            problems.append("a currency that never expires takes no period")
        elif self.kind != "never" and (self.param is None or not 1 <= self.param <= 1200):
            problems.append("the expiry period must be between 1 and 1200")
        return problems

    def expires_at(self, earned_at: datetime) -> datetime | None:
        """The instant the points earned at ``earned_at`` expire (``None``: never)."""
        if self.kind == "never":
            return None
        assert self.param is not None
        if self.kind == "days":
            return earned_at + timedelta(days=self.param)
        # End of the Nth month after the month of earning (N=1: end of the next month),
        # i.e. the first instant of the month after that, in the programme's time zone.
        local = earned_at.astimezone(ZoneInfo(self.tz))
        months = local.year * 12 + (local.month - 1) + self.param + 1
        year, month0 = divmod(months, 12)
        start = datetime(year, month0 + 1, 1, tzinfo=ZoneInfo(self.tz))
        return start.astimezone(UTC)


def last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]
