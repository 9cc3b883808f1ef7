"""Budget periods are fixed UTC windows; defaults and tenant budgets become a key's ``Limits``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from router.auth.keys import LimitPolicy, Limits, principal_from_record
from router.limits.memory import period_bounds


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("1h", ts(2026, 11, 30, 5, 59, 59), ts(2026, 11, 30, 5), ts(2026, 11, 30, 6)),
    ("1h", ts(2026, 11, 30, 6), ts(2026, 11, 30, 6), ts(2026, 11, 30, 7)),
    ("1d", ts(2026, 11, 30, 23, 59), ts(2026, 11, 30), ts(2026, 12, 1)),
    ("daily", ts(2026, 12, 31, 12), ts(2026, 12, 31), ts(2027, 1, 1)),
    ("7d", ts(2026, 11, 30, 4), ts(2026, 11, 30), ts(2026, 12, 7)),  # 2026-11-30 is a Monday
    ("7d", ts(2026, 12, 6, 23, 59), ts(2026, 11, 30), ts(2026, 12, 7)),
    ("7d", ts(2026, 11, 29, 23), ts(2026, 11, 23), ts(2026, 11, 30)),
    ("monthly", ts(2026, 12, 31, 23), ts(2026, 12, 1), ts(2027, 1, 1)),
])
def test_period_bounds(period: str, now: float, start: float, end: float) -> None:
    assert period_bounds(period, now) == (start, end)


def test_thirty_day_windows_tile_time_from_the_epoch() -> None:
    now = ts(2026, 11, 30, 4, 45)
    start, end = period_bounds("30d", now)
    assert end - start == 30 * 86_400 and start <= now < end and start % (30 * 86_400) == 0
    assert period_bounds("30d", end) == (end, end + 30 * 86_400)


@dataclass
class Record:
    id: str = "key_1"
    name: str = "k"
    tenant: str = "acme"
    secret_hash: str = "0" * 64
    allowed_models: list[str] = field(default_factory=list)
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    revoked_at: float | None = None


POLICY = LimitPolicy(default_rpm=100, default_tpm=5000, default_budget_usd=10.0, default_budget_period="30d",
                     tenant_budgets={"acme": (50.0, "monthly")})


def test_defaults_fill_only_what_a_key_leaves_unset() -> None:
    assert principal_from_record(Record(tenant="other"), POLICY).limits == Limits(
        rpm=100, tpm=5000, budget_usd=10.0, budget_period="30d")
    own = principal_from_record(Record(tenant="other", rpm=5, budget_usd=1.0, budget_period="1h"), POLICY)
    assert own.limits == Limits(rpm=5, tpm=5000, budget_usd=1.0, budget_period="1h")
    assert principal_from_record(Record(tenant="other")).limits.unlimited  # no policy: as before


def test_a_tenant_budget_rides_on_every_key_of_the_tenant() -> None:
    limits = principal_from_record(Record(rpm=1), LimitPolicy(tenant_budgets={"acme": (50.0, "monthly")})).limits
    assert limits == Limits(rpm=1, tenant="acme", tenant_budget_usd=50.0, tenant_budget_period="monthly")
    only_tenant = principal_from_record(Record(), LimitPolicy(tenant_budgets={"acme": (5.0, None)})).limits
    assert not only_tenant.unlimited


def test_unknown_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        Limits(budget_usd=1.0, budget_period="weekly")
    with pytest.raises(ValueError):
        Limits(tenant="a", tenant_budget_usd=1.0, tenant_budget_period="2d")
