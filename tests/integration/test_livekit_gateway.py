"""``LiveKitGateway`` (what ``python -m gateway.livekit`` runs): the gateway app serves Converse
while the worker keeps trying to reach LiveKit, and SIGTERM's drain stops both cleanly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import AuthSettings
from common.discovery import StaticResolver
from common.settings import DiscoverySettings
from gateway.app import GatewayApp, Settings
from gateway.livekit.service import LiveKitGateway
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings, MissingCredential
from tests.credentials import KEY_DIR

UNREACHABLE = LiveKitCredentials(
    url="ws://127.0.0.1:9", api_key="APItest", api_secret="test-secret-not-real-0123456789abcdef"
)


@pytest.fixture(autouse=True)
def livekit_env() -> Iterator[None]:
    """AgentServer.run exports its credentials to the environment; later tests (tenant_svc turns
    LiveKit provisioning on when they are set) must not see them."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LIVEKIT_")}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("LIVEKIT_")]:
            del os.environ[name]
        os.environ.update(saved)


def app() -> GatewayApp:
    return GatewayApp(
        Settings(grace_period_s=1.0),
        StaticResolver({"stt": [], "llm": [], "tts": [], "tenant": []}),
        discovery=DiscoverySettings(tenant_addresses=""),
    )


async def test_converse_serves_while_the_worker_looks_for_livekit_and_drain_stops_both() -> None:
    gateway = LiveKitGateway(
        app(),
        UNREACHABLE,
        LiveKitSettings(http_host="127.0.0.1", http_port=0),
        AuthSettings(dev_key_dir=KEY_DIR),
    )
    port = await gateway.start()
    assert gateway.worker is not None and not gateway.worker.draining
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.wait_for(gateway.drain(), 20)
    assert gateway.worker.draining and gateway.app.servicer.draining
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)


async def test_no_gateway_without_credentials() -> None:
    with pytest.raises(MissingCredential, match="LIVEKIT_API_SECRET"):
        LiveKitGateway(app(), LiveKitCredentials(url="ws://x:7880", api_key="k"), LiveKitSettings())
