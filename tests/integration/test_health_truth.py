"""Health that tells the truth, against real processes: tenant_svc without PostgreSQL and the
gateway without Redis (fail-closed admission) are NOT_SERVING for new work while their liveness
stays SERVING; /healthz names the failing dependency; both come back when it does."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import AuthSettings
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.readiness import LIVENESS
from common.redis_embedded import EmbeddedRedis
from tenant_svc.app import Settings, build_host
from tenant_svc.db.database import DatabaseSettings, embedded_server
from tests.credentials import KEY_DIR
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.tenant_harness import TenantApi

log = logging.getLogger(__name__)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return int(reply.status)


async def wait_health(channel: grpc.aio.Channel, service: str, want: int, timeout: float = 30.0) -> float:
    """Seconds until ``service`` reports ``want``."""
    t0 = time.monotonic()
    while await health_of(channel, service) != want:
        assert time.monotonic() - t0 < timeout, f"{service!r} never became {want}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def healthz(port: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
def private_postgres() -> Iterator[tuple[DatabaseSettings, object]]:
    """A PostgreSQL of this test's own (it is stopped and started again)."""
    data = Path(tempfile.mkdtemp(prefix="voiceai-outage-pg-")) / "data"
    _ends, server = embedded_server(data, "voiceai_app")
    try:
        yield DatabaseSettings(url="", pg_data_dir=data), server
    finally:
        server.cleanup()  # type: ignore[attr-defined]


def pg_ctl(server: object, *args: str) -> None:
    from pgserver.postgres_server import pg_ctl as run_pg_ctl

    run_pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user)  # type: ignore[attr-defined]


def pg_start(server: object) -> None:
    server.ensure_postgres_running()  # type: ignore[attr-defined]


async def test_tenant_svc_without_postgres_is_not_ready_but_alive_and_recovers(
    private_postgres: tuple[DatabaseSettings, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    database, server = private_postgres
    monkeypatch.setenv("VOICEAI_HEALTHZ_PORT", "0")
    host = await build_host(
        Settings(port=0), database, auth_settings=AuthSettings(mode="dev", dev_key_dir=str(KEY_DIR))
    )
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            api = TenantApi(f"127.0.0.1:{port}", KEY_DIR, ch)
            tenant = await api.new_tenant()
            assert await health_of(ch, "") == SERVING and await health_of(ch, LIVENESS) == SERVING
            assert host.readiness is not None
            code, detail = await healthz(host.readiness.healthz_port)
            assert code == 200 and detail["dependencies"]["postgresql"]["ok"]

            await asyncio.to_thread(pg_ctl, server, "-w", "-m", "immediate", "stop")
            await wait_health(ch, "", NOT_SERVING)
            assert await health_of(ch, "voiceai.tenant.v1.TenantService") == NOT_SERVING
            assert await health_of(ch, LIVENESS) == SERVING  # Kubernetes must not restart it
            code, detail = await healthz(host.readiness.healthz_port)
            assert code == 503 and not detail["dependencies"]["postgresql"]["ok"]
            assert detail["dependencies"]["postgresql"]["detail"]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await api.stub.GetTenant(
                    svc.GetTenantRequest(name=f"tenants/{tenant}"),
                    metadata=api.md(tenant, "viewer"),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "PostgreSQL" in (
                info.value.details() or ""
            )

            await asyncio.sleep(8)  # long enough for the pool's old backoff to have reached 8-16 s
            t0 = time.monotonic()
            await asyncio.to_thread(pg_start, server)
            started = time.monotonic() - t0
            ready_after = await wait_health(ch, "", SERVING)
            t1 = time.monotonic()
            await api.stub.GetTenant(
                svc.GetTenantRequest(name=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer"), timeout=10
            )
            log.warning("PostgreSQL restart took %.2f s; ready %.2f s and serving requests %.2f s after it was up",
                        started, ready_after, ready_after + time.monotonic() - t1)  # fmt: skip
    finally:
        await host.drain(0.5)


async def test_gateway_without_redis_under_fail_closed_admission_is_not_ready_but_alive(
    tmp_path: Path,
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start(reuse=False)
    try:
        async with (
            scripted_mesh(ScriptedStt([]), redis_url=url) as mesh,
            grpc.aio.insecure_channel(mesh.address) as ch,
        ):
            readiness = mesh.app.readiness
            assert [*readiness.states] == ["redis"] and await health_of(ch, "") == SERVING
            redis.stop()
            await wait_health(ch, "", NOT_SERVING)
            assert await health_of(ch, "voiceai.gateway.v1.CallGatewayService") == NOT_SERVING
            assert await health_of(ch, LIVENESS) == SERVING
            assert readiness.failing() == ["redis"] and readiness.detail()["ready"] is False
            redis.start(reuse=False)
            await wait_health(ch, "", SERVING)
    finally:
        redis.stop()
