"""The gateway with tenancy: the agent comes from tenant_svc (through the Redis config cache),
calls are admitted under the tenant's plan, history lives in Redis, and each call's record
(transcript, per-turn latencies, usage) is written to tenant_svc when it ends."""

from __future__ import annotations

import asyncio
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
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


def config(agent_id: str) -> gateway_pb2.CallConfig:
    return gateway_pb2.CallConfig(agent_id=agent_id, caller_audio_format=linear16(16000))


def caller_md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), bearer(tenant))


async def wait_for_record(api: TenantApi, tenant: str) -> pb.Call:
    for _ in range(50):
        listed = await api.stub.ListCalls(
            svc.ListCallsRequest(parent=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer")
        )
        if listed.calls:
            return await api.stub.GetCall(
                svc.GetCallRequest(name=listed.calls[0].name), metadata=api.md(tenant, "viewer")
            )
        await asyncio.sleep(0.1)
    raise AssertionError("no call record was written")


async def test_tenant_agent_answers_and_the_call_is_recorded(api: TenantApi, redis_url: str) -> None:
    tenant = await api.new_tenant()
    agent = await api.new_agent(tenant, "reception", "Be brief.")
    await api.stub.UpdateAgent(
        svc.UpdateAgentRequest(
            agent=pb.Agent(name=agent.name, greeting="Welcome to the tenant's own agent."),
            update_mask=field_mask_pb2.FieldMask(paths=["greeting"]),
        ),
        metadata=api.md(tenant, "admin"),
    )
    stt = ScriptedStt(["what are your hours?", "thanks, bye."])
    async with (
        scripted_mesh(stt, tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as caller:
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(1500)
            for turn in (1, 2):
                await caller.send_pcm(tone(700))
                await caller.wait_for(caller.turn_done(turn), timeout=10)
            ended = await caller.hangup()
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    assert caller.agent_texts()[0] == "Welcome to the tenant's own agent."
    record = await wait_for_record(api, tenant)
    assert record.agent == agent.name and record.status == pb.CALL_STATUS_COMPLETED
    assert record.end_reason == "caller_hangup"
    by_turn = {t.index: t for t in record.turns}
    assert by_turn[1].caller_text == "what are your hours?" and by_turn[1].agent_text.startswith("You said")
    assert by_turn[2].caller_text == "thanks, bye."
    assert 0 < by_turn[1].first_audio_out_ms < 2000
    assert record.usage.stt_seconds > 1 and record.usage.tts_characters > 0


async def test_unknown_agent_and_other_tenants_agent_are_not_found(api: TenantApi, redis_url: str) -> None:
    mine, theirs = await api.new_tenant(), await api.new_tenant()
    await api.new_agent(theirs, "secret-agent")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        for agent_id in ("nobody", "secret-agent"):
            async with ConverseCaller(ch, config(agent_id), metadata=caller_md(mine)) as caller:
                await caller.wait_for(lambda c: c.error, timeout=5, keep_talking=False)
            assert caller.error is not None and caller.error.code() == grpc.StatusCode.NOT_FOUND


async def test_calls_over_the_plan_get_resource_exhausted_with_retry_info(
    api: TenantApi, redis_url: str
) -> None:
    tenant = await api.new_tenant(pb.PLAN_TIER_FREE)  # free: 2 concurrent calls
    await api.new_agent(tenant, "reception")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with (
            ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as one,
            ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as two,
        ):
            for c in (one, two):
                await c.wait_for(lambda c: c.of("call_started"))
            async with ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as three:
                await three.wait_for(lambda c: c.error, timeout=5, keep_talking=False)
            assert three.error is not None and three.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            raw = dict(three.error.trailing_metadata() or ()).get("grpc-status-details-bin")
            assert raw, "no google.rpc.Status details"
            assert any("RetryInfo" in d.type_url for d in status_pb2.Status.FromString(raw).details)
            # Another tenant is not affected by this tenant's limit.
            other = await api.new_tenant(pb.PLAN_TIER_FREE)
            await api.new_agent(other, "reception")
            async with ConverseCaller(ch, config("reception"), metadata=caller_md(other)) as fine:
                await fine.wait_for(lambda c: c.of("call_started"))
            await one.hangup()
            await two.hangup()
        # Slots are released when calls end: a new call is admitted again.
        async with ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as again:
            await again.wait_for(lambda c: c.of("call_started"), timeout=5)


async def test_converse_with_an_api_key_of_the_tenant(
    api: TenantApi, redis_url: str, database_settings: DatabaseSettings
) -> None:
    tenant, other = await api.new_tenant(), await api.new_tenant()
    await api.new_agent(tenant, "reception")
    created = await api.stub.CreateApiKey(
        svc.CreateApiKeyRequest(parent=f"tenants/{tenant}", api_key=pb.ApiKey(roles=["agent"])),
        metadata=api.md(tenant, "admin"),
    )
    key_md = (("x-tenant-id", tenant), ("authorization", f"ApiKey {created.key}"))
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, config("reception"), metadata=key_md) as caller:
            await caller.wait_for(lambda c: c.of("call_started"), timeout=5)
            await caller.hangup()
        wrong_tenant = (("x-tenant-id", other), ("authorization", f"ApiKey {created.key}"))
        async with ConverseCaller(ch, config("reception"), metadata=wrong_tenant) as caller:
            await caller.wait_for(lambda c: c.error, timeout=5, keep_talking=False)
        assert caller.error is not None and caller.error.code() == grpc.StatusCode.PERMISSION_DENIED
        forged = (("x-tenant-id", tenant), ("authorization", f"ApiKey {created.key[:-4]}AAAA"))
        async with ConverseCaller(ch, config("reception"), metadata=forged) as caller:
            await caller.wait_for(lambda c: c.error, timeout=5, keep_talking=False)
        assert caller.error is not None and caller.error.code() == grpc.StatusCode.UNAUTHENTICATED
