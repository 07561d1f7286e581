"""Usage quotas by plan: monthly call minutes and a monthly spend cap, per tier and per tenant.

Declared data like ``common.plans``: ``USAGE_LIMITS`` per tier, ``UsageLimitBook`` applies
per-tenant overrides (``VOICEAI_USAGE_LIMIT_OVERRIDES``, JSON). Zero means unlimited. Months are
UTC calendar months, the ledger's attribution rule, so a limit resets at 00:00 UTC on the 1st.
``soft_fraction`` (80 %) is where an alert fires before the hard limit refuses or ends calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType

from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import InvalidArgument

MINUTES = "monthly_call_minutes"
SPEND = "monthly_spend_cap"


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """One tier's (or tenant's) monthly limits; 0 = unlimited."""

    tier: str
    monthly_call_minutes: int = 0
    monthly_spend_cap_micros: int = 0
    soft_fraction: float = 0.8  # a ratio for an alert, not money

    def __post_init__(self) -> None:
        if self.monthly_call_minutes < 0 or self.monthly_spend_cap_micros < 0:
            raise InvalidArgument(f"usage limits of '{self.tier}' must be >= 0 (0 = unlimited)")
        if not 0 < self.soft_fraction <= 1:
            raise InvalidArgument(f"usage limits of '{self.tier}': soft_fraction must be in (0, 1]")


USAGE_LIMITS: Mapping[str, UsageLimits] = MappingProxyType(
    {
        "free": UsageLimits("free", monthly_call_minutes=60, monthly_spend_cap_micros=2_000_000),
        "pro": UsageLimits("pro", monthly_call_minutes=20_000, monthly_spend_cap_micros=1_000_000_000),
        "enterprise": UsageLimits("enterprise"),
    }
)
_OVERRIDABLE = frozenset({"monthly_call_minutes", "monthly_spend_cap_micros", "soft_fraction"})


class UsageLimitSettings(BaseSettings):
    """Per-tenant overrides (env prefix VOICEAI_): ``{"tenant": {"monthly_call_minutes": 500}}``."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    usage_limit_overrides: str = ""


class UsageLimitBook:
    """The limits for each tenant: its tier's, with its overrides."""

    def __init__(
        self,
        tiers: Mapping[str, UsageLimits] = USAGE_LIMITS,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self._tiers = dict(tiers)
        self._overrides = {t: dict(o) for t, o in (overrides or {}).items()}
        for tenant, fields in self._overrides.items():
            unknown = set(fields) - _OVERRIDABLE
            if unknown:
                raise InvalidArgument(
                    f"usage limit overrides of {tenant} may set {sorted(_OVERRIDABLE)}, not {sorted(unknown)}"
                )

    @classmethod
    def from_settings(cls, settings: UsageLimitSettings) -> UsageLimitBook:
        """Tier defaults with the overrides from the environment."""
        if not settings.usage_limit_overrides:
            return cls()
        try:
            raw = json.loads(settings.usage_limit_overrides)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"VOICEAI_USAGE_LIMIT_OVERRIDES is not JSON: {e}") from e
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise InvalidArgument('VOICEAI_USAGE_LIMIT_OVERRIDES must be {"<tenant>": {"<limit>": <number>}}')
        return cls(overrides=raw)

    def limits_for(self, tenant_id: str, tier: str) -> UsageLimits:
        """The tenant's limits on ``tier`` (an unknown tier gets the free tier's)."""
        base = self._tiers.get(tier) or self._tiers["free"]
        fields = self._overrides.get(tenant_id)
        if not fields:
            return base
        return replace(
            base,
            monthly_call_minutes=int(fields.get("monthly_call_minutes", base.monthly_call_minutes)),
            monthly_spend_cap_micros=int(
                fields.get("monthly_spend_cap_micros", base.monthly_spend_cap_micros)
            ),
            soft_fraction=float(fields.get("soft_fraction", base.soft_fraction)),
        )


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the first of ``now``'s UTC month."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_reset(now: datetime) -> datetime:
    """When monthly limits reset: 00:00 UTC on the first of the next UTC month."""
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


@dataclass(frozen=True, slots=True)
class MonthToDate:
    """A tenant's usage so far this month, from the ledger."""

    call_seconds: float
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Crossing:
    """A limit that usage has reached: which, how much of it, and the words for a person."""

    limit: str
    used: float
    allowed: float
    hard: bool

    def describe(self, reset: datetime) -> str:
        """What was reached and when it resets, for a status message."""
        when = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.limit == MINUTES:
            return f"{self.used:.0f} of {self.allowed:.0f} call minutes this month; resets {when}"
        return f"${self.used / 1e6:.2f} of the ${self.allowed / 1e6:.2f} monthly spend cap; resets {when}"


def crossings(limits: UsageLimits, call_seconds: float, cost_micros: int) -> list[Crossing]:
    """Hard (at or over 100 %) and soft (at or over ``soft_fraction``) crossings, hard first."""
    out: list[Crossing] = []
    checks = (
        (MINUTES, call_seconds / 60.0, limits.monthly_call_minutes),
        (SPEND, cost_micros, limits.monthly_spend_cap_micros),
    )
    for name, used, allowed in checks:
        if allowed <= 0:
            continue
        if used >= allowed:
            out.insert(0, Crossing(name, float(used), float(allowed), hard=True))
        elif used >= allowed * limits.soft_fraction:
            out.append(Crossing(name, float(used), float(allowed), hard=False))
    return out


__all__ = [
    "MINUTES",
    "SPEND",
    "USAGE_LIMITS",
    "Crossing",
    "MonthToDate",
    "UsageLimitBook",
    "UsageLimitSettings",
    "UsageLimits",
    "crossings",
    "month_start",
    "next_reset",
]
