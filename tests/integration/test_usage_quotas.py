"""Monthly usage quotas through the real gateway and tenant_svc: a call that crosses the minute
cap ends after the agent's turn with END_REASON_QUOTA; a tenant at its cap is refused at
admission with a QuotaFailure naming the limit and its reset time; 80 % raises the soft alert."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.usage_limits import next_reset
from tenant_svc.db.database import DatabaseSettings
from tests.caller import ConverseCaller, linear16
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.livekit_harness import RoomLine, room_calls, start_call
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_livekit_calls import phone, refused, tenant_with_number


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


def soft_events() -> float:
    labels = {"limit": "monthly_call_minutes", "tier": "free"}
    return REGISTRY.get_sample_value("voiceai_usage_soft_limit_reached_total", labels) or 0.0


async def used_this_month(api: TenantApi, tenant: str, seconds: float) -> None:
    """A recorded call of ``seconds`` that ended now (this month's ledger)."""
    call = pb.Call(status=pb.CALL_STATUS_COMPLETED)
    now = datetime.now(UTC)
    call.start_time.FromDatetime(now - timedelta(seconds=seconds))
    call.end_time.FromDatetime(now)
    await api.stub.CreateCall(
        svc.CreateCallRequest(parent=f"tenants/{tenant}", call=call, call_id="earlier"),
        metadata=api.md(tenant, "agent"),
    )


async def talk_until_ended(caller: ConverseCaller, timeout_s: float = 15.0) -> None:
    """Quiet audio, as a line carries, until the gateway ends the call (it may end between writes)."""
    async with asyncio.timeout(timeout_s):
        while not caller.of("call_ended"):
            try:
                await caller.silence(100)
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError):  # it finished while we wrote
                break
        while not caller.of("call_ended"):  # noqa: ASYNC110 - the reader task appends it
            await asyncio.sleep(0.01)


async def calls_of(api: TenantApi, tenant: str) -> list[pb.Call]:
    listed = await api.stub.ListCalls(
        svc.ListCallsRequest(parent=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer")
    )
    return list(listed.calls)


async def test_minute_cap_ends_a_call_after_its_turn_then_refuses_with_the_reset_time(
    api: TenantApi, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await api.new_tenant(pb.PLAN_TIER_FREE)
    await api.new_agent(tenant, "reception")
    monkeypatch.setenv("VOICEAI_USAGE_LIMIT_OVERRIDES", json.dumps({tenant: {"monthly_call_minutes": 1}}))
    await used_this_month(api, tenant, 58)  # 58 of its 60 seconds
    md = (("x-tenant-id", tenant), bearer(tenant))
    cfg = gateway_pb2.CallConfig(agent_id="reception", caller_audio_format=linear16(16000))
    soft_before = soft_events()
    async with (
        scripted_mesh(
            ScriptedStt(["what are your hours?"]), tenant_address=api.address, redis_url=redis_url
        ) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, cfg, metadata=md) as caller:
            await caller.wait_for(lambda c: c.of("call_started"))
            assert soft_events() == soft_before + 1  # 97 % of the cap: the soft alert fired
            await caller.silence(2500)  # the call's own time takes the tenant past its minute
            await caller.send_pcm(tone(700))
            await talk_until_ended(caller)
        ended = caller.of("call_ended")[-1].msg.call_ended
        assert ended.reason == gateway_pb2.END_REASON_QUOTA, ended
        # Ended at the end of the turn: the reply was heard whole first, then the call ended.
        kinds = [r.kind for r in caller.received]
        assert "agent_speech" in kinds and kinds.index("call_ended") > max(
            i for i, k in enumerate(kinds) if k == "turn_metrics"
        )
        for _ in range(100):  # the record is written in the background (snapshots, then the end)
            found = await calls_of(api, tenant)
            if len(found) == 2 and found[0].end_reason:
                break
            await asyncio.sleep(0.1)
        (last, _earlier) = await calls_of(api, tenant)
        assert last.end_reason == "quota"
        async with ConverseCaller(ch, cfg, metadata=md) as refused:
            await refused.wait_for(lambda c: c.error, timeout=5, keep_talking=False)
    error = refused.error
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reset = next_reset(datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "call minutes" in (error.details() or "") and reset in (error.details() or "")
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw
    details = status_pb2.Status.FromString(raw).details
    failures = [d for d in details if "QuotaFailure" in d.type_url]
    assert failures
    quota = error_details_pb2.QuotaFailure()
    failures[0].Unpack(quota)
    assert quota.violations[0].subject == "monthly_call_minutes" and reset in quota.violations[0].description
    retry = [d for d in details if "RetryInfo" in d.type_url]
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert 0 < info.retry_delay.seconds <= 31 * 24 * 3600


async def test_a_phone_caller_of_a_tenant_at_its_cap_hears_the_refusal(
    api: TenantApi, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _agent, number = await tenant_with_number(api)
    monkeypatch.setenv("VOICEAI_USAGE_LIMIT_OVERRIDES", json.dumps({tenant: {"monthly_call_minutes": 1}}))
    await used_this_month(api, tenant, 61)
    before = refused("over_quota")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app) as (calls, sip),
    ):
        room = RoomLine(phone(number))
        call, _ = start_call(calls, room, sip)
        reason = await asyncio.wait_for(call, 10)
    assert reason == "refused_over_quota" and refused("over_quota") == before + 1
    assert sip.hung_up[-1] == room.name
