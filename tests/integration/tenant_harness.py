"""A real tenant_svc on loopback (embedded PostgreSQL, dev-mode auth) and callers with tokens."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from common.auth import AuthSettings, dev_signing_key, mint_dev_token
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from common.redis_conn import RedisSettings
from tenant_svc.app import Settings, build_host
from tenant_svc.db.database import DatabaseSettings


@dataclass
class TenantApi:
    """A running tenant_svc plus a token minter for any tenant and roles."""

    address: str
    key_dir: Path
    channel: grpc.aio.Channel

    @property
    def stub(self) -> svc_grpc.TenantServiceStub:
        return svc_grpc.TenantServiceStub(self.channel)

    def token(self, tenant: str | None, *roles: str, subject: str = "tester") -> str:
        key = dev_signing_key(self.key_dir)
        return mint_dev_token(key, tenant=tenant, roles=list(roles), subject=subject)

    def md(
        self, tenant: str | None, *roles: str, header_tenant: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        """Metadata for ``tenant`` with ``roles``; ``header_tenant`` overrides x-tenant-id."""
        out = [("authorization", f"Bearer {self.token(tenant, *roles)}")]
        named = header_tenant if header_tenant is not None else tenant
        if named:
            out.append(("x-tenant-id", named))
        return tuple(out)

    def key_md(self, key: str, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"), ("x-tenant-id", tenant))

    async def new_tenant(self, tier: pb.PlanTier = pb.PLAN_TIER_PRO) -> str:
        tid = f"t-{uuid.uuid4().hex[:12]}"
        await self.stub.CreateTenant(
            svc.CreateTenantRequest(
                tenant=pb.Tenant(display_name=f"Tenant {tid}", plan_tier=tier), tenant_id=tid
            ),
            metadata=self.md(None, "platform"),
        )
        return tid

    async def new_agent(
        self, tenant: str, agent_id: str = "front-desk", prompt: str = "Be brief."
    ) -> pb.Agent:
        return await self.stub.CreateAgent(
            svc.CreateAgentRequest(
                parent=f"tenants/{tenant}", agent=pb.Agent(system_prompt=prompt), agent_id=agent_id
            ),
            metadata=self.md(tenant, "admin"),
        )


@contextlib.asynccontextmanager
async def tenant_api(
    database: DatabaseSettings, key_dir: Path, redis_url: str = ""
) -> AsyncIterator[TenantApi]:
    host = await build_host(
        Settings(port=0),
        database,
        auth_settings=AuthSettings(mode="dev", dev_key_dir=str(key_dir)),
        redis_settings=RedisSettings(url=redis_url),
    )
    port = await host.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield TenantApi(address, key_dir, channel)
    finally:
        await host.drain(0.5)
