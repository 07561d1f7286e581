"""``LiveKitGateway``: a gateway process that also serves LiveKit rooms.

It is the ordinary ``GatewayApp`` (Converse, health, metrics, tenancy) plus a ``LiveKitWorker``
whose calls share the app's channels, pacer, conversation store and quotas.
"""

from __future__ import annotations

import asyncio
import functools

from livekit import api

from common.auth import Auth, AuthSettings, build_auth
from common.discovery import ChannelPool
from gateway.agents import BuiltinAgentCatalog
from gateway.app import GatewayApp
from gateway.livekit.calls import CallServices, RoomCalls
from gateway.livekit.room import run_room_call
from gateway.livekit.routing import CallRouter
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings
from gateway.livekit.sip_control import LiveKitSipControl, SipControl
from gateway.livekit.worker import LiveKitWorker
from gateway.session.call import SessionSettings
from gateway.session.history import InMemoryConversationStore
from gateway.session.reply import PhraseCache


def call_services(
    app: GatewayApp, sip: SipControl, auth: Auth, tenant_pool: ChannelPool | None
) -> CallServices:
    """Room calls' share of ``app``: its channels, pacer, store, tenancy; ``auth`` signs the
    internal tokens room calls forward and verifies WebRTC callers' tokens."""
    if auth.internal_issuer is None:
        raise ValueError("room calls sign internal tokens: build the auth with issue_internal_tokens=True")
    return CallServices(
        clients=app.clients,
        pacer=app.pacer,
        store=app.tenancy.store or InMemoryConversationStore(),
        phrases=PhraseCache(shared=app.tenancy.phrases),  # issue 17: shared across pods
        session_settings=SessionSettings(
            stt_chunk_ms=app.settings.stt_chunk_ms, max_call_s=app.settings.max_call_s
        ),
        router=CallRouter(
            catalog=app.tenancy.catalog or BuiltinAgentCatalog(),
            issuer=auth.internal_issuer,
            users=auth.authenticator,
            tenant_pool=tenant_pool,
        ),
        issuer=auth.internal_issuer,
        sip=sip,
        ledger=app.tenancy.ledger,
    )


class LiveKitGateway:
    """A gateway app and its LiveKit worker, started and drained together."""

    def __init__(
        self,
        app: GatewayApp,
        creds: LiveKitCredentials,
        settings: LiveKitSettings,
        auth_settings: AuthSettings | None = None,
    ) -> None:
        self.app = app
        self._creds = creds.require()
        self._settings = settings
        self._auth_settings = auth_settings or AuthSettings()
        self.worker: LiveKitWorker | None = None
        self._lkapi: api.LiveKitAPI | None = None
        self._tenant_pool: ChannelPool | None = None

    async def start(self) -> int:
        """Start the gateway app, then register with LiveKit; returns the gRPC port."""
        port = await self.app.start()
        creds, app = self._creds, self.app
        if app.tenancy.catalog is not None:
            # Number lookups run as the platform (no caller context to propagate).
            self._tenant_pool = ChannelPool("tenant", app.resolver, propagate_context=False)
        self._lkapi = api.LiveKitAPI(creds.url, creds.api_key, creds.api_secret.get_secret_value())
        sip = LiveKitSipControl(self._lkapi)
        services = call_services(
            app, sip, build_auth(self._auth_settings, issue_internal_tokens=True), self._tenant_pool
        )
        calls = RoomCalls(services, self._settings)
        run_job = functools.partial(run_room_call, calls=calls, creds=creds, settings=self._settings, sip=sip)
        self.worker = LiveKitWorker(calls, creds, self._settings, run_job)
        await self.worker.start()
        return port

    async def drain(self) -> None:
        """SIGTERM: Converse and room calls drain side by side (neither takes new calls, each
        gets its own grace); the channels both use close only once both are done."""
        app = self.app
        app.servicer.draining = True
        try:
            if self.worker is not None:
                await asyncio.gather(self.worker.drain(), app.host.drain())
        finally:
            if self._lkapi is not None:
                await self._lkapi.aclose()
            if self._tenant_pool is not None:
                await self._tenant_pool.close()
            await app.drain()  # the host has stopped by now: this closes pacer, channels, tenancy
