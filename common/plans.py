"""Plan tiers: how many concurrent calls and requests per minute a tenant may use.

Tiers are declared data (``PLANS``); ``PlanBook`` says which tier each tenant is on and applies
per-tenant overrides (a contract with more calls than its tier). Metrics label by tier, never by
tenant id, so their cardinality stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from common.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Plan:
    """The limits of one tier (or of one tenant, after overrides)."""

    tier: str
    max_concurrent_calls: int
    requests_per_minute: int
    # Requests admitted back to back before the per-minute pace applies (the GCRA bucket).
    burst: int

    def __post_init__(self) -> None:
        if self.max_concurrent_calls < 0 or self.requests_per_minute < 1 or self.burst < 1:
            raise InvalidArgument(
                f"plan '{self.tier}': max_concurrent_calls must be >= 0, requests_per_minute and burst >= 1"
            )


PLANS: Mapping[str, Plan] = MappingProxyType(
    {
        "free": Plan("free", max_concurrent_calls=2, requests_per_minute=60, burst=10),
        "pro": Plan("pro", max_concurrent_calls=20, requests_per_minute=600, burst=60),
        "enterprise": Plan("enterprise", max_concurrent_calls=200, requests_per_minute=6000, burst=600),
    }
)

_OVERRIDABLE = frozenset({"max_concurrent_calls", "requests_per_minute", "burst"})


def _check_overrides(fields: Mapping[str, int]) -> None:
    unknown = set(fields) - _OVERRIDABLE
    if unknown:
        raise InvalidArgument(f"plan overrides may set {sorted(_OVERRIDABLE)}, not {sorted(unknown)}")


class PlanBook:
    """Which plan each tenant is on: declared tiers, a tenant -> tier map, per-tenant overrides."""

    def __init__(
        self,
        tiers: Mapping[str, Plan] = PLANS,
        *,
        default_tier: str = "free",
        tenants: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self._tiers = dict(tiers)
        self._default = default_tier
        self._tenants = dict(tenants or {})
        self._overrides = {t: dict(o) for t, o in (overrides or {}).items()}
        for tenant, tier in [("(default)", default_tier), *self._tenants.items()]:
            if tier not in self._tiers:
                raise InvalidArgument(f"tenant {tenant} is on unknown tier '{tier}'")
        for fields in self._overrides.values():
            _check_overrides(fields)
        self._cache: dict[str, Plan] = {}

    def plan_for(self, tenant_id: str) -> Plan:
        plan = self._cache.get(tenant_id)
        if plan is None:
            plan = self._tiers[self._tenants.get(tenant_id, self._default)]
            fields = self._overrides.get(tenant_id)
            if fields:
                # The tier label stays: metrics aggregate by tier, overrides or not.
                plan = Plan(
                    plan.tier,
                    fields.get("max_concurrent_calls", plan.max_concurrent_calls),
                    fields.get("requests_per_minute", plan.requests_per_minute),
                    fields.get("burst", plan.burst),
                )
            if tenant_id in self._tenants or tenant_id in self._overrides:
                self._cache[tenant_id] = plan
        return plan

    def assign(self, tenant_id: str, tier: str, overrides: Mapping[str, int] | None = None) -> None:
        """Put a tenant on a tier (e.g. when tenant_svc reports a plan change)."""
        if tier not in self._tiers:
            raise InvalidArgument(f"unknown tier '{tier}'")
        self._tenants[tenant_id] = tier
        if overrides is not None:
            _check_overrides(overrides)
            self._overrides[tenant_id] = dict(overrides)
        self._cache.pop(tenant_id, None)


# tenant_svc's PlanTier enum values (voiceai.tenant.v1.PlanTier) -> tier names here.
_PLAN_TIER_NAMES = {1: "free", 2: "pro", 3: "enterprise"}


def tier_name(plan_tier: int) -> str:
    """The tier of a tenant_svc ``PlanTier`` value (unspecified or unknown -> free)."""
    return _PLAN_TIER_NAMES.get(plan_tier, "free")
