"""A real tenant_svc with LiveKit SIP on, talking to the LiveKit Twirp double over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio

from common.auth import AuthSettings
from common.gen.voiceai.telephony.v1 import telephony_service_pb2_grpc as tel_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.app import Settings, TenantHost, build_host
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.telephony import LiveKitSettings
from tests.doubles.livekit_twirp import LiveKitDouble
from tests.integration.tenant_harness import TenantApi


@dataclass
class SipApi(TenantApi):
    host: TenantHost | None = None
    double: LiveKitDouble | None = None

    @property
    def phones(self) -> tel_grpc.TelephonyServiceStub:
        return tel_grpc.TelephonyServiceStub(self.channel)

    async def new_number(self, tenant: str, agent: str = "front-desk", pid: str = "") -> pb.PhoneNumber:
        return await new_number(self, tenant, agent, pid)

    async def reconciled(self, runs: int = 1, timeout: float = 10.0) -> None:
        assert self.host is not None and self.host.telephony is not None
        reconciler = self.host.telephony.reconciler
        async with asyncio.timeout(timeout):
            while True:  # the reconciler's own background task: poll its count
                if reconciler.runs >= runs:
                    return
                await asyncio.sleep(0.02)


async def new_number(api: TenantApi, tenant: str, agent: str = "front-desk", pid: str = "") -> pb.PhoneNumber:
    return await api.stub.CreatePhoneNumber(
        svc.CreatePhoneNumberRequest(
            parent=f"tenants/{tenant}",
            phone_number=pb.PhoneNumber(e164_number=fresh_number(), agent=f"tenants/{tenant}/agents/{agent}"),
            phone_number_id=pid,
        ),
        metadata=api.md(tenant, "admin"),
    )


def fresh_number() -> str:
    return f"+1555{random.randrange(10**7):07d}"


def ours(double: LiveKitDouble, tenant: str) -> tuple[list[Any], list[Any], list[Any]]:
    """(inbound trunks, dispatch rules, outbound trunks) named for ``tenant``."""
    prefix = f"voiceai:{tenant}:"
    with double.lock:
        return (
            [t for t in double.inbound.values() if t.name.startswith(prefix)],
            [r for r in double.rules.values() if r.name.startswith(prefix)],
            [t for t in double.outbound.values() if t.name.startswith(prefix)],
        )


def meta(obj: Any) -> dict[str, str]:
    return dict(json.loads(obj.metadata))


def livekit_settings(double: LiveKitDouble, **overrides: Any) -> LiveKitSettings:
    values: dict[str, Any] = {
        "url": double.url,
        "api_key": double.api_key,
        "api_secret": double.api_secret,
        "sip_outbound_address": "sip.carrier.test:5060",
        "reconcile_interval_s": 0,
        "call_poll_interval_s": 0.02,
        "request_timeout_s": 3,
    }
    return LiveKitSettings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def sip_tenant_api(
    database: DatabaseSettings, key_dir: Path, double: LiveKitDouble, **overrides: Any
) -> AsyncIterator[SipApi]:
    host = await build_host(
        Settings(port=0),
        database,
        auth_settings=AuthSettings(mode="dev", dev_key_dir=str(key_dir)),
        livekit_settings=livekit_settings(double, **overrides),
    )
    port = await host.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield SipApi(address, key_dir, channel, host=host, double=double)
    finally:
        await host.drain(0.5)
