"""TenantService over real gRPC, PostgreSQL and dev-mode JWTs: resources, credentials, RBAC,
bad input, and the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


async def code_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_agent_lifecycle_with_field_mask_and_revision(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = await api.new_agent(t, "sales", "Sell politely.")
    assert agent.name == f"tenants/{t}/agents/sales" and agent.revision == 1
    update = pb.Agent(name=agent.name, greeting="Hi there", system_prompt="ignored: not in the mask")
    updated = await api.stub.UpdateAgent(
        svc.UpdateAgentRequest(agent=update, update_mask=field_mask_pb2.FieldMask(paths=["greeting"])),
        metadata=api.md(t, "admin"),
    )
    assert (
        updated.greeting == "Hi there" and updated.system_prompt == "Sell politely." and updated.revision == 2
    )
    got = await api.stub.GetAgent(svc.GetAgentRequest(name=agent.name), metadata=api.md(t, "viewer"))
    assert got == updated
    await api.stub.DeleteAgent(svc.DeleteAgentRequest(name=agent.name), metadata=api.md(t, "admin"))
    code, _ = await code_of(
        api.stub.GetAgent(svc.GetAgentRequest(name=agent.name), metadata=api.md(t, "viewer"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_list_pages_through_everything_once(api: TenantApi) -> None:
    t = await api.new_tenant()
    for i in range(7):
        await api.new_agent(t, f"a{i}")
    seen: list[str] = []
    token = ""
    while True:
        page = await api.stub.ListAgents(
            svc.ListAgentsRequest(parent=f"tenants/{t}", page_size=3, page_token=token),
            metadata=api.md(t, "viewer"),
        )
        seen += [a.name.rsplit("/", 1)[1] for a in page.agents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"a{i}" for i in range(7)]


async def test_page_token_of_another_tenant_is_refused(api: TenantApi) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    for i in range(3):
        await api.new_agent(a, f"x{i}")
    page = await api.stub.ListAgents(
        svc.ListAgentsRequest(parent=f"tenants/{a}", page_size=1), metadata=api.md(a, "viewer")
    )
    code, msg = await code_of(
        api.stub.ListAgents(
            svc.ListAgentsRequest(parent=f"tenants/{b}", page_token=page.next_page_token),
            metadata=api.md(b, "viewer"),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in msg


async def test_viewer_cannot_write_and_platform_manages_tenants(api: TenantApi) -> None:
    t = await api.new_tenant()
    code, _ = await code_of(
        api.stub.CreateAgent(
            svc.CreateAgentRequest(parent=f"tenants/{t}", agent=pb.Agent(system_prompt="x")),
            metadata=api.md(t, "viewer"),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await code_of(api.stub.ListTenants(svc.ListTenantsRequest(), metadata=api.md(t, "admin")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    listed = await api.stub.ListTenants(
        svc.ListTenantsRequest(page_size=1000), metadata=api.md(None, "platform")
    )
    assert f"tenants/{t}" in [x.name for x in listed.tenants]
    # A tenant admin may rename the tenant but not change its plan.
    mask = field_mask_pb2.FieldMask(paths=["plan_tier"])
    code, msg = await code_of(
        api.stub.UpdateTenant(
            svc.UpdateTenantRequest(
                tenant=pb.Tenant(name=f"tenants/{t}", plan_tier=pb.PLAN_TIER_ENTERPRISE), update_mask=mask
            ),
            metadata=api.md(t, "admin"),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "platform" in msg


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        (pb.Agent(system_prompt="  "), "system_prompt"),
        (pb.Agent(system_prompt="ok", voice="no-such-voice"), "voice"),
        (pb.Agent(system_prompt="ok", tts_providers=["acme"]), "tts_providers"),
        (pb.Agent(system_prompt="ok", transfer_number="555-1234"), "transfer_number"),
        (pb.Agent(system_prompt="ok", keyterms=["k"] * 101), "keyterms"),
        (pb.Agent(system_prompt="ok", language_code="english please"), "language_code"),
    ],
)
async def test_bad_agent_fields_name_the_field(api: TenantApi, agent: pb.Agent, field: str) -> None:
    t = await api.new_tenant()
    code, msg = await code_of(
        api.stub.CreateAgent(
            svc.CreateAgentRequest(parent=f"tenants/{t}", agent=agent), metadata=api.md(t, "admin")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in msg


async def test_phone_numbers_e164_and_global_uniqueness(api: TenantApi) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    await api.new_agent(a)
    await api.new_agent(b)
    bad = pb.PhoneNumber(e164_number="4155550123", agent=f"tenants/{a}/agents/front-desk")
    code, msg = await code_of(
        api.stub.CreatePhoneNumber(
            svc.CreatePhoneNumberRequest(parent=f"tenants/{a}", phone_number=bad), metadata=api.md(a, "admin")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "e164_number" in msg
    number = f"+1415{int(a[-6:], 16) % 10**7:07d}"
    await api.stub.CreatePhoneNumber(
        svc.CreatePhoneNumberRequest(
            parent=f"tenants/{a}",
            phone_number=pb.PhoneNumber(e164_number=number, agent=f"tenants/{a}/agents/front-desk"),
        ),
        metadata=api.md(a, "admin"),
    )
    code, msg = await code_of(
        api.stub.CreatePhoneNumber(
            svc.CreatePhoneNumberRequest(
                parent=f"tenants/{b}",
                phone_number=pb.PhoneNumber(e164_number=number, agent=f"tenants/{b}/agents/front-desk"),
            ),
            metadata=api.md(b, "admin"),
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and a not in msg
    route = await api.stub.LookupPhoneNumber(
        svc.LookupPhoneNumberRequest(e164_number=number), metadata=api.md(None, "platform")
    )
    assert route.agent == f"tenants/{a}/agents/front-desk"
    code, _ = await code_of(
        api.stub.LookupPhoneNumber(
            svc.LookupPhoneNumberRequest(e164_number=number), metadata=api.md(b, "agent")
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED  # b may not resolve a's number


async def test_api_key_works_once_created_and_stops_when_revoked(api: TenantApi) -> None:
    t = await api.new_tenant()
    created = await api.stub.CreateApiKey(
        svc.CreateApiKeyRequest(
            parent=f"tenants/{t}", api_key=pb.ApiKey(display_name="ci", roles=["viewer"])
        ),
        metadata=api.md(t, "admin"),
    )
    assert created.key.startswith(f"vai_{created.api_key.key_prefix}_")
    listed = await api.stub.ListApiKeys(
        svc.ListApiKeysRequest(parent=f"tenants/{t}"), metadata=api.md(t, "admin")
    )
    assert created.key not in str(listed) and len(listed.api_keys) == 1
    tenant = await api.stub.GetTenant(
        svc.GetTenantRequest(name=f"tenants/{t}"), metadata=api.key_md(created.key, t)
    )
    assert tenant.name == f"tenants/{t}"
    other = await api.new_tenant()
    code, _ = await code_of(
        api.stub.GetTenant(
            svc.GetTenantRequest(name=f"tenants/{other}"), metadata=api.key_md(created.key, other)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await code_of(
        api.stub.CreateAgent(
            svc.CreateAgentRequest(parent=f"tenants/{t}", agent=pb.Agent(system_prompt="x")),
            metadata=api.key_md(created.key, t),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED  # a viewer key cannot write
    await api.stub.RevokeApiKey(
        svc.RevokeApiKeyRequest(name=created.api_key.name), metadata=api.md(t, "admin")
    )
    code, _ = await code_of(
        api.stub.GetTenant(svc.GetTenantRequest(name=f"tenants/{t}"), metadata=api.key_md(created.key, t))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_calls_are_recorded_and_read_back_per_tenant(api: TenantApi) -> None:
    t = await api.new_tenant()
    call = pb.Call(
        agent=f"tenants/{t}/agents/front-desk", status=pb.CALL_STATUS_COMPLETED, end_reason="caller_hangup"
    )
    call.turns.add(
        index=1, caller_text="What are your hours?", agent_text="Eight to six.", first_audio_out_ms=612.5
    )
    call.usage.llm_completion_tokens = 7
    await api.stub.CreateCall(
        svc.CreateCallRequest(parent=f"tenants/{t}", call=call, call_id="c1"), metadata=api.md(t, "agent")
    )
    got = await api.stub.GetCall(
        svc.GetCallRequest(name=f"tenants/{t}/calls/c1"), metadata=api.md(t, "viewer")
    )
    assert got.turns[0].agent_text == "Eight to six." and got.turns[0].first_audio_out_ms == 612.5
    assert got.usage.llm_completion_tokens == 7
    listed = await api.stub.ListCalls(
        svc.ListCallsRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
    )
    assert [c.name for c in listed.calls] == [got.name] and not listed.calls[0].turns
    code, _ = await code_of(
        api.stub.CreateCall(
            svc.CreateCallRequest(parent=f"tenants/{t}", call=call, call_id="c1"), metadata=api.md(t, "agent")
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS


async def test_audit_log_records_who_changed_what(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = await api.new_agent(t)
    await api.stub.UpdateAgent(
        svc.UpdateAgentRequest(
            agent=pb.Agent(name=agent.name, greeting="Hello"),
            update_mask=field_mask_pb2.FieldMask(paths=["greeting"]),
        ),
        metadata=api.md(t, "admin"),
    )
    log = await api.stub.ListAuditLogEntries(
        svc.ListAuditLogEntriesRequest(parent=f"tenants/{t}"), metadata=api.md(t, "admin")
    )
    actions = [(e.action, e.resource, list(e.changed_fields)) for e in log.audit_log_entries]
    assert actions[:2] == [("UpdateAgent", agent.name, ["greeting"]), ("CreateAgent", agent.name, [])]
    assert all(e.actor for e in log.audit_log_entries)
    code, _ = await code_of(
        api.stub.ListAuditLogEntries(
            svc.ListAuditLogEntriesRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_requests_per_minute_per_tenant_by_plan(api: TenantApi) -> None:
    free, other = await api.new_tenant(pb.PLAN_TIER_FREE), await api.new_tenant(pb.PLAN_TIER_FREE)
    md = api.md(free, "viewer")
    codes = []
    for _ in range(30):  # free: 60 per minute with a burst of 10
        try:
            await api.stub.GetTenant(svc.GetTenantRequest(name=f"tenants/{free}"), metadata=md)
            codes.append("OK")
        except grpc.aio.AioRpcError as e:
            codes.append(e.code().name)
            details = e.details() or ""
    assert "RESOURCE_EXHAUSTED" in codes and codes[0] == "OK"
    assert "retry in" in details and free not in details
    # Another tenant on the same plan is not affected; bad credentials never spend the quota.
    await api.stub.GetTenant(svc.GetTenantRequest(name=f"tenants/{other}"), metadata=api.md(other, "viewer"))
