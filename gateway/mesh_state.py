"""State for the local mesh: the embedded Redis every process shares, and the demo tenant.

With no ``DATABASE_URL`` the launcher starts the embedded PostgreSQL (pgserver, ``var/pgdata``)
and hands tenant_svc the app role's and the owner's URLs; with no ``REDIS_URL`` it starts one
embedded Redis that the gateway and tenant_svc share. Configured URLs are used as they are. The
launcher owns what it started and stops it last.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from common.auth import AuthSettings, dev_signing_key, mint_dev_token
from common.crypto import create_key_ring
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from common.redis_embedded import EmbeddedRedis
from common.tls import process_channels
from tenant_svc.db.database import DatabaseSettings, embedded_server

DEMO_TENANT = "demo"


class LocalState:
    """Starts what the processes share; ``env`` is what the children need to find it."""

    def __init__(self, var_dir: Path = Path("var")) -> None:
        self.var_dir = var_dir
        self.env: dict[str, str] = {}
        self._redis: EmbeddedRedis | None = None
        self._postgres: Any = None

    def start(self) -> None:
        url = os.environ.get("REDIS_URL", "")
        if not url:
            self._redis = EmbeddedRedis(self.var_dir / "redis")
            url = self._redis.start(reuse=True)
        self.env["REDIS_URL"] = url
        if (
            not os.environ.get("VOICEAI_KEK_FILE")
            and os.environ.get("VOICEAI_KEK_PROVIDER", "local") == "local"
        ):
            # data protection: the dev key ring (KEK) for tenant data, created once under var/
            create_key_ring(self.var_dir / "kek.json")
            self.env["VOICEAI_KEK_FILE"] = str((self.var_dir / "kek.json").resolve())
        if not os.environ.get("DATABASE_URL"):
            settings = DatabaseSettings()
            ends, self._postgres = embedded_server(self.var_dir / "pgdata", settings.app_role)
            self.env["DATABASE_URL"] = ends.app_url
            self.env["VOICEAI_DATABASE_ADMIN_URL"] = ends.admin_url

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            _forget_dead_users(self._postgres)
            self._postgres.cleanup()  # stops the server when no live process still uses it
            self._postgres = None


def _forget_dead_users(server: Any) -> None:
    """pgserver counts users by pid on disk; a process that was killed never removed its pid and
    would keep the server running forever. Drop pids that no longer exist."""
    users = server.global_process_id_list
    with server._lock:
        users.put([pid for pid in users.get() if _alive(pid)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def seed_demo_tenant(tenant_address: str) -> str:
    """Create the demo tenant (idempotent) with a platform token minted by the dev key.
    Returns what happened, for the launcher's log."""
    settings = AuthSettings()
    if settings.mode != "dev":
        return "not seeding a demo tenant: auth is not in dev mode"
    token = mint_dev_token(
        dev_signing_key(Path(settings.dev_key_dir)), tenant=None, roles=["platform"], ttl_s=300
    )

    async def create() -> str:
        async with process_channels().channel(tenant_address, "tenant") as channel:
            stub = svc_grpc.TenantServiceStub(channel)
            request = svc.CreateTenantRequest(
                tenant=pb.Tenant(display_name="Bright Smile Dental (demo)", plan_tier=pb.PLAN_TIER_PRO),
                tenant_id=DEMO_TENANT,
            )
            try:
                await stub.CreateTenant(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                    return f"tenant '{DEMO_TENANT}' is ready"
                raise
            return f"created tenant '{DEMO_TENANT}'"

    return asyncio.run(create())
