"""Gateway settings and the factory that wires a ServiceHost for CallGatewayService."""

from __future__ import annotations

from typing import Any

from common.auth import AuthSettings, build_auth
from common.consul_resolver import ConsulResolver, resolver_from_settings
from common.discovery import ChannelPool, Resolver
from common.gen.voiceai.gateway.v1 import gateway_pb2_grpc
from common.readiness import attach_readiness
from common.redis_conn import RedisSettings
from common.server import ServiceBinding, ServiceHost
from common.settings import DiscoverySettings, ServiceSettings
from gateway.admission import CallCapacity
from gateway.agents import AgentCatalog, BuiltinAgentCatalog
from gateway.api_keys import TenantApiKeys
from gateway.call_runner import CallCore, CallRunner
from gateway.converse import CallGatewayServicer
from gateway.records.identity import gateway_credential
from gateway.session.call import SessionSettings
from gateway.session.history import ConversationStore, InMemoryConversationStore
from gateway.session.playout import Pacer
from gateway.session.reply import PhraseCache
from gateway.session.services import MeshClients
from gateway.tenancy import Tenancy

DEFAULT_PORT = 50060


class Settings(ServiceSettings):
    """Gateway settings (env prefix VOICEAI_)."""

    # Calls may run long: give open calls 10 minutes to finish on SIGTERM.
    grace_period_s: float = 600.0
    stt_chunk_ms: int = 100
    max_call_s: float = 3600.0
    # Responses buffered for a client that is not reading (500 = 10 s of 20 ms frames).
    outbox_limit: int = 500
    # Calls are freed by reference counting (tests/integration/test_gateway_memory.py), so full
    # collections find little garbage; at 200 calls each one stops the loop for ~20 ms (make
    # bench --probe). 100 instead of 10 makes them ten times rarer.
    gc_full_collection_every: int = 100
    # Gateway processes sharing the port (gateway.workers); 0 = the cores this process may use.
    workers: int = 0
    # This process's index in its worker group (set by the supervisor; -1: not a worker).
    worker_index: int = -1
    # Consecutive failed turns after which the agent says a closing line and ends the call with
    # SERVICE_ERROR (0 = apologise forever).
    failed_turns_limit: int = 2
    # Concurrent calls this process admits (0 = no limit); beyond it RESOURCE_EXHAUSTED with a
    # retry hint, and readiness is NOT_SERVING while full. Size it to what the host sustains.
    max_calls: int = 0


class GatewayApp:
    """Everything one gateway process shares across calls."""

    def __init__(
        self,
        settings: Settings,
        resolver: Resolver | None = None,
        catalog: AgentCatalog | None = None,
        store: ConversationStore | None = None,
        *,
        discovery: DiscoverySettings | None = None,
        redis_settings: RedisSettings | None = None,
    ) -> None:
        self.settings = settings
        discovery = discovery or DiscoverySettings()
        # A Consul watch built here starts and stops with the app; a resolver passed in is the caller's.
        self._watch: ConsulResolver | None = None
        if resolver is None:
            resolver = resolver_from_settings(discovery)
            self._watch = resolver if isinstance(resolver, ConsulResolver) else None
        self.resolver = resolver  # other ingresses (the LiveKit worker) find services through it too
        self.clients = MeshClients(resolver)
        self.pacer = Pacer()
        self.tenancy = Tenancy.build(resolver, discovery, redis_settings or RedisSettings())
        # What every call shares, whichever ingress carries it (Converse here, rooms in livekit/).
        self.core = CallCore(
            clients=self.clients,
            pacer=self.pacer,
            store=store if store is not None else self.tenancy.store or InMemoryConversationStore(),
            phrases=PhraseCache(shared=self.tenancy.phrases),  # issue 17: shared across pods
            session_settings=SessionSettings(
                stt_chunk_ms=settings.stt_chunk_ms,
                max_call_s=settings.max_call_s,
                failed_turns_limit=settings.failed_turns_limit,
            ),
            ledger=self.tenancy.ledger,
        )
        self.servicer = CallGatewayServicer(
            runner=CallRunner(self.core),
            catalog=catalog if catalog is not None else self.tenancy.catalog or BuiltinAgentCatalog(),
            outbox_limit=settings.outbox_limit,
        )
        # Callers may use API keys when tenant_svc is there to look them up (its internal
        # ApiKeyInternalService; the gateway opens no pool to the tenant database); else JWTs only.
        keys = (
            TenantApiKeys(ChannelPool("tenant", resolver, propagate_context=False))
            if self.tenancy.catalog is not None
            else None
        )
        self._auth = build_auth(AuthSettings(), api_keys=keys, issue_internal_tokens=True)
        self.host = ServiceHost(
            settings,
            [
                ServiceBinding(
                    "voiceai.gateway.v1.CallGatewayService",
                    lambda server: gateway_pb2_grpc.add_CallGatewayServiceServicer_to_server(
                        self.servicer, server
                    ),
                )
            ],
            require_call_id=False,  # the gateway mints call ids for new calls
            # The edge: callers' tokens are checked here and exchanged for short-lived internal
            # tokens on every hop behind it.
            auth=self._auth,
        )
        if keys is not None:
            if self.host.auth is None or self.host.auth.internal_issuer is None:
                raise ValueError("the gateway's auth must issue internal tokens to look API keys up")
            keys.authorize_with(self.host.auth.internal_issuer)
            self.host.on_stop.append(keys.close)
        # Readiness follows what new calls need (issue 15): Redis under a fail-closed admission.
        self.servicer.capacity = CallCapacity(settings.max_calls)
        self.readiness = attach_readiness(
            self.host, [*self.tenancy.dependencies(), *self.servicer.capacity.dependencies()]
        )

    async def start(self) -> int:
        if self._watch is not None:
            self._watch.watch("stt", "llm", "tts", "tenant")
        # Durable call records (gateway/records): outbox opened, crash leftovers replayed.
        await self.tenancy.start(
            self.settings.port, gateway_credential(self._auth.internal_issuer), self.settings.worker_index
        )
        return await self.host.start()

    async def drain(self, grace: float | None = None) -> None:
        self.servicer.draining = True
        if self.tenancy.ledger is not None:
            self.tenancy.ledger.stopping = True  # calls cut by the drain are recorded as interrupted
        try:
            await self.host.drain(grace)
        finally:
            await self.pacer.stop()
            await self.clients.close()
            await self.tenancy.close()
            if self._watch is not None:
                await self._watch.aclose()


def build_app(settings: Settings, resolver: Resolver | None = None, **kwargs: Any) -> GatewayApp:
    """The gateway app (``__main__`` and tests share it)."""
    return GatewayApp(settings, resolver, **kwargs)
