"""``TenantKeyStore``: a tenant's own provider keys (BYOK, stored sealed in tenant_svc) for that
tenant's streams, the platform's keys otherwise.

It implements the mesh's ``KeySource`` seam (``async key_for(env_name, tenant_id) ->
ProviderKey | None``). Keys come from tenant_svc's ``ProviderKeyInternalService`` with the
request's own internal credential (the gateway's short-lived token for this tenant's call), are
cached for ``ttl_s`` so a key stored or deleted through the tenant API takes effect within
seconds without a redeploy, and never leave this object except inside the ``ProviderKey``
(whose repr hides the value). If tenant_svc cannot be reached, a key fetched earlier is used
for up to ``stale_s``; with none, the platform's key (the fallback source) serves the stream.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Protocol

import grpc
import grpc.aio

from common import context
from common.discovery import ChannelPool, StaticResolver
from common.errors import VoiceAIError
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2 as pki
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2_grpc as pki_grpc
from common.providers import ProviderKey, resolve_key
from common.settings import DiscoverySettings

log = logging.getLogger(__name__)

# The environment variable a provider's platform key lives in -> the provider's BYOK name.
PROVIDER_OF_ENV = {
    "DEEPGRAM_API_KEY": "deepgram",
    "OPENAI_API_KEY": "openai",
    "ELEVENLABS_API_KEY": "elevenlabs",
}
_HAS_BASE_URL = "base_url" in {f.name for f in fields(ProviderKey)}


class KeySourceLike(Protocol):
    """The ``KeySource`` seam (common.providers): a key for a provider and tenant, or None."""

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        """The tenant's key, else the platform's, else None."""
        ...


class EnvDefaults:
    """Platform keys from the environment (today's ``resolve_key``), the fallback source."""

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        """The deployment's key (or the legacy ``<NAME>__<TENANT>`` variable)."""
        return resolve_key(env_name, tenant_id)


def tenant_key(value: str, base_url: str) -> ProviderKey:
    """A ``ProviderKey`` labelled ``tenant`` (with its base URL once ProviderKey carries one)."""
    import hashlib

    extra: dict[str, Any] = {"base_url": base_url} if _HAS_BASE_URL else {}
    return ProviderKey(value, "tenant", hashlib.sha256(value.encode()).hexdigest()[:12], **extra)


def request_metadata(tenant_id: str) -> Sequence[tuple[str, str]] | None:
    """The current request's credential for tenant_svc, when the request is ``tenant_id``'s."""
    ctx = context.current()
    if ctx is None or ctx.tenant_id != tenant_id:
        return None
    return ctx.metadata()


class TenantKeyStore:
    """BYOK first, then ``fallback``; a short-TTL cache per (tenant, provider)."""

    def __init__(
        self,
        pool: ChannelPool,
        fallback: KeySourceLike | None = None,
        *,
        ttl_s: float = 10.0,
        stale_s: float = 300.0,
        timeout_s: float = 2.0,
        max_cached: int = 4096,
        metadata: Callable[[str], Sequence[tuple[str, str]] | None] = request_metadata,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._fallback = fallback or EnvDefaults()
        self._ttl_s, self._stale_s, self._timeout_s = ttl_s, stale_s, timeout_s
        self._max_cached = max_cached
        self._metadata = metadata
        self._clock = clock
        # (tenant, provider) -> (tenant key or None, fetched at)
        self._cache: OrderedDict[tuple[str, str], tuple[ProviderKey | None, float]] = OrderedDict()

    async def aclose(self) -> None:
        """Close the channels to tenant_svc."""
        await self._pool.close()

    def invalidate(self, tenant_id: str, provider: str | None = None) -> None:
        """Forget cached keys of a tenant (one provider or all), e.g. on a change notice."""
        for key in [k for k in self._cache if k[0] == tenant_id and provider in (None, k[1])]:
            del self._cache[key]

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        """The tenant's own key for this provider, else the platform's, else None."""
        provider = PROVIDER_OF_ENV.get(env_name)
        if provider and tenant_id:
            own = await self._tenant_key(tenant_id, provider)
            if own is not None:
                return own
        return await self._fallback.key_for(env_name, tenant_id)

    async def _tenant_key(self, tenant_id: str, provider: str) -> ProviderKey | None:
        slot = (tenant_id, provider)
        cached = self._cache.get(slot)
        now = self._clock()
        if cached is not None and now - cached[1] < self._ttl_s:
            return cached[0]
        md = self._metadata(tenant_id)
        if md is None:  # no credential for this tenant in this request: never guess
            return cached[0] if cached is not None and now - cached[1] < self._stale_s else None
        try:
            async with self._pool.stream() as channel:
                reply = await pki_grpc.ProviderKeyInternalServiceStub(channel).ResolveProviderKey(
                    pki.ResolveProviderKeyRequest(provider=provider),
                    metadata=tuple(md),
                    timeout=self._timeout_s,
                )
        except (grpc.aio.AioRpcError, VoiceAIError) as e:
            reason = e.code().name if isinstance(e, grpc.aio.AioRpcError) else type(e).__name__
            log.warning("tenant provider key not fetched (%s); tenant %s", reason, tenant_id)
            return cached[0] if cached is not None and now - cached[1] < self._stale_s else None
        found = tenant_key(reply.api_key, reply.base_url) if reply.found else None
        self._cache[slot] = (found, now)
        self._cache.move_to_end(slot)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return found


def tenant_key_store(
    fallback: KeySourceLike | None = None, discovery: DiscoverySettings | None = None, **options: Any
) -> TenantKeyStore | None:
    """The store a service builds next to its providers (tenant_svc found through discovery:
    ``VOICEAI_TENANT_ADDRESSES`` or Consul); None when tenant_svc is not configured, and then
    the caller keeps its platform key source. Close it with ``aclose``."""
    from common.consul_resolver import resolver_from_settings

    discovery = discovery or DiscoverySettings()
    resolver = resolver_from_settings(discovery)
    if isinstance(resolver, StaticResolver) and not discovery.static_map().get("tenant"):
        return None
    return TenantKeyStore(ChannelPool("tenant", resolver, propagate_context=False), fallback, **options)


__all__ = [
    "PROVIDER_OF_ENV",
    "EnvDefaults",
    "TenantKeyStore",
    "request_metadata",
    "tenant_key",
    "tenant_key_store",
]
