"""Usage quotas and spend caps at the gateway: checked when a call is admitted, enforced at the
end of each of its turns.

Admission reads the tenant's month-to-date usage from tenant_svc's ledger (``GetUsage``, with
the caller's own credential; cached a few seconds per tenant) and refuses a tenant at a hard
limit with RESOURCE_EXHAUSTED and a QuotaFailure naming the limit and when it resets. An
admitted call gets a ``CallBudget``: what was left at admission. At the end of each turn (never
mid-word) the call's own minutes and cost so far, priced with the operator's book, are added;
a call that reaches a hard limit is ended with END_REASON_QUOTA. Calls running at once each
measure against what was left when they started, so together they may overshoot by at most
their own last turns (documented in docs/architecture.md).

The ledger being unreachable admits the call (failing open, counted): quotas are accounting,
not safety, and a tenant_svc outage must not stop every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import grpc.aio
from prometheus_client import Counter

from common.discovery import ChannelPool
from common.errors import ResourceExhausted, VoiceAIError
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from common.pricing import PriceBook
from common.usage_limits import (
    MINUTES,
    Crossing,
    MonthToDate,
    UsageLimitBook,
    UsageLimits,
    crossings,
    month_start,
    next_reset,
)
from gateway.usage_fold import UsageFold

log = logging.getLogger(__name__)

USAGE_QUOTA_DECISIONS = Counter(
    "voiceai_usage_quota_decisions_total",
    "Usage quota checks by limit, plan tier and outcome (allowed, soft, denied, ended, failed_open).",
    ["limit", "tier", "outcome"],
)
SOFT_LIMIT_EVENTS = Counter(
    "voiceai_usage_soft_limit_reached_total",
    "A tenant passed the soft share (80 %) of a monthly usage limit (once per tenant, limit, month and process).",
    ["limit", "tier"],
)
RPC_TIMEOUT_S = 2.0


class CallBudget:
    """What one call may still use: the tenant's limits minus its month-to-date at admission."""

    __slots__ = ("_book", "_on_end", "_started", "limits", "month_to_date")

    def __init__(
        self,
        limits: UsageLimits,
        month_to_date: MonthToDate,
        book: PriceBook,
        on_end: Callable[[Crossing], None] | None = None,
    ) -> None:
        self.limits = limits
        self.month_to_date = month_to_date
        self._book = book
        self._on_end = on_end
        self._started = time.monotonic()

    def crossed(self, usage: UsageFold, now: float | None = None) -> Crossing | None:
        """The hard limit this call has taken the tenant to, if any (call at a turn's end)."""
        elapsed = (now if now is not None else time.monotonic()) - self._started
        cost = sum(self._book.cost_of(line) or 0 for line in usage.lines())
        total = crossings(
            self.limits,
            self.month_to_date.call_seconds + elapsed,
            self.month_to_date.cost_micros + cost,
        )
        return total[0] if total and total[0].hard else None

    def after_turn(self, usage: UsageFold) -> str | None:
        """At a turn's end: why the call must end now (a hard limit reached), else None."""
        crossing = self.crossed(usage)
        if crossing is None:
            return None
        if self._on_end is not None:
            self._on_end(crossing)
        what = "monthly call minutes" if crossing.limit == MINUTES else "monthly spend cap"
        return f"the tenant reached its {what}; the call ended after the agent's turn"


class UsageGuard:
    """Admission checks against monthly usage limits (see module docstring)."""

    def __init__(
        self,
        pool: ChannelPool,
        limits: UsageLimitBook,
        book: PriceBook,
        tier_of: Callable[[str], str],
        *,
        cache_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._limits = limits
        self._book = book
        self._tier_of = tier_of
        self._cache_s = cache_s
        self._clock = clock
        self._seen: dict[str, tuple[float, MonthToDate]] = {}
        self._soft_fired: set[tuple[str, str, str]] = set()

    async def _month_to_date(self, tenant_id: str) -> MonthToDate:
        cached = self._seen.get(tenant_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        request = us.GetUsageRequest(parent=f"tenants/{tenant_id}")
        request.start_time.FromDatetime(month_start(self._clock()))
        async with self._pool.stream() as channel:
            reply = await us_grpc.UsageServiceStub(channel).GetUsage(request, timeout=RPC_TIMEOUT_S)
        used = MonthToDate(reply.call_seconds, reply.cost_micros)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[tenant_id] = (now + self._cache_s, used)
        return used

    async def admit(self, tenant_id: str) -> CallBudget | None:
        """The call's budget; RESOURCE_EXHAUSTED at a hard limit; None when nothing limits it."""
        tier = self._tier_of(tenant_id)
        limits = self._limits.limits_for(tenant_id, tier)
        if not limits.monthly_call_minutes and not limits.monthly_spend_cap_micros:
            return None
        try:
            used = await self._month_to_date(tenant_id)
        except (grpc.aio.AioRpcError, VoiceAIError) as e:
            USAGE_QUOTA_DECISIONS.labels("any", tier, "failed_open").inc()
            log.warning("usage quota not checked (admitting the call): %s", getattr(e, "message", e))
            return None
        now = self._clock()
        found = crossings(limits, used.call_seconds, used.cost_micros)
        for crossing in found:
            if not crossing.hard:
                self._soft(tenant_id, tier, crossing, now)
        if found and found[0].hard:
            crossing = found[0]
            USAGE_QUOTA_DECISIONS.labels(crossing.limit, tier, "denied").inc()
            reset = next_reset(now)
            raise ResourceExhausted(
                f"this tenant has used {crossing.describe(reset)} ({tier} plan); new calls are refused until then",
                retry_after_s=max(0.0, (reset - now).total_seconds()),
                quota_subject=crossing.limit,
                quota_description=crossing.describe(reset),
            )
        USAGE_QUOTA_DECISIONS.labels("any", tier, "allowed").inc()
        return CallBudget(limits, used, self._book, lambda crossing: self.ended(tenant_id, crossing))

    def ended(self, tenant_id: str, crossing: Crossing) -> None:
        """A call was ended at a hard limit: count it and make the next admission re-read."""
        USAGE_QUOTA_DECISIONS.labels(crossing.limit, self._tier_of(tenant_id), "ended").inc()
        self._seen.pop(tenant_id, None)

    def _soft(self, tenant_id: str, tier: str, crossing: Crossing, now: datetime) -> None:
        key = (tenant_id, crossing.limit, now.strftime("%Y-%m"))
        if key in self._soft_fired:
            return
        if len(self._soft_fired) > 100_000:
            self._soft_fired.clear()
        self._soft_fired.add(key)
        SOFT_LIMIT_EVENTS.labels(crossing.limit, tier).inc()
        USAGE_QUOTA_DECISIONS.labels(crossing.limit, tier, "soft").inc()
        log.warning(
            "usage soft limit: tenant %s at %s (%.0f%% of the limit)",
            tenant_id,
            crossing.limit,
            100 * crossing.used / crossing.allowed,
        )


def end_after_turn(budget: CallBudget | None, usage: UsageFold) -> str | None:
    """The hook CallSession calls when a turn's reply has played out: why to end, or None."""
    return budget.after_turn(usage) if budget is not None else None


__all__ = ["SOFT_LIMIT_EVENTS", "USAGE_QUOTA_DECISIONS", "CallBudget", "UsageGuard", "end_after_turn"]
