"""Durable call records: written during the call and at its end through the gateway's own
internal credential (never the tenant's API rate limit), idempotent by revision, and refused to
edge credentials."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from psycopg_pool import AsyncConnectionPool

from common.auth import AuthSettings, build_auth
from common.crypto import KekSettings, TenantKeyring, build_key_provider
from common.errors import NotFound
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2 as rec
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2_grpc as rec_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from gateway.records import gateway_credential
from gateway.turn_failures import CLOSING_LINE
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository
from tests.caller import ConverseCaller
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import LlmScript, ScriptedLlm, ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


async def stored(pool: AsyncConnectionPool, tenant: str, call_id: str) -> pb.Call | None:
    """The record as PostgreSQL holds it (read under the tenant's RLS, not through the API),
    its sealed transcript opened with the session's key ring as tenant_svc would."""
    protection = DataProtection(TenantKeyring(await build_key_provider(KekSettings())))
    try:
        async with Repository(pool, protection).tenant(tenant) as t:
            return await t.get_call(call_id)
    except NotFound:
        return None


async def eventually(pool: AsyncConnectionPool, tenant: str, call_id: str, check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        call = await stored(pool, tenant, call_id)
        if call is not None and check(call):
            return call
        assert loop.time() < deadline, f"record of {call_id} never matched: {call}"
        await asyncio.sleep(0.05)


async def exhaust_api_rate(api: TenantApi, tenant: str) -> None:
    for _ in range(100):
        try:
            await api.stub.GetTenant(
                svc.GetTenantRequest(name=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer")
            )
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
            return
    raise AssertionError("the tenant's API rate never ran out")


def caller_md(tenant: str, call_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), ("x-call-id", call_id), bearer(tenant))


async def test_the_record_grows_during_the_call_and_ends_complete_without_the_api_rate(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant(pb.PLAN_TIER_FREE)  # 60 requests/min, burst 10
    await exhaust_api_rate(api, tenant)
    stt = ScriptedStt(["what are your hours?", "thanks, bye."])
    async with (
        scripted_mesh(stt, tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config(), metadata=caller_md(tenant, "rec-live-1")) as caller:
            await caller.wait_for(lambda c: c.of("call_started"))
            # Written at once although the tenant's API rate is spent: not through that bucket.
            started = await eventually(pg_pool, tenant, "rec-live-1", lambda c: True, timeout=0.8)
            assert started.status == pb.CALL_STATUS_IN_PROGRESS and not started.turns
            await caller.send_pcm(tone(700))
            await caller.wait_for(caller.turn_done(1), timeout=10)
            mid = await eventually(pg_pool, tenant, "rec-live-1", lambda c: len(c.turns) >= 1)
            assert mid.status == pb.CALL_STATUS_IN_PROGRESS
            assert mid.turns[0].caller_text == "what are your hours?"
            await caller.send_pcm(tone(700))
            await caller.wait_for(caller.turn_done(2), timeout=10)
            await caller.hangup()
        done = await eventually(pg_pool, tenant, "rec-live-1", lambda c: c.status == pb.CALL_STATUS_COMPLETED)
    assert done.end_reason == "caller_hangup" and [t.caller_text for t in done.turns][:2] == [
        "what are your hours?",
        "thanks, bye.",
    ]


async def test_a_burst_of_calls_beyond_the_api_rate_keeps_every_admitted_calls_record(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant(pb.PLAN_TIER_FREE)  # 60/min, burst 10, for calls and for the API
    await exhaust_api_rate(api, tenant)  # records written with the tenant's credential were lost
    admitted: list[str] = []
    refused = 0
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        for i in range(14):
            call_id = f"burst-{i}"
            async with ConverseCaller(ch, inline_config(), metadata=caller_md(tenant, call_id)) as caller:
                await caller.wait_for(lambda c: c.of("call_started") or c.error, keep_talking=False)
                if caller.error is not None:
                    assert caller.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    refused += 1
                    continue
                admitted.append(call_id)
                await caller.hangup()
        for call_id in admitted:
            await eventually(pg_pool, tenant, call_id, lambda c: c.status == pb.CALL_STATUS_COMPLETED)
    assert len(admitted) >= 10 and refused >= 1  # the call rate itself still applies
    async with Repository(pg_pool).tenant(tenant) as t:
        rows = await t.list_calls(2**62, 100)
    assert sorted(c.name.rsplit("/", 1)[1] for _, c in rows) == sorted(admitted)  # each once, no others


async def test_only_the_internal_credential_writes_records_and_replays_change_nothing(
    api: TenantApi, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant()
    stub = rec_grpc.CallRecordInternalServiceStub(api.channel)

    def request(revision: int, turns: int) -> rec.UpsertCallRecordRequest:
        call = pb.Call(status=pb.CALL_STATUS_IN_PROGRESS)
        for i in range(1, turns + 1):
            call.turns.add(index=i, caller_text=f"t{i}")
        return rec.UpsertCallRecordRequest(
            parent=f"tenants/{tenant}", call_id="c-idem", revision=revision, call=call
        )

    for roles in (("agent",), ("admin",)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertCallRecord(
                request(1, 1), metadata=(("x-tenant-id", tenant), bearer(tenant, roles))
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "internal" in (info.value.details() or "")
    issuer = build_auth(
        AuthSettings(mode="dev", dev_key_dir=str(KEY_DIR)), issue_internal_tokens=True
    ).internal_issuer
    credential = gateway_credential(issuer)
    assert credential is not None
    md = (("x-tenant-id", tenant), ("authorization", credential(tenant)))
    first = await stub.UpsertCallRecord(request(2, 2), metadata=md)
    assert first.applied and first.stored_revision == 2
    for revision in (2, 1):  # a replay, then a late older snapshot
        again = await stub.UpsertCallRecord(request(revision, 1), metadata=md)
        assert not again.applied and again.stored_revision == 2
    record = await stored(pg_pool, tenant, "c-idem")
    assert record is not None and len(record.turns) == 2
    # Another tenant's credential cannot write into this tenant.
    other = await api.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertCallRecord(
            request(3, 3), metadata=(("x-tenant-id", other), ("authorization", credential(other)))
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertCallRecord(
            rec.UpsertCallRecordRequest(parent=f"tenants/{tenant}", call_id="Bad_Id", revision=1), metadata=md
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "call_id" in (info.value.details() or "")


async def test_a_dead_llm_ends_the_call_after_two_failed_turns_marked_in_the_record(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant()
    llm = ScriptedLlm(LlmScript(fail_after_tokens=0))  # every reply fails before its first token
    stt = ScriptedStt(["hello?", "are you there?", "hello??"])
    async with (
        scripted_mesh(stt, llm, tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, inline_config(), metadata=caller_md(tenant, "dead-llm-1")) as caller:
            await caller.wait_for(lambda c: c.of("call_started"))
            await caller.send_pcm(tone(700))
            await caller.wait_for(caller.turn_done(1), timeout=15)
            await caller.send_pcm(tone(700))
            for _ in range(200):  # the line carries silence until the gateway ends the call
                if caller.of("call_ended") or caller.error is not None:
                    break
                try:
                    await caller.silence(100)
                except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                    break
            await caller.wait_for(lambda c: c.of("call_ended"), timeout=10, keep_talking=False)
        ended = caller.of("call_ended")[-1].msg.call_ended
        record = await eventually(pg_pool, tenant, "dead-llm-1", lambda c: c.status == pb.CALL_STATUS_FAILED)
    assert ended.reason == gateway_pb2.END_REASON_SERVICE_ERROR and "2 turns in a row failed" in ended.message
    assert CLOSING_LINE.split(".")[0] in " ".join(caller.agent_texts())
    assert record.end_reason == "service_error"
    by_turn = {t.index: t for t in record.turns}
    assert by_turn[1].failed and by_turn[2].failed
    assert by_turn[2].agent_text.startswith(CLOSING_LINE.split(",")[0])


async def test_a_call_cut_by_the_gateways_drain_is_recorded_as_interrupted(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant()
    async with contextlib.AsyncExitStack() as stack:
        mesh = await stack.enter_async_context(
            scripted_mesh(ScriptedStt(["hello?"]), tenant_address=api.address, redis_url=redis_url)
        )
        ch = await stack.enter_async_context(grpc.aio.insecure_channel(mesh.address))
        caller = await stack.enter_async_context(
            ConverseCaller(ch, inline_config(), metadata=caller_md(tenant, "drained-1"))
        )
        await caller.wait_for(lambda c: c.of("call_started"))
        await caller.send_pcm(tone(700))
        await caller.wait_for(caller.turn_done(1), timeout=15)
        await mesh.app.drain(0.3)  # SIGTERM's drain, and the call outlives its grace
    record = await eventually(pg_pool, tenant, "drained-1", lambda c: c.status != pb.CALL_STATUS_IN_PROGRESS)
    assert record.status == pb.CALL_STATUS_INTERRUPTED and record.end_reason == "gateway_stopped"
    assert record.turns[0].caller_text == "hello?"
