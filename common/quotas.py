"""Per-tenant quotas in Redis: concurrent calls (leases) and requests per minute (GCRA).

Concurrency: a sorted set per tenant, member = lease id, score = expiry (ms, Redis server
clock, so hosts with skewed clocks agree). One Lua script purges expired leases and admits or
refuses atomically, so N racing acquires for limit L admit exactly L. A holder renews its lease
every ttl/3; a process that dies stops renewing and its slot frees itself after the TTL.

Rate: GCRA (generic cell rate algorithm) rather than a sliding-window log. GCRA keeps one number
per tenant (the theoretical arrival time of the next request) where a log keeps one sorted-set
member per request in the window (6000 for an enterprise tenant, trimmed on every check); it
answers with the exact time until the next request would conform (the retry hint), and has no
window edges to burst across. Its meaning is "a sustained pace of N per minute after an
initial burst of B": any 60 s window admits at most N + B requests.

Redis unreachable (``QuotaSettings``): rate checks fail OPEN by default (a rate limit protects
against abuse, not capacity; refusing every request because the limiter is down would turn a
Redis outage into a full outage), logged and counted as ``failed_open``. Call admission fails
CLOSED by default (UNAVAILABLE, retryable): a slot granted without Redis is invisible to every
other instance, so a tenant could exceed its paid concurrency unboundedly for the outage's
length; calls already running keep going. Either can be flipped per deployment. A lease
granted open is registered by its first successful heartbeat (if the limit allows then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisError

from common.errors import ResourceExhausted, VoiceAIError
from common.plans import PlanBook
from common.redis_conn import tenant_key, translate
from common.store_metrics import timed
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Policy = Literal["open", "closed"]

QUOTA_DECISIONS = Counter(
    "voiceai_quota_decisions_total",
    "Quota checks by quota, plan tier and outcome (allowed, denied, failed_open, failed_closed)",
    ["quota", "tier", "decision"],
)
LEASES_LOST = Counter(
    "voiceai_quota_leases_lost_total", "Call leases that expired in Redis and could not be re-taken"
)


class QuotaSettings(BaseSettings):
    """How quotas behave; the limits themselves are the tenant's ``Plan``."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_QUOTA_", extra="ignore")

    # A lease dies this long after its holder stops renewing (renewed every third of it).
    lease_ttl_s: float = 30.0
    rate_on_redis_error: Policy = "open"
    concurrency_on_redis_error: Policy = "closed"
    # Retry hint for a tenant at its call limit: calls last minutes, so there is no exact answer.
    concurrency_retry_after_s: float = 5.0


# KEYS[1] lease set; ARGV lease id, limit, ttl ms. Returns {admitted, held, already_held}.
# Re-acquiring a held id renews it; the heartbeat uses this to re-register after a Redis restart.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0
if existed == 0 then
  if held >= tonumber(ARGV[2]) then return {0, held, 0} end
  held = held + 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return {1, held, existed}
"""

# KEYS[1] theoretical arrival time (ms); ARGV emission interval ms, burst.
# Returns {allowed, retry_after_ms, remaining}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, string.format('%.3f', new_tat - now - capacity), 0}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
return {1, '0', math.floor((capacity - (new_tat - now)) / interval)}
"""


