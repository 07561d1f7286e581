"""The gateway's view of tenancy: agent config from tenant_svc (through the Redis config cache),
call admission under the tenant's quotas, and the call record written when a call ends.

Every tenant_svc request carries the caller's own context (tenant, credential) through the
channel pool's client interceptors, so tenant_svc's RLS and RBAC apply to the gateway as well.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import redis.asyncio as aioredis
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import Counter

from common import context
from common.config_cache import ConfigCache, config_name
from common.discovery import ChannelPool, Resolver, StaticResolver
from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VoiceAIError,
)
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from common.interceptors import STATUS_DETAILS_KEY
from common.plans import PlanBook, tier_name
from common.pricing import PricingSettings, book_from_settings
from common.quotas import Lease, QuotaSettings, TenantQuotas
from common.readiness import CheckDependency, Dependency
from common.redis_conn import RedisSettings, open_redis
from common.settings import DiscoverySettings
from common.usage_limits import UsageLimitBook, UsageLimitSettings
from gateway.agents import DEMO_AGENT, Agent, AgentCatalog, TurnTakingProfile
from gateway.call_record import CallRecordBuilder
from gateway.history_crypto import HistorySealer
from gateway.phrase_store import RedisPhraseStore
from gateway.records.delivery import INTERRUPTED_REASON, RecordDelivery, RecordSettings
from gateway.records.outbox import Snapshot, default_outbox_path
from gateway.resilient_history import FallbackConversationStore
from gateway.session.history import ConversationStore
from gateway.session.redis_history import RedisConversationStore
from gateway.usage_quota import CallBudget, UsageGuard

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 3.0
LAST_GOOD_MAX = 10_000
STALE_CONFIGS = Counter(
    "voiceai_gateway_stale_configs_total",
    "Agent/tenant configs served from the last known copy (tenant_svc down)",
)


def _translate(error: grpc.aio.AioRpcError, what: str) -> VoiceAIError:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} not found in this tenant")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details or f"not allowed to read {what}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details or "the credential was not accepted")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the tenant's API rate: the caller's to know
        return ResourceExhausted(
            details or "the tenant is over its request rate; retry shortly",
            retry_after_s=retry_after_of(error),
            quota_subject="requests_per_minute",
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the tenant service could not be reached to load {what}; retry shortly")
    return Unavailable(f"the tenant service failed to load {what} ({code.name}); retry shortly")


def retry_after_of(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay a peer attached to ``error`` (google.rpc details), if any."""
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    if not isinstance(raw, bytes):
        return None
    for detail in status_pb2.Status.FromString(raw).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def agent_from_tenant(agent: pb.Agent, agent_id: str) -> Agent:
    """tenant_svc's Agent -> the frozen config a call runs with."""
    profile = TurnTakingProfile()
    return Agent(
        agent_id=agent_id,
        system_prompt=agent.system_prompt,
        greeting=agent.greeting,
        voice=agent.voice,
        language_code=agent.language_code or "en-US",
        keyterms=tuple(agent.keyterms),
        turn_taking=profile,
        llm_model=agent.llm_model,
        max_tokens=agent.max_tokens,
        context_token_budget=agent.context_token_budget,
        stt_providers=tuple(agent.stt_providers),
        llm_providers=tuple(agent.llm_providers),
        tts_providers=tuple(agent.tts_providers),
        stt_model=agent.stt_model,
        tts_model=agent.tts_model,
        transfer_number=agent.transfer_number,
        redact_pii=agent.redact_pii,
    )


