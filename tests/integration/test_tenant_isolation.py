"""Adversarial isolation: randomised attempts to reach another tenant's objects through every
Get/List/Update/Delete path, with the attacker's own credential, a mismatched x-tenant-id, or
the attacker's API key. Nothing leaks, nothing changes, and the answer is the same whether the
victim's object exists or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from tenant_svc.db.database import DatabaseSettings
from tests.integration.tenant_harness import TenantApi, tenant_api

N_TENANTS = 4
MASK = field_mask_pb2.FieldMask(paths=["greeting"])


@dataclass
class World:
    api: TenantApi
    tenants: list[str]
    keys: dict[str, str]  # tenant -> admin API key
    snapshot: dict[str, bytes]  # tenant -> serialized agent before attacks


@pytest.fixture(scope="module")
async def world(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[World]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as api:
        tenants, keys, snapshot = [], {}, {}
        for i in range(N_TENANTS):
            t = await api.new_tenant(pb.PLAN_TIER_ENTERPRISE)  # the attacks must not hit a rate limit
            agent = await api.new_agent(t, "shared-id", f"secret prompt {i}")
            number = f"+1{900 + i}555{int(t[-6:], 16) % 10**4:04d}"
            await api.stub.CreatePhoneNumber(
                svc.CreatePhoneNumberRequest(
                    parent=f"tenants/{t}",
                    phone_number=pb.PhoneNumber(e164_number=number, agent=agent.name),
                    phone_number_id="main",
                ),
                metadata=api.md(t, "admin"),
            )
            await api.stub.CreateCall(
                svc.CreateCallRequest(
                    parent=f"tenants/{t}", call=pb.Call(status=pb.CALL_STATUS_COMPLETED), call_id="c1"
                ),
                metadata=api.md(t, "agent"),
            )
            created = await api.stub.CreateApiKey(
                svc.CreateApiKeyRequest(parent=f"tenants/{t}", api_key=pb.ApiKey(roles=["admin"])),
                metadata=api.md(t, "admin"),
            )
            tenants.append(t)
            keys[t] = created.key
            snapshot[t] = agent.SerializeToString()
        yield World(api, tenants, keys, snapshot)


def requests(victim: str, rid: str) -> dict[str, tuple[str, object]]:
    """Every path to one of the victim's resources (``rid`` exists or not)."""
    base = f"tenants/{victim}"
    return {
        "GetAgent": ("GetAgent", svc.GetAgentRequest(name=f"{base}/agents/{rid}")),
        "UpdateAgent": (
            "UpdateAgent",
            svc.UpdateAgentRequest(
                agent=pb.Agent(name=f"{base}/agents/{rid}", greeting="pwned"), update_mask=MASK
            ),
        ),
        "DeleteAgent": ("DeleteAgent", svc.DeleteAgentRequest(name=f"{base}/agents/{rid}")),
        "ListAgents": ("ListAgents", svc.ListAgentsRequest(parent=base)),
        "GetPhoneNumber": ("GetPhoneNumber", svc.GetPhoneNumberRequest(name=f"{base}/phoneNumbers/{rid}")),
        "DeletePhoneNumber": (
            "DeletePhoneNumber",
            svc.DeletePhoneNumberRequest(name=f"{base}/phoneNumbers/{rid}"),
        ),
        "ListPhoneNumbers": ("ListPhoneNumbers", svc.ListPhoneNumbersRequest(parent=base)),
        "GetCall": ("GetCall", svc.GetCallRequest(name=f"{base}/calls/{rid}")),
        "ListCalls": ("ListCalls", svc.ListCallsRequest(parent=base)),
        "ListApiKeys": ("ListApiKeys", svc.ListApiKeysRequest(parent=base)),
        "GetTenant": ("GetTenant", svc.GetTenantRequest(name=base)),
        "UpdateTenant": (
            "UpdateTenant",
            svc.UpdateTenantRequest(
                tenant=pb.Tenant(name=base, display_name="pwned"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
        ),
        "ListAuditLogEntries": ("ListAuditLogEntries", svc.ListAuditLogEntriesRequest(parent=base)),
        # The usage ledger (issue 17) and ListCalls' filters.
        "GetUsage": ("GetUsage", us.GetUsageRequest(parent=base, group_by=[us.USAGE_GROUP_BY_AGENT])),
        "ListUsage": ("ListUsage", us.ListUsageRequest(parent=base)),
        "ExportUsage": ("ExportUsage", us.ExportUsageRequest(parent=base)),
        "GetContractPrices": ("GetContractPrices", us.GetContractPricesRequest(parent=base)),
        "UpdateContractPrices": ("UpdateContractPrices", us.UpdateContractPricesRequest(parent=base)),
        "ListCallsFiltered": (
            "ListCalls",
            svc.ListCallsRequest(parent=base, agent=f"{base}/agents/{rid}", order_by="start_time asc"),
        ),
    }


USAGE_METHODS = frozenset(
    {"GetUsage", "ListUsage", "ExportUsage", "GetContractPrices", "UpdateContractPrices"}
)
EXISTING = {"Agent": "shared-id", "PhoneNumber": "main", "Call": "c1"}


def existing_id(op: str) -> str:
    return next((v for k, v in EXISTING.items() if k in op), "shared-id")


async def attempt(
    api: TenantApi, method: str, request: object, metadata: tuple[tuple[str, str], ...]
) -> tuple[str, str]:
    stub = us_grpc.UsageServiceStub(api.channel) if method in USAGE_METHODS else api.stub
    try:
        reply = await getattr(stub, method)(request, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        return e.code().name, e.details() or ""
    return "OK", str(reply)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    pair=st.permutations(range(N_TENANTS)).map(lambda p: (p[0], p[1])),
    op=st.sampled_from(sorted(requests("x", "y"))),
    how=st.sampled_from(["own-header", "victim-header", "api-key-victim-header", "viewer-victim-header"]),
)
async def test_no_path_reaches_another_tenant(world: World, pair: tuple[int, int], op: str, how: str) -> None:
    api = world.api
    attacker, victim = world.tenants[pair[0]], world.tenants[pair[1]]
    if how == "own-header":
        md = api.md(attacker, "admin")
    elif how == "victim-header":
        md = api.md(attacker, "admin", header_tenant=victim)
    elif how == "viewer-victim-header":
        md = api.md(attacker, "viewer", header_tenant=victim)
    else:
        md = api.key_md(world.keys[attacker], victim)
    outcomes = set()
    for rid in (existing_id(op), "does-not-exist"):
        method, request = requests(victim, rid)[op]
        code, details = await attempt(api, method, request, md)
        assert code in ("PERMISSION_DENIED", "UNAUTHENTICATED"), (op, how, code)
        assert victim not in details and attacker not in details, details
        outcomes.add((code, details))
    assert len(outcomes) == 1, f"{op}/{how}: the answer reveals whether the object exists: {outcomes}"
    # The victim's data is untouched.
    got = await api.stub.GetAgent(
        svc.GetAgentRequest(name=f"tenants/{victim}/agents/shared-id"), metadata=api.md(victim, "viewer")
    )
    snapshot = pb.Agent.FromString(world.snapshot[victim])
    assert (got.system_prompt, got.greeting, got.revision) == (
        snapshot.system_prompt,
        snapshot.greeting,
        snapshot.revision,
    )


async def test_lists_show_only_own_rows(world: World) -> None:
    api = world.api
    for t in world.tenants:
        agents = await api.stub.ListAgents(
            svc.ListAgentsRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
        )
        phones = await api.stub.ListPhoneNumbers(
            svc.ListPhoneNumbersRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
        )
        calls = await api.stub.ListCalls(
            svc.ListCallsRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
        )
        names = [x.name for x in [*agents.agents, *phones.phone_numbers, *calls.calls]]
        assert len(names) == 3 and all(n.startswith(f"tenants/{t}/") for n in names)
        usage = await us_grpc.UsageServiceStub(api.channel).GetUsage(
            us.GetUsageRequest(parent=f"tenants/{t}", group_by=[us.USAGE_GROUP_BY_AGENT]),
            metadata=api.md(t, "viewer"),
        )
        assert usage.calls == 1 and len(usage.rows) == 1, usage  # its own one call, nobody else's
