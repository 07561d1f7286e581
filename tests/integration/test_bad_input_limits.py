"""Bad input found by probing: NUL and oversized strings are INVALID_ARGUMENT naming the field
(no error log a client could trigger), DTMF is bounded per message and per call, and tenant_svc's
rate-limit refusal reaches a caller as RESOURCE_EXHAUSTED with its retry hint."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import status_pb2

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.caller import ConverseCaller, linear16
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import inline_config, scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_call_records import exhaust_api_rate


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


async def refusal(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_nul_and_oversized_strings_are_invalid_argument_naming_the_field(
    api: TenantApi, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await api.new_tenant()
    caplog.set_level(logging.INFO)
    code, details = await refusal(
        api.stub.CreateAgent(
            svc.CreateAgentRequest(
                parent=f"tenants/{tenant}",
                agent=pb.Agent(system_prompt="Be brief.\x00"),
                agent_id="nul-agent",
            ),
            metadata=api.md(tenant, "admin"),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "agent.system_prompt contains a NUL"
    )
    code, details = await refusal(
        api.stub.UpdateTenant(
            svc.UpdateTenantRequest(
                tenant=pb.Tenant(name=f"tenants/{tenant}", display_name="x" * 1_000_000),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=api.md(tenant, "admin"),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "tenant.display_name is 1000000 characters; the limit is 200"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _dtmf_call(
    ch: grpc.aio.Channel, messages: list[str], ends: bool = True
) -> gateway_pb2.CallEnded | None:
    async with ConverseCaller(ch, inline_config()) as caller:
        await caller.wait_for(lambda c: c.of("call_started"))
        for digits in messages:
            if caller.error is not None or caller.of("call_ended"):
                break
            try:
                await caller.call.write(gateway_pb2.ConverseRequest(dtmf=digits))
            except (grpc.aio.AioRpcError, Exception):
                break
        if ends:
            await caller.wait_for(lambda c: c.of("call_ended") or c.error, keep_talking=False)
        else:
            await caller.silence(1000)
        ended = caller.of("call_ended")
        return ended[-1].msg.call_ended if ended else None


async def test_dtmf_is_bounded_per_message_and_per_call() -> None:
    async with scripted_mesh(ScriptedStt([])) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        one_long = await _dtmf_call(ch, ["1" * 100_000])
        assert one_long is not None and one_long.reason == gateway_pb2.END_REASON_INVALID_INPUT
        assert "dtmf has 100000 digits in one message; at most 32" in one_long.message
        many = await _dtmf_call(ch, ["1234567890" * 3] * 40)  # 1,200 digits in 40 short messages
        assert many is not None and many.reason == gateway_pb2.END_REASON_INVALID_INPUT
        assert "at most 1000 digits per call" in many.message
        fine = await _dtmf_call(ch, ["12#"], ends=False)
        assert fine is None  # a few digits are just keypad input: the call goes on


async def test_tenant_svc_rate_refusal_reaches_the_caller_as_resource_exhausted(
    api: TenantApi, redis_url: str
) -> None:
    tenant = await api.new_tenant(pb.PLAN_TIER_FREE)
    await api.new_agent(tenant, "reception")
    await exhaust_api_rate(api, tenant)
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        config = gateway_pb2.CallConfig(agent_id="reception", caller_audio_format=linear16())
        async with ConverseCaller(ch, config, metadata=(("x-tenant-id", tenant), bearer(tenant))) as caller:
            await caller.wait_for(lambda c: c.error, keep_talking=False)
    assert caller.error is not None and caller.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests per minute" in (caller.error.details() or "")
    raw = dict(caller.error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw and any("RetryInfo" in d.type_url for d in status_pb2.Status.FromString(raw).details)
