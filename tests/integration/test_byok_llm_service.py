"""BYOK through the real llm_svc: a key a tenant admin stores with the tenant API reaches the
OpenAI double (real SDK, real servicer) for that tenant's streams only, fetched by llm_svc from
tenant_svc's ProviderKeyInternalService with the gateway's token for the call it serves; the
other tenant's streams run on the platform key; the key never appears in a response."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
import pytest

from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2 as dp
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2_grpc as dp_grpc
from llm_svc.app import Settings, build_host
from tenant_svc.db.database import DatabaseSettings
from tests.conftest import internal_md, running
from tests.credentials import KEY_DIR
from tests.doubles.openai_api import OpenAIDouble
from tests.integration.tenant_harness import TenantApi, tenant_api

TENANT_KEY = "sk-byok-through-llm-svc-5a5aWXYZ"
PLATFORM_KEY = "sk-platform-key-for-everyone-else"


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    # The session's dev keys: the internal token llm_svc forwards is verified by tenant_svc too.
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running_api:
        yield running_api


async def ask(stub: llm_pb2_grpc.LanguageModelServiceStub, tenant: str, call_id: str) -> str:
    request = llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")])
    text = ""
    async for resp in stub.StreamChat(request, metadata=internal_md("llm", call_id, tenant)):
        if resp.WhichOneof("event") == "delta":
            text += resp.delta.text
    assert TENANT_KEY not in text and PLATFORM_KEY not in text
    return text


async def test_a_stored_tenant_key_serves_that_tenants_streams_only(
    api: TenantApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    await dp_grpc.DataProtectionServiceStub(api.channel).CreateProviderKey(
        dp.CreateProviderKeyRequest(
            parent=f"tenants/{a}", provider_key_id="openai", provider_key=dp.ProviderKey(api_key=TENANT_KEY)
        ),
        metadata=api.md(a, "admin"),
    )
    monkeypatch.setenv("VOICEAI_TENANT_ADDRESSES", api.address)  # llm_svc finds tenant_svc
    async with OpenAIDouble() as double:
        settings = Settings(llm_providers="openai", openai_base_url=double.base_url, llm_openai_model="gpt-t")
        host = build_host(settings, environ={"OPENAI_API_KEY": PLATFORM_KEY})
        async with running(host) as addr, grpc.aio.insecure_channel(addr) as ch:
            stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
            assert await ask(stub, a, "call-a1")
            assert double.requests[-1].authorization == f"Bearer {TENANT_KEY}"
            assert await ask(stub, b, "call-b1")
            assert double.requests[-1].authorization == f"Bearer {PLATFORM_KEY}"
            assert await ask(stub, a, "call-a2")  # cached for the TTL, still A's own
            assert double.requests[-1].authorization == f"Bearer {TENANT_KEY}"


async def test_a_token_minted_for_another_hop_cannot_read_a_tenant_key(api: TenantApi) -> None:
    """ProviderKeyInternalService takes only a speech service's forwarded token: the gateway's
    own audience ('tenant') or a user token is refused."""
    from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2 as pki
    from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2_grpc as pki_grpc

    a = await api.new_tenant()
    stub = pki_grpc.ProviderKeyInternalServiceStub(api.channel)
    request = pki.ResolveProviderKeyRequest(provider="openai")
    for md in (internal_md("tenant", "call-x", a), api.md(a, "admin")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ResolveProviderKey(request, metadata=md)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await stub.ResolveProviderKey(request, metadata=internal_md("llm", "call-x", a))
    assert not reply.found  # admitted; A stored no key
