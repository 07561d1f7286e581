"""The gateway's view of tenancy: agent config from tenant_svc (through the Redis config cache),
call admission under the tenant's quotas, and the call record written when a call ends.

Every tenant_svc request carries the caller's own context (tenant, credential) through the
channel pool's client interceptors, so tenant_svc's RLS and RBAC apply to the gateway as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from common import context
from common.config_cache import ConfigCache, config_name
from common.discovery import ChannelPool, Resolver, StaticResolver
from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    VoiceAIError,
)
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from common.plans import PlanBook, tier_name
from common.pricing import PricingSettings, book_from_settings
from common.quotas import Lease, QuotaSettings, TenantQuotas
from common.redis_conn import RedisSettings, open_redis
from common.settings import DiscoverySettings
from common.usage_limits import UsageLimitBook, UsageLimitSettings
from gateway.agents import DEMO_AGENT, Agent, AgentCatalog, TurnTakingProfile
from gateway.history_crypto import HistorySealer
from gateway.phrase_store import RedisPhraseStore
from gateway.session.history import ConversationStore
from gateway.session.redis_history import RedisConversationStore
from gateway.usage_quota import CallBudget, UsageGuard

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 3.0


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
    return Unavailable(f"the tenant service could not be reached to load {what}; retry shortly")


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

        if self._cache is None:
            return await load()
        return await self._cache.get_or_load(tenant_id, config_name(kind, resource_id), load)

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
    """Admits a call under its tenant's quotas; when it ends, releases the slot and writes the
    call's record to tenant_svc in the background (the caller never waits for bookkeeping)."""

    def __init__(
        self, pool: ChannelPool | None, quotas: TenantQuotas | None, usage: UsageGuard | None = None
    ) -> None:
        self._pool = pool
        self._quotas = quotas
        self._usage = usage  # monthly usage quotas (issue 17)
        self._pending: set[asyncio.Task[None]] = set()

    async def usage_budget(self, tenant_id: str) -> CallBudget | None:
        """Before ``admit``: RESOURCE_EXHAUSTED at a monthly usage limit, else the call's budget."""
        return await self._usage.admit(tenant_id) if self._usage is not None else None

    async def admit(self, tenant_id: str, call_id: str) -> Lease | None:
        if self._quotas is None:
            return None
        return await self._quotas.start_call(tenant_id, call_id)

    def finish(self, lease: Lease | None, tenant_id: str, call_id: str, call: pb.Call) -> None:
        """Runs in the caller's context (its credential writes the record); never raises."""
        task = asyncio.get_running_loop().create_task(
            self._finish(lease, tenant_id, call_id, call), name=f"call-record:{call_id[:8]}"
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _finish(self, lease: Lease | None, tenant_id: str, call_id: str, call: pb.Call) -> None:
        if lease is not None:
            try:
                await lease.release()
            except VoiceAIError as e:  # the lease expires by itself
                log.warning("call slot not released: %s", e.message)
        await self.record(tenant_id, call_id, call)

    async def record(self, tenant_id: str, call_id: str, call: pb.Call) -> None:
        """Best effort: a lost record is logged, never turned into a failed call."""
        if self._pool is None:
            return
        try:
            async with self._pool.stream() as channel:
                stub = svc_grpc.TenantServiceStub(channel)
                await stub.CreateCall(
                    svc.CreateCallRequest(parent=f"tenants/{tenant_id}", call=call, call_id=call_id.lower()),
                    timeout=RPC_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as e:
            log.warning("call record not written: %s %s", e.code().name, e.details())
        except VoiceAIError as e:
            log.warning("call record not written: %s", e.message)

    async def close(self, timeout: float = 5.0) -> None:
        """Waits for records still being written (drain), then gives up on the rest."""
        if self._pending:
            _done, late = await asyncio.wait(set(self._pending), timeout=timeout)
            for task in late:
                task.cancel()


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

    @classmethod
    def build(
        cls, resolver: Resolver, discovery: DiscoverySettings, redis_settings: RedisSettings
    ) -> Tenancy:
        redis = open_redis(redis_settings) if redis_settings.url else None
        cache = quotas = store = None
        phrases: RedisPhraseStore | None = None
        closers: list[Callable[[], Awaitable[None]]] = []
        if redis is not None:
            prefix = redis_settings.key_prefix
            cache = ConfigCache(redis, prefix=prefix)
            quotas = TenantQuotas(redis, PlanBook(), QuotaSettings(), prefix=prefix)
            store = RedisConversationStore(redis, prefix=prefix)
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
            return built
        pool = ChannelPool("tenant", resolver)
        if store is not None:  # data protection: history sealed with the tenant's keys
            store.codec = HistorySealer(pool)
        ledger = CallLedger(pool, quotas, usage_guard(pool, quotas))
        closers[:0] = [ledger.close, pool.close]
        built = cls(
            catalog=TenantServiceCatalog(pool, cache, quotas),
            ledger=ledger,
            store=store,
            closers=closers,
        )
        built.phrases = phrases
        return built

    async def close(self) -> None:
        for close in self._closers:
            await close()


__all__ = ["AgentCatalog", "CallLedger", "Tenancy", "TenantServiceCatalog", "agent_from_tenant"]