class _ThrottledLog:
    """At most one warning per ``every_s``: a Redis outage must not flood the logs."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._every = every_s
        self._last = -every_s

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            log.warning(msg, *args)


class Lease:
    """One held call slot of a tenant: renewed while the call lasts, released when it ends."""

    def __init__(
        self,
        limiter: ConcurrencyLimiter,
        tenant_id: str,
        lease_id: str,
        limit: int,
        ttl_s: float,
        *,
        enforced: bool = True,
    ) -> None:
        self.tenant_id = tenant_id
        self.lease_id = lease_id
        self.limit = limit
        self.ttl_s = ttl_s
        # False while not counted in Redis: granted without it (fail-open) or lost; a good
        # renewal registers it again.
        self.enforced = enforced
        # True when a renewal found the slot gone and the tenant full: the call was not ended.
        self.lost = False
        self.released = False
        self._limiter = limiter
        self._heartbeat: asyncio.Task[None] | None = None

    async def renew(self) -> bool:
        """Push the expiry out by ``ttl_s``; True while the slot is held. A slot that expired
        (e.g. Redis restarted) is re-taken if the tenant has room. Raises ``Unavailable``."""
        admitted, _held, _existed = await self._limiter._run(
            self.tenant_id, self.lease_id, self.limit, self.ttl_s, "quota_renew"
        )
        self.enforced = admitted
        if not admitted and not self.lost:
            LEASES_LOST.inc()
            log.warning("a call lease expired and the tenant is at its limit; the call goes on")
        self.lost = not admitted
        return admitted

    def keep_alive(self) -> None:
        """Renew every ttl/3 in a task owned by this lease (stopped by ``release``)."""
        if self._heartbeat is None and not self.released:
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._beat(), name=f"lease:{self.lease_id[:16]}"
            )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self.renew()
            except VoiceAIError as error:
                # The call goes on; if Redis stays away the slot expires on its own.
                self._limiter._log.warning("lease renewal failed: %s", error.message)

    async def release(self) -> None:
        """Stop renewing and free the slot. Idempotent; never raises for Redis errors (an
        unreleased slot frees itself after ``ttl_s``)."""
        if self.released:
            return
        self.released = True
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        try:
            await self._limiter._redis.zrem(self._limiter.key(self.tenant_id), self.lease_id)
        except RedisError as error:
            self._limiter._log.warning(
                "lease release failed (%s); it frees itself in %.0f s",
                translate(error, "quota_release").message,
                self.ttl_s,
            )

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()


class ConcurrencyLimiter:
    """Concurrent calls per tenant, as leases in one Redis sorted set per tenant."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        on_redis_error: Policy = "closed",
        retry_after_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._policy = on_redis_error
        self._retry_after_s = retry_after_s
        self._script = redis.register_script(_ACQUIRE)
        self._log = _ThrottledLog()

    def key(self, tenant_id: str) -> str:
        return tenant_key(self._prefix, tenant_id, "calls")

    async def _run(
        self, tenant_id: str, lease_id: str, limit: int, ttl_s: float, operation: str
    ) -> tuple[bool, int, bool]:
        key = self.key(tenant_id)
        try:
            with timed("redis", operation):  # metrics + span (issue 16)
                admitted, held, existed = await self._script(
                    keys=[key], args=[lease_id, limit, int(ttl_s * 1000)]
                )
        except RedisError as error:
            raise translate(error, operation) from error
        return bool(admitted), int(held), bool(existed)

    async def acquire(
        self, tenant_id: str, lease_id: str, limit: int, ttl_s: float, *, tier: str = "custom"
    ) -> Lease:
        """Take one of the tenant's ``limit`` slots for ``lease_id`` (re-acquiring renews).

        Raises ``ResourceExhausted`` (with a retry hint) at the limit, ``Unavailable`` when Redis
        cannot be reached and the policy is closed."""
        try:
            admitted, held, _existed = await self._run(tenant_id, lease_id, limit, ttl_s, "quota_acquire")
        except VoiceAIError as error:
            if self._policy == "closed":
                QUOTA_DECISIONS.labels("concurrent_calls", tier, "failed_closed").inc()
                raise
            QUOTA_DECISIONS.labels("concurrent_calls", tier, "failed_open").inc()
            self._log.warning("admitting a call without a concurrency check: %s", error.message)
            return Lease(self, tenant_id, lease_id, limit, ttl_s, enforced=False)
        if not admitted:
            QUOTA_DECISIONS.labels("concurrent_calls", tier, "denied").inc()
            raise ResourceExhausted(
                f"this tenant already has {held} of its {limit} concurrent calls ({tier} plan);"
                f" retry in {self._retry_after_s:.0f} s or when a call ends",
                retry_after_s=self._retry_after_s,
                quota_subject="concurrent_calls",
                quota_description=f"at most {limit} concurrent calls on the {tier} plan",
            )
        QUOTA_DECISIONS.labels("concurrent_calls", tier, "allowed").inc()
        return Lease(self, tenant_id, lease_id, limit, ttl_s)

    async def held(self, tenant_id: str) -> int:
        """Live (unexpired) leases of a tenant."""
        key = self.key(tenant_id)
        try:
            now_s, now_us = await self._redis.time()
            return int(await self._redis.zcount(key, f"({now_s * 1000 + now_us // 1000}", "+inf"))
        except RedisError as error:
            raise translate(error, "quota_count") from error


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer for one request: admitted or not, and when the next one would be."""

    allowed: bool
    retry_after_s: float = 0.0
    # Requests that could still go back to back right now (0 when refused).
    remaining: int = 0


class RateLimiter:
    """Requests per minute per tenant (GCRA, see module docstring), one Redis key per bucket."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, on_redis_error: Policy = "open") -> None:
        self._prefix = prefix
        self._policy = on_redis_error
        self._script = redis.register_script(_GCRA)
        self._log = _ThrottledLog()

    def key(self, tenant_id: str, bucket: str = "requests") -> str:
        return tenant_key(self._prefix, tenant_id, "rate", bucket)

    async def check(
        self, tenant_id: str, per_minute: int, burst: int, *, bucket: str = "requests", tier: str = "custom"
    ) -> RateDecision:
        """Count one request. Raises ``Unavailable`` only when Redis is down and policy is closed."""
        key = self.key(tenant_id, bucket)
        try:
            with timed("redis", "quota_rate"):
                allowed, retry_ms, remaining = await self._script(
                    keys=[key], args=[60_000 / per_minute, burst]
                )
        except RedisError as error:
            failure = translate(error, "quota_rate")
            if self._policy == "closed":
                QUOTA_DECISIONS.labels("requests_per_minute", tier, "failed_closed").inc()
                raise failure from error
            QUOTA_DECISIONS.labels("requests_per_minute", tier, "failed_open").inc()
            self._log.warning("admitting a request without a rate check: %s", failure.message)
            return RateDecision(True)
        decision = RateDecision(bool(allowed), float(retry_ms) / 1000.0, int(remaining))
        QUOTA_DECISIONS.labels("requests_per_minute", tier, "allowed" if allowed else "denied").inc()
        return decision

    async def enforce(
        self, tenant_id: str, per_minute: int, burst: int, *, bucket: str = "requests", tier: str = "custom"
    ) -> None:
        """``check``, raising ``ResourceExhausted`` with the exact retry hint when refused."""
        decision = await self.check(tenant_id, per_minute, burst, bucket=bucket, tier=tier)
        if not decision.allowed:
            raise ResourceExhausted(
                f"this tenant is over its {per_minute} requests per minute ({tier} plan);"
                f" retry in {decision.retry_after_s:.1f} s",
                retry_after_s=decision.retry_after_s,
                quota_subject="requests_per_minute",
                quota_description=f"at most {per_minute} requests per minute on the {tier} plan",
            )


