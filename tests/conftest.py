"""Shared fixtures: real gRPC servers on loopback, started in-process on free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc.aio
import pytest

from common.server import ServiceHost

TENANT = "tenant-test"


def md(call_id: str = "call-test", tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    """Metadata every internal hop must carry."""
    return (("x-tenant-id", tenant), ("x-call-id", call_id))


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
