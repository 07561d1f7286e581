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
from common.crypto import KekSettings, TenantKeyring, build_key_provider
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.readiness import LIVENESS
from common.redis_conn import RedisSettings
from common.redis_embedded import EmbeddedRedis
from tenant_svc.app import Settings, build_host
from tenant_svc.db.database import DatabaseSettings, embedded_server, open_pool
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository
from tests.caller import ConverseCaller
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh
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


async def test_postgres_stopped_during_calls_loses_no_record(
    private_postgres: tuple[DatabaseSettings, object], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 calls while PostgreSQL is down: each record is there exactly once after it returns."""
    database, server = private_postgres
    monkeypatch.setenv("VOICEAI_RECORD_RETRY_MAX_S", "2")
    host = await build_host(
        Settings(port=0),
        database,
        auth_settings=AuthSettings(mode="dev", dev_key_dir=str(KEY_DIR)),
        redis_settings=RedisSettings(url=redis_url),
    )
    port = await host.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as tch:
            api = TenantApi(address, KEY_DIR, tch)
            tenant = await api.new_tenant()
            md = lambda call_id: (("x-tenant-id", tenant), ("x-call-id", call_id), bearer(tenant))  # noqa: E731
            async with (
                scripted_mesh(
                    ScriptedStt(["hello?"] * 10), tenant_address=address, redis_url=redis_url
                ) as mesh,
                grpc.aio.insecure_channel(mesh.address) as ch,
            ):
                await asyncio.to_thread(pg_ctl, server, "-w", "-m", "immediate", "stop")
                for pair in range(5):  # the default plan admits 2 calls at once
                    async with (
                        ConverseCaller(ch, inline_config(), metadata=md(f"pg-down-{2 * pair}")) as a,
                        ConverseCaller(ch, inline_config(), metadata=md(f"pg-down-{2 * pair + 1}")) as b,
                    ):
                        for c in (a, b):
                            await c.wait_for(lambda c: c.of("call_started"))
                            await c.send_pcm(tone(600))
                            await c.wait_for(c.turn_done(1), timeout=15)
                        for c in (a, b):
                            await c.hangup()
                await asyncio.to_thread(pg_start, server)
                t0 = time.monotonic()
                reader = await open_pool(database)
                # Opened as tenant_svc would: the transcripts are sealed at rest.
                repo = Repository(
                    reader, DataProtection(TenantKeyring(await build_key_provider(KekSettings())))
                )
                while True:
                    async with repo.tenant(tenant) as t:
                        rows = await t.list_calls(2**62, 100)
                    if len(rows) == 10 and all(c.status == pb.CALL_STATUS_COMPLETED for _, c in rows):
                        break
                    assert time.monotonic() - t0 < 30, [(c.name, c.status) for _, c in rows]
                    await asyncio.sleep(0.2)
                log.warning("10 records written %.1f s after PostgreSQL returned", time.monotonic() - t0)
                async with repo.tenant(tenant) as t:
                    full = [await t.get_call(f"pg-down-{i}") for i in range(10)]
                await reader.close()
        names = sorted(c.name.rsplit("/", 1)[1] for _, c in rows)
        assert names == sorted(f"pg-down-{i}" for i in range(10))  # each exactly once
        assert all(c.turns and c.turns[0].caller_text == "hello?" for c in full)
    finally:
        await host.drain(0.5)