class TenantQuotas:
    """A tenant's plan applied to both limiters: what the gateway calls before work starts."""

    def __init__(
        self, redis: aioredis.Redis, plans: PlanBook, settings: QuotaSettings, *, prefix: str
    ) -> None:
        self.plans = plans
        self.settings = settings
        self.calls = ConcurrencyLimiter(
            redis,
            prefix=prefix,
            on_redis_error=settings.concurrency_on_redis_error,
            retry_after_s=settings.concurrency_retry_after_s,
        )
        self.rate = RateLimiter(redis, prefix=prefix, on_redis_error=settings.rate_on_redis_error)

    async def check_rate(self, tenant_id: str, bucket: str = "requests") -> None:
        plan = self.plans.plan_for(tenant_id)
        await self.rate.enforce(
            tenant_id, plan.requests_per_minute, plan.burst, bucket=bucket, tier=plan.tier
        )

    async def start_call(self, tenant_id: str, call_id: str) -> Lease:
        """Count the request and take a call slot, renewed from now on. The caller owns the
        lease: ``await lease.release()`` when the call ends (``admit_call`` does it for you)."""
        await self.check_rate(tenant_id)
        plan = self.plans.plan_for(tenant_id)
        lease = await self.calls.acquire(
            tenant_id, call_id, plan.max_concurrent_calls, self.settings.lease_ttl_s, tier=plan.tier
        )
        lease.keep_alive()  # no await between acquire and here: nothing can cancel us in between
        return lease

    @contextlib.asynccontextmanager
    async def admit_call(self, tenant_id: str, call_id: str) -> AsyncIterator[Lease]:
        """``start_call`` for the duration of the block."""
        lease = await self.start_call(tenant_id, call_id)
        try:
            yield lease
        finally:
            await lease.release()
