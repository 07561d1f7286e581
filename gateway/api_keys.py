"""The gateway's API-key store: tenant_svc's ``ApiKeyInternalService``, not its database.

``build_auth`` puts a ``CachedApiKeyStore`` in front (records for ``api_key_cache_s``, unknown
ids for a few seconds), so a caller's key costs one lookup per cache window, as before. The
lookup runs as the gateway itself (an internal token for the platform), since no caller is
authenticated yet; tenant_svc refuses that method to any edge credential.
"""

from __future__ import annotations

import logging
from datetime import UTC

import grpc
import grpc.aio

from common import context
from common.auth import PLATFORM, ApiKeyRecord, InternalTokenIssuer, Principal
from common.discovery import ChannelPool
from common.errors import Unavailable
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2 as pb
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

GATEWAY = Principal("voiceai-gateway", None, frozenset({PLATFORM}), "internal")
LOOKUP_TIMEOUT_S = 3.0


class TenantApiKeys:
    """``common.auth.ApiKeyStore`` over tenant_svc's internal lookup RPC (see module docstring)."""

    def __init__(self, pool: ChannelPool, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._issuer: InternalTokenIssuer | None = None

    def authorize_with(self, issuer: InternalTokenIssuer) -> None:
        """The issuer of the gateway's own internal token (built with the auth that caches us)."""
        self._issuer = issuer

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        """The key's record, None for an unknown id; UNAVAILABLE when tenant_svc cannot answer."""
        if self._issuer is None:
            raise Unavailable("API keys cannot be checked: the gateway has no internal credential")
        md = ((context.AUTHORIZATION_HEADER, self._issuer.authorization_for(GATEWAY, "tenant")),)
        try:
            async with self._pool.lease() as lease:
                reply = await pb_grpc.ApiKeyInternalServiceStub(lease.channel).LookupApiKey(
                    pb.LookupApiKeyRequest(key_id=key_id), metadata=md, timeout=self._timeout_s
                )
        except grpc.aio.AioRpcError as e:
            log.warning("API key lookup failed at the tenant service: %s", e.code().name)
            raise Unavailable(
                "API keys cannot be checked right now (tenant service); retry shortly"
            ) from None
        if not reply.found:
            return None
        return ApiKeyRecord(
            reply.key_id,
            reply.tenant_id or None,
            frozenset(reply.roles),
            reply.secret_hash,
            revoked=reply.revoked,
            expires_at=reply.expire_time.ToDatetime(tzinfo=UTC) if reply.HasField("expire_time") else None,
        )

    async def close(self) -> None:
        """Close the channel pool."""
        await self._pool.close()
