"""The gateway's API-key lookups through tenant_svc's internal ApiKeyInternalService: the record
comes back as stored, an unknown id is None, and no edge credential may call the method."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from common.auth import AuthSettings, build_auth, parse_api_key
from common.discovery import ChannelPool, StaticResolver
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2 as internal_pb
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2_grpc as internal_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from gateway.api_keys import TenantApiKeys
from tenant_svc.db.database import DatabaseSettings
from tests.credentials import KEY_DIR
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


async def test_the_gateway_looks_keys_up_with_its_internal_credential(api: TenantApi) -> None:
    tenant = await api.new_tenant()
    created = await api.stub.CreateApiKey(
        svc.CreateApiKeyRequest(parent=f"tenants/{tenant}", api_key=pb.ApiKey(roles=["agent"])),
        metadata=api.md(tenant, "admin"),
    )
    parsed = parse_api_key(created.key)
    assert parsed is not None
    key_id = parsed[0]
    auth = build_auth(AuthSettings(mode="dev", dev_key_dir=str(KEY_DIR)), issue_internal_tokens=True)
    assert auth.internal_issuer is not None
    keys = TenantApiKeys(
        ChannelPool("tenant", StaticResolver({"tenant": [api.address]}), propagate_context=False)
    )
    keys.authorize_with(auth.internal_issuer)
    try:
        record = await keys.lookup(key_id)
        assert record is not None
        assert (record.key_id, record.tenant_id, record.roles, record.revoked) == (
            key_id,
            tenant,
            frozenset({"agent"}),
            False,
        )
        assert record.secret_hash.startswith(("sha256$", "hmac-sha256$"))
        assert await keys.lookup("a" * 12) is None
    finally:
        await keys.close()


@pytest.mark.parametrize("roles", [("platform",), ("admin",)])
async def test_edge_credentials_are_refused(api: TenantApi, roles: tuple[str, ...]) -> None:
    tenant = None if roles == ("platform",) else await api.new_tenant()
    stub = internal_grpc.ApiKeyInternalServiceStub(api.channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.LookupApiKey(
            internal_pb.LookupApiKeyRequest(key_id="a" * 12), metadata=api.md(tenant, *roles)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "internal" in (info.value.details() or "")
