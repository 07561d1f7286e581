"""Monthly usage limits: tiers, overrides, hard and soft crossings, UTC month resets, and a
call's budget checked at the end of a turn."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import InvalidArgument
from common.pricing import DEFAULT_BOOK
from common.usage_limits import (
    MINUTES,
    SPEND,
    MonthToDate,
    UsageLimitBook,
    UsageLimits,
    UsageLimitSettings,
    crossings,
    next_reset,
)
from gateway.usage_fold import UsageFold
from gateway.usage_quota import CallBudget


def test_resets_are_the_first_of_the_next_utc_month() -> None:
    assert next_reset(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_reset(datetime(2026, 2, 1, 0, 0, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)


def test_hard_before_soft_and_unlimited_is_zero() -> None:
    limits = UsageLimits("t", monthly_call_minutes=100, monthly_spend_cap_micros=10_000_000)
    assert crossings(limits, 79 * 60, 7_999_999) == []
    soft = crossings(limits, 80 * 60, 0)
    assert [(c.limit, c.hard) for c in soft] == [(MINUTES, False)]
    both = crossings(limits, 85 * 60, 10_000_000)
    assert [(c.limit, c.hard) for c in both] == [(SPEND, True), (MINUTES, False)]
    assert crossings(UsageLimits("enterprise"), 10**9, 10**15) == []


def test_overrides_apply_to_one_tenant_and_are_checked() -> None:
    book = UsageLimitBook.from_settings(
        UsageLimitSettings(usage_limit_overrides='{"acme": {"monthly_call_minutes": 5}}')
    )
    assert book.limits_for("acme", "pro").monthly_call_minutes == 5
    assert book.limits_for("acme", "pro").monthly_spend_cap_micros == 1_000_000_000  # the tier's
    assert book.limits_for("other", "pro").monthly_call_minutes == 20_000
    assert book.limits_for("other", "mystery").tier == "free"
    with pytest.raises(InvalidArgument, match="may set"):
        UsageLimitBook(overrides={"acme": {"max_calls": 1}})
    with pytest.raises(InvalidArgument, match="not JSON"):
        UsageLimitBook.from_settings(UsageLimitSettings(usage_limit_overrides="{"))


def test_a_calls_budget_counts_its_own_minutes_and_priced_usage() -> None:
    limits = UsageLimits("t", monthly_call_minutes=10, monthly_spend_cap_micros=1_000_000)
    budget = CallBudget(limits, MonthToDate(call_seconds=9 * 60, cost_micros=990_000), DEFAULT_BOOK)
    fold = UsageFold()
    start = budget._started
    assert budget.crossed(fold, now=start + 30) is None
    crossed = budget.crossed(fold, now=start + 60)
    assert crossed is not None and crossed.limit == MINUTES
    fold.tts_chunk(1, "x" * 400, "elevenlabs", "", 0.0)  # 400 chars x $0.10/1k = 40_000 micros
    crossed = budget.crossed(fold, now=start + 1)
    assert crossed is not None and crossed.limit == SPEND
    assert (
        budget.after_turn(fold)
        == "the tenant reached its monthly spend cap; the call ended after the agent's turn"
    )
