"""Requests per minute per tenant on the tenant API, by the tenant's plan (GCRA in Redis).

Checked inside each handler, i.e. after the credential was verified: requests with a bad
credential never spend a tenant's quota. The tenant's tier is read from PostgreSQL and kept
for ``tier_ttl_s`` (a plan change applies within that time).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from common import context
from common.plans import tier_name
from common.quotas import TenantQuotas
from tenant_svc.repository import Repository

T = TypeVar("T")


class TenantRateLimit:
    """Per-tenant request rate limit by plan tier (tiers cached for a while)."""

    def __init__(self, quotas: TenantQuotas, repo: Repository, tier_ttl_s: float = 30.0) -> None:
        self._quotas = quotas
        self._repo = repo
        self._ttl = tier_ttl_s
        self._tiers: dict[str, tuple[float, str]] = {}

    async def _tier(self, tenant_id: str) -> str:
        cached = self._tiers.get(tenant_id)
        now = time.monotonic()
        if cached is None or cached[0] < now:
            async with self._repo.tenant(tenant_id) as scope:
                tier = tier_name((await scope.get_tenant()).plan_tier)
            if len(self._tiers) > 10_000:
                self._tiers.clear()
            self._tiers[tenant_id] = cached = (now + self._ttl, tier)
            self._quotas.plans.assign(tenant_id, tier)
        return cached[1]

    async def admit(self) -> None:
        """RESOURCE_EXHAUSTED with a retry hint when the bound tenant is over its rate."""
        bound = context.current()
        if bound is None or not bound.tenant_id:
            return  # platform requests name no tenant
        await self._tier(bound.tenant_id)
        await self._quotas.check_rate(bound.tenant_id, bucket="api")


def rate_limited(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """For servicer methods: ``self._rate`` (a TenantRateLimit or None) admits the request first."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, ctx: Any) -> T:
        if self._rate is not None:
            await self._rate.admit()
        return await method(self, request, ctx)

    return wrapper