class TenantServiceCatalog:
    """Agents of the caller's tenant, read from tenant_svc via the Redis config cache.

    ``demo`` stays available to every tenant as a built-in sample agent.
    """

    def __init__(
        self, pool: ChannelPool, cache: ConfigCache | None = None, quotas: TenantQuotas | None = None
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._quotas = quotas
        # The last config loaded per (tenant, kind, id), served while tenant_svc is unreachable.
        self._last_good: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    async def _load(self, request_name: str, what: str, method: str) -> bytes:
        async with self._pool.stream() as channel:
            stub = svc_grpc.TenantServiceStub(channel)
            try:
                if method == "agent":
                    reply: pb.Agent | pb.Tenant = await stub.GetAgent(
                        svc.GetAgentRequest(name=request_name), timeout=RPC_TIMEOUT_S
                    )
                else:
                    reply = await stub.GetTenant(
                        svc.GetTenantRequest(name=request_name), timeout=RPC_TIMEOUT_S
                    )
            except grpc.aio.AioRpcError as e:
                raise _translate(e, what) from e
        return reply.SerializeToString()

    async def _cached(self, tenant_id: str, kind: str, resource_id: str, name: str) -> bytes:
        async def load() -> bytes:
            return await self._load(name, f"{kind} {resource_id!r}", kind)

        key = (tenant_id, kind, resource_id)
        try:
            if self._cache is None:
                raw = await load()
            else:
                raw = await self._cache.get_or_load(tenant_id, config_name(kind, resource_id), load)
        except Unavailable as e:
            # Issue 15: tenant_svc (or its database) is down: a config this process has seen is
            # served rather than refusing the call; a change made meanwhile applies once it is back.
            stale = self._last_good.get(key)
            if stale is None:
                raise
            STALE_CONFIGS.inc()
            log.warning("serving the last known %s %s: %s", kind, resource_id, e.message)
            return stale
        self._last_good[key] = raw
        self._last_good.move_to_end(key)
        while len(self._last_good) > LAST_GOOD_MAX:
            self._last_good.popitem(last=False)
        return raw

    async def get(self, tenant_id: str, agent_id: str) -> Agent:
        if agent_id == DEMO_AGENT.agent_id:
            agent = DEMO_AGENT
        else:
            if not agent_id or not context.valid_id(agent_id):
                raise InvalidArgument("config.agent_id must be an agent id of this tenant")
            raw = await self._cached(tenant_id, "agent", agent_id, f"tenants/{tenant_id}/agents/{agent_id}")
            agent = agent_from_tenant(pb.Agent.FromString(raw), agent_id)
        if self._quotas is not None:
            await self._apply_plan(tenant_id)
        return agent

    async def _apply_plan(self, tenant_id: str) -> None:
        assert self._quotas is not None
        try:
            raw = await self._cached(tenant_id, "tenant", tenant_id, f"tenants/{tenant_id}")
        except NotFound as e:
            raise FailedPrecondition(
                "this tenant is not registered with the tenant service; create it first"
            ) from e
        tier = tier_name(pb.Tenant.FromString(raw).plan_tier)
        self._quotas.plans.assign(tenant_id, tier)


class CallLedger:
    """Admits a call under its tenant's quotas; writes its record durably as it goes (through
    ``gateway.records``: on-disk outbox, then tenant_svc with the gateway's own credential) and
    releases the slot when it ends. The caller never waits for bookkeeping."""

    def __init__(
        self, pool: ChannelPool | None, quotas: TenantQuotas | None, usage: UsageGuard | None = None
    ) -> None:
        self._pool = pool
        self._quotas = quotas
        self._usage = usage  # monthly usage quotas (issue 17)
        self._pending: set[asyncio.Task[None]] = set()
        self.records: RecordDelivery | None = None  # set by ``start_records``
        self._live: dict[tuple[str, str], CallRecordBuilder] = {}
        # Set when the gateway drains: a call that ends without an outcome then (its grace ran
        # out) is recorded as interrupted by the stop, like one a crash left behind.
        self.stopping = False

    async def start_records(
        self, path: Path, credential: Callable[[str], str] | None, settings: RecordSettings
    ) -> int:
        """Opens the record outbox and starts delivering (only when tenant_svc is configured)."""
        if self._pool is None:
            return 0
        self.records = RecordDelivery.at(self._pool, path, credential, settings)
        return await self.records.start()

    async def usage_budget(self, tenant_id: str) -> CallBudget | None:
        """Before ``admit``: RESOURCE_EXHAUSTED at a monthly usage limit, else the call's budget."""
        return await self._usage.admit(tenant_id) if self._usage is not None else None

    async def admit(self, tenant_id: str, call_id: str) -> Lease | None:
        if self._quotas is None:
            return None
        return await self._quotas.start_call(tenant_id, call_id)

    def track(self, tenant_id: str, call_id: str, builder: CallRecordBuilder) -> None:
        """Hook (call start): the record is written now and after every turn, so a gateway that
        dies mid-call leaves one with the turns so far."""
        if self.records is None:
            return
        key = (tenant_id, call_id)
        self._live[key] = builder
        builder.on_turn = lambda: self._snapshot(key)
        self._snapshot(key)

    def _snapshot(self, key: tuple[str, str]) -> None:
        builder = self._live.get(key)
        if builder is None or self.records is None:
            return
        snapshot = Snapshot(
            key[0], key[1], builder.next_revision(), False, builder.progress().SerializeToString()
        )
        self._spawn(self.records.put(snapshot), f"call-record-snapshot:{key[1][:8]}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def finish(self, lease: Lease | None, tenant_id: str, call_id: str, call: pb.Call) -> None:
        """Hook (call end): releases the slot and queues the final record; never raises."""
        if self.stopping and call.status == pb.CALL_STATUS_FAILED and call.end_reason == "error":
            call.status = pb.CALL_STATUS_INTERRUPTED
            call.end_reason = INTERRUPTED_REASON
        builder = self._live.pop((tenant_id, call_id), None)
        revision = 1
        if builder is not None:
            builder.on_turn = None
            revision = builder.next_revision()
        snapshot = Snapshot(tenant_id, call_id, revision, True, call.SerializeToString())
        self._spawn(self._finish(lease, snapshot), f"call-record:{call_id[:8]}")

    async def _finish(self, lease: Lease | None, snapshot: Snapshot) -> None:
        if lease is not None:
            try:
                await lease.release()
            except VoiceAIError as e:  # the lease expires by itself
                log.warning("call slot not released: %s", e.message)
        if self.records is not None:
            await self.records.put(snapshot)

    async def close(self, timeout: float = 5.0) -> None:
        """Waits for records being queued (drain), delivers what it can, keeps the rest on disk."""
        if self._pending:
            _done, late = await asyncio.wait(set(self._pending), timeout=timeout)
            for task in late:
                task.cancel()
        if self.records is not None:
            await self.records.close(timeout)
            self.records = None


def usage_guard(pool: ChannelPool, quotas: TenantQuotas | None) -> UsageGuard:
    """Monthly usage limits by the tenant's plan tier (known once its agent was loaded)."""

    def tier_of(tenant_id: str) -> str:
        return quotas.plans.plan_for(tenant_id).tier if quotas is not None else "free"

    limits = UsageLimitBook.from_settings(UsageLimitSettings())
    return UsageGuard(pool, limits, book_from_settings(PricingSettings()), tier_of)


class Tenancy:
    """What the gateway uses when tenant_svc and Redis are configured (any part may be absent:
    then the gateway serves built-in or inline agents, in-memory history, no quotas)."""

    def __init__(
        self,
        *,
        catalog: TenantServiceCatalog | None = None,
        ledger: CallLedger | None = None,
        store: ConversationStore | None = None,
        closers: list[Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self.store = store
        self._closers = closers or []
        self.phrases: RedisPhraseStore | None = None  # issue 17: phrase audio shared across pods
        self.redis: aioredis.Redis | None = None  # set by ``build`` when Redis is configured

    def dependencies(self) -> list[Dependency]:
        """What readiness needs: Redis, when call admission fails closed without it (the default);
        with a fail-open policy the gateway can admit calls without Redis, so stays ready."""
        if self.redis is None or QuotaSettings().concurrency_on_redis_error != "closed":
            return []
        return [CheckDependency("redis", self.redis.ping)]

    @classmethod
    def build(
        cls, resolver: Resolver, discovery: DiscoverySettings, redis_settings: RedisSettings
    ) -> Tenancy:
        redis = open_redis(redis_settings) if redis_settings.url else None
        cache = quotas = store = None
        phrases: RedisPhraseStore | None = None
        redis_store: RedisConversationStore | None = None
        closers: list[Callable[[], Awaitable[None]]] = []
        if redis is not None:
            prefix = redis_settings.key_prefix
            cache = ConfigCache(redis, prefix=prefix)
            quotas = TenantQuotas(redis, PlanBook(), QuotaSettings(), prefix=prefix)
            # Issue 15: a Redis outage does not end live calls (in-process copy, written back).
            redis_store = RedisConversationStore(redis, prefix=prefix)
            store = FallbackConversationStore(redis_store)
            phrases = RedisPhraseStore(redis, prefix)
            closers.append(redis.aclose)
        # Tenancy is on when tenant_svc can be found: static addresses, or any dynamic resolver
        # (Consul), which finds `voiceai-tenant` itself.
        if isinstance(resolver, StaticResolver) and not discovery.static_map().get("tenant"):
            ledger = CallLedger(None, quotas) if quotas else None
            if ledger is not None:
                closers.insert(0, ledger.close)
            built = cls(store=store, ledger=ledger, closers=closers)
            built.phrases = phrases
            built.redis = redis
            return built
        pool = ChannelPool("tenant", resolver)
        if redis_store is not None:  # data protection: history sealed with the tenant's keys
            redis_store.codec = HistorySealer(pool)
        ledger = CallLedger(pool, quotas, usage_guard(pool, quotas))
        closers[:0] = [ledger.close, pool.close]
        built = cls(
            catalog=TenantServiceCatalog(pool, cache, quotas),
            ledger=ledger,
            store=store,
            closers=closers,
        )
        built.phrases = phrases
        built.redis = redis
        return built

    async def start(self, port: int, credential: Callable[[str], str] | None, worker: int = -1) -> None:
        """Starts durable record delivery (when tenant_svc is configured); see gateway/records."""
        if self.ledger is None:
            return
        settings = RecordSettings()
        if not settings.outbox_path and port == 0:
            # An ephemeral port names no stable file: such a process (tests) gets a private one
            # that does not outlive it.
            scratch = tempfile.TemporaryDirectory(prefix="voiceai-records-")
            self._closers.append(_async(scratch.cleanup))
            path = Path(scratch.name) / "outbox.sqlite3"
        else:
            path = default_outbox_path(settings.outbox_path, port, worker=worker)
        found = await self.ledger.start_records(path, credential, settings)
        if found:
            log.warning(
                "record outbox %s: %d calls interrupted by the last stop, recorded as such", path, found
            )

    async def close(self) -> None:
        for close in self._closers:
            await close()


def _async(fn: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()

    return run


__all__ = ["AgentCatalog", "CallLedger", "Tenancy", "TenantServiceCatalog", "agent_from_tenant"]
