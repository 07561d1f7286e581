"""A REST round trip for every annotated RPC, through the real front, tenant_svc, PostgreSQL and the
LiveKit double. The RPC list comes from the descriptors: an RPC with no sample in SAMPLES fails.

To cover a new RPC, add ``"/pkg.Service/Method": sample`` below: a coroutine that calls it over
REST and checks the result against what gRPC sees.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.rest.routes import RouteTable
from tests.doubles.livekit_twirp import DialScript, LiveKitDouble
from tests.integration.livekit_sip_harness import SipApi, fresh_number, sip_tenant_api
from tests.integration.rest_harness import client, rest_front


@dataclass
class Ctx:
    """One sample's world: the gRPC api, the front's URL, a fresh tenant, the LiveKit double."""

    api: SipApi
    url: str
    tenant: str
    double: LiveKitDouble

    def http(self, *roles: str, tenant: str | None = "") -> httpx.AsyncClient:
        """A REST client with a token for this tenant (or ``tenant``) and ``roles``."""
        return client(self.url, self.api.token(self.tenant if tenant == "" else tenant, *roles))

    @property
    def parent(self) -> str:
        """``/v1/tenants/{tenant}``."""
        return f"/v1/tenants/{self.tenant}"


def ok(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()  # type: ignore[no-any-return]


async def _create_tenant(c: Ctx) -> None:
    async with c.http("platform", tenant=None) as h:
        got = ok(
            await h.post(
                "/v1/tenants",
                params={"tenantId": "rest-t1-" + c.tenant[-6:]},
                json={"displayName": "R", "planTier": "PLAN_TIER_FREE"},
            )
        )
    assert got["name"] == f"tenants/rest-t1-{c.tenant[-6:]}" and got["planTier"] == "PLAN_TIER_FREE"
    tid = got["name"].split("/")[1]
    seen = await c.api.stub.GetTenant(
        svc.GetTenantRequest(name=got["name"]), metadata=c.api.md(tid, "viewer")
    )
    assert seen.display_name == "R"


async def _get_tenant(c: Ctx) -> None:
    async with c.http("viewer") as h:
        got = ok(await h.get(c.parent))
    assert got["name"] == f"tenants/{c.tenant}" and got["planTier"] == "PLAN_TIER_PRO"
    assert got["createTime"].endswith("Z")  # Timestamp as RFC 3339


async def _list_tenants(c: Ctx) -> None:
    async with c.http("platform", tenant=None) as h:
        got = ok(await h.get("/v1/tenants", params={"pageSize": 2}))
    assert len(got["tenants"]) == 2 and got["nextPageToken"]


async def _update_tenant(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(
            await h.patch(c.parent, params={"updateMask": "displayName"}, json={"displayName": "Renamed"})
        )
    assert got["displayName"] == "Renamed"


async def _delete_tenant(c: Ctx) -> None:
    async with c.http("platform", tenant=None) as h:
        assert ok(await h.delete(c.parent)) == {}
        assert (await h.get(c.parent)).status_code == 404


async def _create_agent(c: Ctx) -> None:
    async with c.http("admin") as h:
        body = {"systemPrompt": "Be kind.", "keyterms": ["Acme"], "maxCallDuration": "90s"}
        got = ok(await h.post(f"{c.parent}/agents", params={"agentId": "kind"}, json=body))
    assert got["revision"] == "1"  # int64 as a string
    agent = await c.api.stub.GetAgent(
        svc.GetAgentRequest(name=got["name"]), metadata=c.api.md(c.tenant, "viewer")
    )
    assert agent.system_prompt == "Be kind." and agent.max_call_duration.seconds == 90


async def _get_agent(c: Ctx) -> None:
    agent = await c.api.new_agent(c.tenant, "g1", "Hello")
    async with c.http("viewer") as h:
        got = ok(await h.get(f"/v1/{agent.name}"))
    assert got["systemPrompt"] == "Hello" and got["name"] == agent.name


async def _list_agents(c: Ctx) -> None:
    for i in range(3):
        await c.api.new_agent(c.tenant, f"l{i}")
    async with c.http("viewer") as h:
        first = ok(await h.get(f"{c.parent}/agents", params={"pageSize": 2}))
        rest = ok(
            await h.get(f"{c.parent}/agents", params={"pageSize": 2, "pageToken": first["nextPageToken"]})
        )
    assert [a["name"].rsplit("/", 1)[1] for a in first["agents"] + rest["agents"]] == ["l0", "l1", "l2"]


async def _update_agent(c: Ctx) -> None:
    agent = await c.api.new_agent(c.tenant, "u1")
    async with c.http("admin") as h:
        got = ok(
            await h.patch(f"/v1/{agent.name}", params={"updateMask": "greeting"}, json={"greeting": "Hi!"})
        )
    assert got["greeting"] == "Hi!" and got["revision"] == "2"


async def _delete_agent(c: Ctx) -> None:
    agent = await c.api.new_agent(c.tenant, "d1")
    async with c.http("admin") as h:
        assert ok(await h.delete(f"/v1/{agent.name}")) == {}
        assert (await h.get(f"/v1/{agent.name}")).status_code == 404


async def _create_phone_number(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    number = fresh_number()
    async with c.http("admin") as h:
        body = {"e164Number": number, "agent": f"tenants/{c.tenant}/agents/front-desk"}
        got = ok(await h.post(f"{c.parent}/phoneNumbers", params={"phoneNumberId": "main"}, json=body))
    assert got["name"] == f"tenants/{c.tenant}/phoneNumbers/main" and got["e164Number"] == number


async def _get_phone_number(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    made = await c.api.new_number(c.tenant)
    async with c.http("viewer") as h:
        assert ok(await h.get(f"/v1/{made.name}"))["e164Number"] == made.e164_number


async def _list_phone_numbers(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    made = await c.api.new_number(c.tenant)
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/phoneNumbers"))
    assert [p["name"] for p in got["phoneNumbers"]] == [made.name]


async def _update_phone_number(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    await c.api.new_agent(c.tenant, "night")
    made = await c.api.new_number(c.tenant)
    async with c.http("admin") as h:
        body = {"agent": f"tenants/{c.tenant}/agents/night"}
        got = ok(await h.patch(f"/v1/{made.name}", params={"updateMask": "agent"}, json=body))
    assert got["agent"].endswith("/night")


async def _delete_phone_number(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    made = await c.api.new_number(c.tenant)
    async with c.http("admin") as h:
        assert ok(await h.delete(f"/v1/{made.name}")) == {}


async def _create_api_key(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(await h.post(f"{c.parent}/apiKeys", json={"displayName": "ci", "roles": ["viewer"]}))
    assert got["key"].startswith("vai_") and got["apiKey"]["roles"] == ["viewer"]
    async with client(c.url, got["key"]) as as_key:  # the new key works through the front
        assert ok(await as_key.get(f"{c.parent}/agents")) == {}


async def _get_api_key(c: Ctx) -> None:
    made = await c.api.stub.CreateApiKey(
        svc.CreateApiKeyRequest(parent=f"tenants/{c.tenant}", api_key=pb.ApiKey(roles=["viewer"])),
        metadata=c.api.md(c.tenant, "admin"),
    )
    async with c.http("admin") as h:
        got = ok(await h.get(f"/v1/{made.api_key.name}"))
    assert got["keyPrefix"] == made.api_key.key_prefix and "key" not in got


async def _list_api_keys(c: Ctx) -> None:
    async with c.http("admin") as h:
        ok(await h.post(f"{c.parent}/apiKeys", json={"roles": ["viewer"]}))
        assert len(ok(await h.get(f"{c.parent}/apiKeys"))["apiKeys"]) == 1


async def _revoke_api_key(c: Ctx) -> None:
    async with c.http("admin") as h:
        made = ok(await h.post(f"{c.parent}/apiKeys", json={"roles": ["viewer"]}))
        got = ok(await h.post(f"/v1/{made['apiKey']['name']}:revoke", json={}))
    assert got["revokeTime"]
    async with client(c.url, made["key"]) as as_key:
        assert (await as_key.get(f"{c.parent}/agents")).status_code == 401


def _call_body(c: Ctx) -> dict:  # type: ignore[type-arg]
    return {
        "agent": f"tenants/{c.tenant}/agents/front-desk",
        "status": "CALL_STATUS_COMPLETED",
        "direction": "CALL_DIRECTION_INBOUND",
        "startTime": "2026-12-07T10:00:00Z",
        "endTime": "2026-12-07T10:01:00Z",
        "turns": [
            {"index": 1, "callerText": "hi", "agentText": "hello", "interrupted": True, "sttFinalMs": 120.5}
        ],
    }


async def _create_call(c: Ctx) -> None:
    async with c.http("agent") as h:
        got = ok(await h.post(f"{c.parent}/calls", params={"callId": "c-1"}, json=_call_body(c)))
    assert got["turns"][0]["interrupted"] is True and got["turns"][0]["sttFinalMs"] == 120.5


async def _get_call(c: Ctx) -> None:
    async with c.http("agent") as h:
        ok(await h.post(f"{c.parent}/calls", params={"callId": "c-2"}, json=_call_body(c)))
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/calls/c-2"))
    assert got["turns"][0]["callerText"] == "hi"


async def _list_calls(c: Ctx) -> None:
    async with c.http("agent") as h:
        ok(await h.post(f"{c.parent}/calls", params={"callId": "c-3"}, json=_call_body(c)))
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/calls"))
    assert [x["name"] for x in got["calls"]] == [f"tenants/{c.tenant}/calls/c-3"]


async def _list_audit(c: Ctx) -> None:
    await c.api.new_agent(c.tenant, "audited")
    async with c.http("admin") as h:
        got = ok(await h.get(f"{c.parent}/auditLogEntries"))
    assert any(e["action"] == "CreateAgent" for e in got["auditLogEntries"])


async def _lookup(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    made = await c.api.new_number(c.tenant)
    async with c.http("platform", tenant=None) as h:
        got = ok(await h.get("/v1/phoneNumbers:lookup", params={"e164Number": made.e164_number}))
    assert got == {"phoneNumber": made.name, "agent": f"tenants/{c.tenant}/agents/front-desk"}


async def _outbound(c: Ctx) -> None:
    await c.api.new_agent(c.tenant)
    await c.api.new_number(c.tenant)
    to, to_sse = fresh_number(), fresh_number()
    for number in (to, to_sse):
        c.double.script_dial(number, DialScript(sip_status=(486, "Busy Here")))
    body = {"agent": f"tenants/{c.tenant}/agents/front-desk", "toNumber": to}
    async with c.http("agent") as h:
        response = await h.post(f"{c.parent}/outboundCalls", json=body)
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "application/x-ndjson"
        )
        steps = [json.loads(line)["result"] for line in response.text.splitlines()]
        sse = await h.post(
            f"{c.parent}/outboundCalls",
            json={**body, "toNumber": to_sse},
            headers={"accept": "text/event-stream"},
        )
    assert steps[0]["state"] == "STATE_DIALING" and steps[-1]["state"] == "STATE_FAILED"
    assert steps[-1]["sipStatusCode"] == 486
    assert sse.headers["content-type"].startswith("text/event-stream") and "event: result" in sse.text


Sample = Callable[[Ctx], Awaitable[None]]
_T = "/voiceai.tenant.v1.TenantService/"

# ------------------------------------------------------------ data protection (issue 14)
_DP = "/voiceai.tenant.v1.DataProtectionService/"
_US = "/voiceai.tenant.v1.UsageService/"
_SECRET = "sk-rest-sample-0123456789ABCD"


async def _create_provider_key(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(
            await h.post(
                f"{c.parent}/providerKeys", params={"providerKeyId": "openai"}, json={"apiKey": _SECRET}
            )
        )
    assert got["name"] == f"tenants/{c.tenant}/providerKeys/openai" and got["last4"] == "ABCD"
    assert "apiKey" not in got and _SECRET not in str(got)  # secrets go in, never out


async def _list_provider_keys(c: Ctx) -> None:
    await _create_provider_key(c)
    async with c.http("admin") as h:
        got = ok(await h.get(f"{c.parent}/providerKeys"))
    assert [k["last4"] for k in got["providerKeys"]] == ["ABCD"] and _SECRET not in str(got)


async def _delete_provider_key(c: Ctx) -> None:
    await _create_provider_key(c)
    async with c.http("admin") as h:
        assert ok(await h.delete(f"{c.parent}/providerKeys/openai")) == {}
        assert ok(await h.get(f"{c.parent}/providerKeys")).get("providerKeys", []) == []


async def _get_retention(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(await h.get(f"{c.parent}/retentionPolicy"))
    assert got["name"] == f"tenants/{c.tenant}/retentionPolicy"


async def _update_retention(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(
            await h.patch(
                f"{c.parent}/retentionPolicy",
                params={"updateMask": "callRecordDays"},
                json={"callRecordDays": 30},
            )
        )
        assert got["callRecordDays"] == 30
        assert ok(await h.get(f"{c.parent}/retentionPolicy"))["callRecordDays"] == 30


async def _rotate_data_key(c: Ctx) -> None:
    async with c.http("admin") as h:
        got = ok(await h.post(f"{c.parent}:rotateDataKey", json={}))
    assert got["version"] >= 1


async def _shred_data_keys(c: Ctx) -> None:
    await _rotate_data_key(c)  # the tenant now surely has a data key to destroy
    async with c.http("platform", tenant=None) as h:
        got = ok(await h.post(f"{c.parent}:shredDataKeys", json={}))
    assert got["destroyedKeys"] >= 1
    async with c.http("admin") as h:  # a tenant admin may not shred (platform operators only)
        assert (await h.post(f"{c.parent}:shredDataKeys", json={})).status_code == 403


# ------------------------------------------------------------ usage ledger (issue 17)
async def _get_usage(c: Ctx) -> None:
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/usage", params={"groupBy": "USAGE_GROUP_BY_AGENT"}))
    assert int(got.get("calls", "0")) == 0 and int(got.get("costMicros", "0")) == 0  # int64 as strings


async def _list_usage(c: Ctx) -> None:
    async with c.http("viewer") as h:
        got = ok(
            await h.get(f"{c.parent}/usage:list", params={"groupBy": "USAGE_GROUP_BY_DAY", "pageSize": 10})
        )
    assert got.get("rows", []) == []


async def _export_usage(c: Ctx) -> None:
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/usage:export", params={"format": "USAGE_EXPORT_FORMAT_CSV"}))
    assert got["contentType"].startswith("text/csv")


async def _update_contract_prices(c: Ctx) -> None:
    price = {"component": "tts", "provider": "elevenlabs", "unit": "character", "usd": "0.05", "per": 1000}
    async with c.http("platform", tenant=None) as h:
        got = ok(await h.put(f"{c.parent}/contractPrices", json={"prices": [price]}))
    assert float(got["prices"][0]["usd"]) == 0.05  # a decimal string, as stored


async def _get_contract_prices(c: Ctx) -> None:
    await _update_contract_prices(c)
    async with c.http("viewer") as h:
        got = ok(await h.get(f"{c.parent}/contractPrices"))
    assert [p["provider"] for p in got["prices"]] == ["elevenlabs"]


SAMPLES: dict[str, Sample] = {
    _T + "CreateTenant": _create_tenant,
    _T + "GetTenant": _get_tenant,
    _T + "ListTenants": _list_tenants,
    _T + "UpdateTenant": _update_tenant,
    _T + "DeleteTenant": _delete_tenant,
    _T + "CreateAgent": _create_agent,
    _T + "GetAgent": _get_agent,
    _T + "ListAgents": _list_agents,
    _T + "UpdateAgent": _update_agent,
    _T + "DeleteAgent": _delete_agent,
    _T + "CreatePhoneNumber": _create_phone_number,
    _T + "GetPhoneNumber": _get_phone_number,
    _T + "ListPhoneNumbers": _list_phone_numbers,
    _T + "UpdatePhoneNumber": _update_phone_number,
    _T + "DeletePhoneNumber": _delete_phone_number,
    _T + "CreateApiKey": _create_api_key,
    _T + "GetApiKey": _get_api_key,
    _T + "ListApiKeys": _list_api_keys,
    _T + "RevokeApiKey": _revoke_api_key,
    _T + "CreateCall": _create_call,
    _T + "GetCall": _get_call,
    _T + "ListCalls": _list_calls,
    _T + "ListAuditLogEntries": _list_audit,
    _T + "LookupPhoneNumber": _lookup,
    "/voiceai.telephony.v1.TelephonyService/CreateOutboundCall": _outbound,
    _DP + "CreateProviderKey": _create_provider_key,
    _DP + "ListProviderKeys": _list_provider_keys,
    _DP + "DeleteProviderKey": _delete_provider_key,
    _DP + "GetRetentionPolicy": _get_retention,
    _DP + "UpdateRetentionPolicy": _update_retention,
    _DP + "RotateDataKey": _rotate_data_key,
    _DP + "ShredDataKeys": _shred_data_keys,
    _US + "GetUsage": _get_usage,
    _US + "ListUsage": _list_usage,
    _US + "ExportUsage": _export_usage,
    _US + "GetContractPrices": _get_contract_prices,
    _US + "UpdateContractPrices": _update_contract_prices,
}
ANNOTATED = sorted({r.full_method for r in RouteTable.from_descriptors().routes})


@pytest.fixture(scope="module")
def double() -> Iterator[LiveKitDouble]:
    with LiveKitDouble() as d:
        yield d


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, double: LiveKitDouble
) -> AsyncIterator[SipApi]:
    async with sip_tenant_api(
        database_settings, Path(tmp_path_factory.mktemp("dev-auth")), double
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def url(api: SipApi) -> AsyncIterator[str]:
    async with rest_front(api.address) as base:
        yield base


def test_the_descriptors_are_read() -> None:
    assert len(ANNOTATED) >= 25 and all(m.startswith("/voiceai.") for m in ANNOTATED)


@pytest.mark.parametrize("method", ANNOTATED)
async def test_rest_round_trip(method: str, api: SipApi, url: str, double: LiveKitDouble) -> None:
    sample = SAMPLES.get(method)
    if sample is None:
        pytest.fail(f"{method} has a google.api.http annotation but no REST sample: add one to SAMPLES")
    await sample(Ctx(api, url, await api.new_tenant(), double))


async def test_closing_a_stream_before_the_answer_cancels_the_call(
    api: SipApi, url: str, double: LiveKitDouble
) -> None:
    c = Ctx(api, url, await api.new_tenant(), double)
    await c.api.new_agent(c.tenant)
    await c.api.new_number(c.tenant)
    to = fresh_number()
    c.double.script_dial(to, DialScript(ring_after_s=0.05, answer_after_s=60))
    body = {"agent": f"tenants/{c.tenant}/agents/front-desk", "toNumber": to}
    async with c.http("agent") as h, h.stream("POST", f"{c.parent}/outboundCalls", json=body) as r:
        first = json.loads(await anext(r.aiter_lines()))["result"]
    assert first["state"] == "STATE_DIALING"
    for _ in range(40):  # within 2 s: the front cancelled its RPC; tenant_svc hung up and closed the room
        with double.lock:
            if first["room"] not in double.rooms:
                return
        await asyncio.sleep(0.05)
    pytest.fail("the call went on after the HTTP client went away")
