"""BYOK end to end: a key stored through the tenant API reaches the provider (the OpenAI double,
through the real SDK) for that tenant's requests only, within the cache TTL, and never shows in
a response, a log line or a metric."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from prometheus_client import REGISTRY, generate_latest

from common import context
from common.discovery import ChannelPool, StaticResolver
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2 as dp
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2_grpc as dp_grpc
from common.providers import ProviderKey
from common.settings import DiscoverySettings
from common.tenant_keys import EnvDefaults, TenantKeyStore, tenant_key_store
from tenant_svc.db.database import DatabaseSettings
from tests.doubles.openai_api import OpenAIDouble
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_data_protection import internal_md

TENANT_KEY = "sk-byok-tenant-a-7f3e9c2d1b0aQRST"
PLATFORM_KEY = "sk-platform-default-000000000000"


class Platform(EnvDefaults):
    """The platform key as the environment would give it (no process env touched)."""

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        from common.providers import resolve_key

        return resolve_key(env_name, tenant_id, {"OPENAI_API_KEY": PLATFORM_KEY})


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ask(store: TenantKeyStore, api: TenantApi, tenant: str, double: OpenAIDouble) -> str:
    """One LLM request for ``tenant`` as llm_svc makes it: inside the tenant's request context
    (carrying the gateway's internal token), key from the store, real SDK to the double."""
    md = dict(internal_md(api, tenant))
    context.bind(context.RequestContext(tenant_id=tenant, call_id="c1", authorization=md["authorization"]))
    try:
        key = await store.key_for("OPENAI_API_KEY", tenant)
    finally:
        context.bind(None)  # type: ignore[arg-type]
    assert key is not None
    client = openai.AsyncOpenAI(api_key=key.value, base_url=double.base_url, max_retries=0)
    try:
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    assert reply.choices[0].message.content == "echo: hi"
    return double.requests[-1].authorization


async def test_a_tenants_own_key_serves_its_requests_only(
    api: TenantApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = await api.new_tenant(), await api.new_tenant()
    clock = Clock()
    async with OpenAIDouble() as double:
        store = tenant_key_store(
            Platform(), DiscoverySettings(tenant_addresses=api.address), ttl_s=5.0, clock=clock
        )
        assert store is not None
        assert tenant_key_store(Platform(), DiscoverySettings()) is None  # no tenant_svc: platform keys
        # Before A stores a key, both tenants run on the platform's key.
        assert await ask(store, api, a, double) == f"Bearer {PLATFORM_KEY}"
        stored = await dp_grpc.DataProtectionServiceStub(api.channel).CreateProviderKey(
            dp.CreateProviderKeyRequest(
                parent=f"tenants/{a}",
                provider_key_id="openai",
                provider_key=dp.ProviderKey(api_key=TENANT_KEY),
            ),
            metadata=api.md(a, "admin"),
        )
        assert TENANT_KEY not in str(stored) and stored.last4 == "QRST"
        clock.now += 5.1  # within seconds, no redeploy
        assert await ask(store, api, a, double) == f"Bearer {TENANT_KEY}"
        assert await ask(store, api, b, double) == f"Bearer {PLATFORM_KEY}"
        assert [r.authorization for r in double.requests].count(f"Bearer {TENANT_KEY}") == 1
        # Deleted: back to the platform key after the TTL.
        await dp_grpc.DataProtectionServiceStub(api.channel).DeleteProviderKey(
            dp.DeleteProviderKeyRequest(name=f"tenants/{a}/providerKeys/openai"), metadata=api.md(a, "admin")
        )
        clock.now += 5.1
        assert await ask(store, api, a, double) == f"Bearer {PLATFORM_KEY}"
        await store.aclose()
    assert TENANT_KEY not in caplog.text
    assert TENANT_KEY.encode() not in generate_latest(REGISTRY)


async def test_without_the_tenants_credential_no_tenant_key_is_fetched(api: TenantApi) -> None:
    a = await api.new_tenant()
    await dp_grpc.DataProtectionServiceStub(api.channel).CreateProviderKey(
        dp.CreateProviderKeyRequest(
            parent=f"tenants/{a}", provider_key_id="openai", provider_key=dp.ProviderKey(api_key=TENANT_KEY)
        ),
        metadata=api.md(a, "admin"),
    )
    pool = ChannelPool("tenant", StaticResolver({"tenant": [api.address]}), propagate_context=False)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        store = TenantKeyStore(pool, Platform())
        # No request context (or another tenant's): the platform key, never a guess.
        key = await store.key_for("OPENAI_API_KEY", a)
        assert key is not None and key.value == PLATFORM_KEY
        context.bind(context.RequestContext(tenant_id="someone-else", authorization="Bearer x"))
        try:
            key = await store.key_for("OPENAI_API_KEY", a)
        finally:
            context.bind(None)  # type: ignore[arg-type]
        assert key is not None and key.value == PLATFORM_KEY
        assert "ProviderKey(label='default'" in repr(key) and PLATFORM_KEY not in repr(key)
