"""The TenantService servicer: protobuf requests -> validated repository calls -> protobuf.

Credentials, the tenant/credential match and per-RPC roles are checked by the interceptors
before a handler runs; here the resource's tenant must also be the request's tenant, so a name
from another tenant is PERMISSION_DENIED whether or not it exists.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC
from typing import Any, TypeAlias

import grpc.aio
from google.protobuf import empty_pb2

from common import context
from common.call_ids import check_call_id
from common.errors import InvalidArgument, NotFound, PermissionDenied
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from tenant_svc import validation as v
from tenant_svc.call_filters import call_query, list_calls_filtered
from tenant_svc.changes import ChangeListener
from tenant_svc.credentials import ApiKeyIssuer, actor, is_platform
from tenant_svc.ratelimit import TenantRateLimit, rate_limited
from tenant_svc.repository import AGENT_COLUMNS, Repository
from tenant_svc.telephony.numbers import number_change
from tenant_svc.telephony.provisioning import NumberBinding, SipProvisioner

AGENT_FIELDS = (*AGENT_COLUMNS, "max_call_duration")
PHONE_FIELDS = ("e164_number", "agent")
TENANT_FIELDS = ("display_name", "plan_tier")
Ctx: TypeAlias = grpc.aio.ServicerContext


def _scope(tenant: str) -> str:
    """The resource's tenant must be the one this request is bound to."""
    bound = context.current()
    if bound is None or bound.tenant_id != tenant:
        raise PermissionDenied("the resource belongs to a different tenant than 'x-tenant-id'")
    return tenant


def _generated() -> str:
    return uuid.uuid4().hex[:12]


class TenantServicer(svc_grpc.TenantServiceServicer):
    """TenantService: protobuf <-> repository calls, validation, audit."""

    def __init__(
        self,
        repo: Repository,
        keys: ApiKeyIssuer,
        on_change: ChangeListener | None = None,
        rate: TenantRateLimit | None = None,
        sip: SipProvisioner | None = None,
    ) -> None:
        self._rate = rate
        self._sip = sip  # None: LiveKit SIP provisioning is off
        self._repo = repo
        self._keys = keys
        self._on_change: ChangeListener = on_change or (lambda *_: None)

    async def _changed(self, kind: str, tenant: str, resource_id: str) -> None:
        result = self._on_change(kind, tenant, resource_id)
        if inspect.isawaitable(result):
            await result

    # -- tenants --------------------------------------------------------------------------
    @rate_limited
    async def CreateTenant(self, request: svc.CreateTenantRequest, _: Ctx) -> pb.Tenant:
        tid = v.tenant_id(request.tenant_id)
        if not request.tenant.display_name.strip():
            raise InvalidArgument("tenant.display_name is required")
        async with self._repo.platform() as p:
            tenant = await p.create_tenant(
                tid, request.tenant.display_name, request.tenant.plan_tier or pb.PLAN_TIER_FREE
            )
        async with self._repo.tenant(tid) as t:
            await t.audit(actor(), "CreateTenant", tenant.name)
        return tenant

    @rate_limited
    async def GetTenant(self, request: svc.GetTenantRequest, _: Ctx) -> pb.Tenant:
        async with self._repo.tenant(_scope(v.tenant_of(request.name))) as t:
            return await t.get_tenant()

    @rate_limited
    async def ListTenants(self, request: svc.ListTenantsRequest, _: Ctx) -> svc.ListTenantsResponse:
        size = v.page_size(request.page_size)
        after = str(v.decode_page(request.page_token, "*", "ListTenants", ""))
        async with self._repo.platform() as p:
            tenants = await p.list_tenants(after, size + 1)
        token = v.next_token("*", "ListTenants", tenants, size, lambda x: v.last_segment(x.name))
        return svc.ListTenantsResponse(tenants=tenants[:size], next_page_token=token)

    @rate_limited
    async def UpdateTenant(self, request: svc.UpdateTenantRequest, _: Ctx) -> pb.Tenant:
        tid = _scope(v.tenant_of(request.tenant.name, "tenant.name"))
        touches_plan = "plan_tier" in request.update_mask.paths or "*" in request.update_mask.paths
        if touches_plan and not is_platform():
            raise PermissionDenied("changing plan_tier needs a platform operator")
        async with self._repo.tenant(tid) as t:
            merged: Any = v.apply_mask(
                await t.get_tenant(), request.tenant, request.update_mask, TENANT_FIELDS
            )
            if not merged.display_name.strip():
                raise InvalidArgument("tenant.display_name must not be empty")
            tenant = await t.update_tenant(merged.display_name, merged.plan_tier)
            await t.audit(actor(), "UpdateTenant", tenant.name, request.update_mask.paths)
        await self._changed("tenant", tid, tid)
        return tenant

    @rate_limited
    async def DeleteTenant(self, request: svc.DeleteTenantRequest, _: Ctx) -> empty_pb2.Empty:
        tid = v.tenant_of(request.name)
        async with self._repo.platform() as p:
            if self._sip is not None:
                await p.lock_sip_shared()
            await p.delete_tenant(tid)
            if self._sip is not None:  # a failure here rolls the deletion back
                await self._sip.remove_tenant(tid)
        await self._changed("tenant", tid, tid)
        return empty_pb2.Empty()

    # -- agents ---------------------------------------------------------------------------
    @rate_limited
    async def CreateAgent(self, request: svc.CreateAgentRequest, _: Ctx) -> pb.Agent:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        aid = v.new_id(request.agent_id, "agent_id", _generated())
        async with self._repo.tenant(tid) as t:
            agent = await t.insert_agent(aid, v.agent(request.agent))
            await t.audit(actor(), "CreateAgent", agent.name)
        return agent

    @rate_limited
    async def GetAgent(self, request: svc.GetAgentRequest, _: Ctx) -> pb.Agent:
        tid, aid = v.child_id(request.name, "agents")
        async with self._repo.tenant(_scope(tid)) as t:
            return await t.get_agent(aid)

    @rate_limited
    async def ListAgents(self, request: svc.ListAgentsRequest, _: Ctx) -> svc.ListAgentsResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        size = v.page_size(request.page_size)
        after = str(v.decode_page(request.page_token, tid, "ListAgents", ""))
        async with self._repo.tenant(tid) as t:
            agents = await t.list_agents(after, size + 1)
        token = v.next_token(tid, "ListAgents", agents, size, lambda x: v.last_segment(x.name))
        return svc.ListAgentsResponse(agents=agents[:size], next_page_token=token)

    @rate_limited
    async def UpdateAgent(self, request: svc.UpdateAgentRequest, _: Ctx) -> pb.Agent:
        tid, aid = v.child_id(request.agent.name, "agents", "agent.name")
        async with self._repo.tenant(_scope(tid)) as t:
            stored = await t.get_agent(aid, for_update=True)
            merged: Any = v.apply_mask(stored, request.agent, request.update_mask, AGENT_FIELDS)
            agent = await t.replace_agent(aid, v.agent(merged))
            await t.audit(actor(), "UpdateAgent", agent.name, request.update_mask.paths)
        await self._changed("agent", tid, aid)
        return agent

    @rate_limited
    async def DeleteAgent(self, request: svc.DeleteAgentRequest, _: Ctx) -> empty_pb2.Empty:
        tid, aid = v.child_id(request.name, "agents")
        async with self._repo.tenant(_scope(tid)) as t:
            await t.delete_agent(aid)
            await t.audit(actor(), "DeleteAgent", request.name)
        await self._changed("agent", tid, aid)
        return empty_pb2.Empty()

    # -- phone numbers --------------------------------------------------------------------
    def _agent_ref(self, tid: str, ref: str) -> str:
        ref_tenant, aid = v.child_id(ref, "agents", "phone_number.agent")
        if ref_tenant != tid:
            raise InvalidArgument("phone_number.agent must be an agent of the same tenant")
        return aid

    @rate_limited
    async def CreatePhoneNumber(self, request: svc.CreatePhoneNumberRequest, _: Ctx) -> pb.PhoneNumber:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        number = v.e164(request.phone_number.e164_number, "phone_number.e164_number")
        aid = self._agent_ref(tid, request.phone_number.agent)
        pid = v.new_id(request.phone_number_id, "phone_number_id", number[1:])
        async with number_change(self._sip) as sip, self._repo.tenant(tid) as t:
            phone = await t.insert_phone_number(pid, number, aid)
            await t.audit(actor(), "CreatePhoneNumber", phone.name)
            await sip.to(t, None, NumberBinding.of(phone))
        await self._changed("phone_number", tid, pid)
        return phone

    @rate_limited
    async def GetPhoneNumber(self, request: svc.GetPhoneNumberRequest, _: Ctx) -> pb.PhoneNumber:
        tid, pid = v.child_id(request.name, "phoneNumbers")
        async with self._repo.tenant(_scope(tid)) as t:
            return await t.get_phone_number(pid)

    @rate_limited
    async def ListPhoneNumbers(
        self, request: svc.ListPhoneNumbersRequest, _: Ctx
    ) -> svc.ListPhoneNumbersResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        size = v.page_size(request.page_size)
        after = str(v.decode_page(request.page_token, tid, "ListPhoneNumbers", ""))
        async with self._repo.tenant(tid) as t:
            phones = await t.list_phone_numbers(after, size + 1)
        token = v.next_token(tid, "ListPhoneNumbers", phones, size, lambda x: v.last_segment(x.name))
        return svc.ListPhoneNumbersResponse(phone_numbers=phones[:size], next_page_token=token)

    @rate_limited
    async def UpdatePhoneNumber(self, request: svc.UpdatePhoneNumberRequest, _: Ctx) -> pb.PhoneNumber:
        tid, pid = v.child_id(request.phone_number.name, "phoneNumbers", "phone_number.name")
        async with number_change(self._sip) as sip, self._repo.tenant(_scope(tid)) as t:
            stored = await t.get_phone_number(pid, for_update=True)
            merged: Any = v.apply_mask(stored, request.phone_number, request.update_mask, PHONE_FIELDS)
            number = v.e164(merged.e164_number, "phone_number.e164_number")
            phone = await t.replace_phone_number(pid, number, self._agent_ref(tid, merged.agent))
            await t.audit(actor(), "UpdatePhoneNumber", phone.name, request.update_mask.paths)
            await sip.to(t, NumberBinding.of(stored), NumberBinding.of(phone))
        await self._changed("phone_number", tid, pid)
        return phone

    @rate_limited
    async def DeletePhoneNumber(self, request: svc.DeletePhoneNumberRequest, _: Ctx) -> empty_pb2.Empty:
        tid, pid = v.child_id(request.name, "phoneNumbers")
        async with number_change(self._sip) as sip, self._repo.tenant(_scope(tid)) as t:
            stored = await t.get_phone_number(pid, for_update=True)
            await t.delete_phone_number(pid)
            await t.audit(actor(), "DeletePhoneNumber", request.name)
            await sip.to(t, NumberBinding.of(stored), None)
        await self._changed("phone_number", tid, pid)
        return empty_pb2.Empty()

    @rate_limited
    async def LookupPhoneNumber(
        self, request: svc.LookupPhoneNumberRequest, _: Ctx
    ) -> svc.LookupPhoneNumberResponse:
        number = v.e164(request.e164_number)
        route = await self._repo.lookup_phone_number(number)
        if route is None:
            raise NotFound("no agent answers that number")
        if not is_platform():
            _scope(route.tenant_id)  # a tenant may resolve only its own numbers
        t = route.tenant_id
        return svc.LookupPhoneNumberResponse(
            phone_number=f"tenants/{t}/phoneNumbers/{route.phone_number_id}",
            agent=f"tenants/{t}/agents/{route.agent_id}",
        )

    # -- API keys -------------------------------------------------------------------------
    @rate_limited
    async def CreateApiKey(self, request: svc.CreateApiKeyRequest, _: Ctx) -> svc.CreateApiKeyResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        roles = v.roles(request.api_key.roles)
        expire = (
            request.api_key.expire_time.ToDatetime(UTC) if request.api_key.HasField("expire_time") else None
        )
        plaintext, key_id, secret_hash = self._keys.generate()
        async with self._repo.tenant(tid) as t:
            key = await t.insert_api_key(
                key_id, request.api_key.display_name[:200], roles, secret_hash, expire
            )
            await t.audit(actor(), "CreateApiKey", key.name)
        return svc.CreateApiKeyResponse(api_key=key, key=plaintext)

    @rate_limited
    async def GetApiKey(self, request: svc.GetApiKeyRequest, _: Ctx) -> pb.ApiKey:
        tid, kid = v.child_id(request.name, "apiKeys")
        async with self._repo.tenant(_scope(tid)) as t:
            return await t.get_api_key(kid)

    @rate_limited
    async def ListApiKeys(self, request: svc.ListApiKeysRequest, _: Ctx) -> svc.ListApiKeysResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        size = v.page_size(request.page_size)
        after = str(v.decode_page(request.page_token, tid, "ListApiKeys", ""))
        async with self._repo.tenant(tid) as t:
            keys = await t.list_api_keys(after, size + 1)
        token = v.next_token(tid, "ListApiKeys", keys, size, lambda x: x.key_prefix)
        return svc.ListApiKeysResponse(api_keys=keys[:size], next_page_token=token)

    @rate_limited
    async def RevokeApiKey(self, request: svc.RevokeApiKeyRequest, _: Ctx) -> pb.ApiKey:
        tid, kid = v.child_id(request.name, "apiKeys")
        async with self._repo.tenant(_scope(tid)) as t:
            key = await t.revoke_api_key(kid)
            await t.audit(actor(), "RevokeApiKey", key.name)
        await self._changed("api_key", tid, kid)
        return key

    # -- calls and audit ------------------------------------------------------------------
    @rate_limited
    async def CreateCall(self, request: svc.CreateCallRequest, _: Ctx) -> pb.Call:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        cid = check_call_id(request.call_id, "call_id")
        aid = ""
        if request.call.agent:
            ref_tenant, aid = v.child_id(request.call.agent, "agents", "call.agent")
            if ref_tenant != tid:
                raise InvalidArgument("call.agent must be an agent of the same tenant")
        if len(request.call.turns) > 10_000:
            raise InvalidArgument("call.turns: at most 10000 turns per call")
        async with self._repo.tenant(tid) as t:
            return await t.insert_call(cid, aid, request.call)

    @rate_limited
    async def GetCall(self, request: svc.GetCallRequest, _: Ctx) -> pb.Call:
        tid, cid = v.child_id(request.name, "calls")
        async with self._repo.tenant(_scope(tid)) as t:
            return await t.get_call(cid)

    @rate_limited
    async def ListCalls(self, request: svc.ListCallsRequest, _: Ctx) -> svc.ListCallsResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        size = v.page_size(request.page_size)
        query = call_query(tid, request)
        if query is not None:  # filters or an order (issue 17): start-time keyset paging
            return await list_calls_filtered(self._repo, tid, request, query, size)
        before = int(v.decode_page(request.page_token, tid, "ListCalls", 2**62))
        async with self._repo.tenant(tid) as t:
            rows = await t.list_calls(before, size + 1)
        token = v.next_token(tid, "ListCalls", rows, size, lambda row: row[0])
        return svc.ListCallsResponse(calls=[c for _, c in rows[:size]], next_page_token=token)

    @rate_limited
    async def ListAuditLogEntries(
        self, request: svc.ListAuditLogEntriesRequest, _: Ctx
    ) -> svc.ListAuditLogEntriesResponse:
        tid = _scope(v.tenant_of(request.parent, "parent"))
        size = v.page_size(request.page_size)
        before = int(v.decode_page(request.page_token, tid, "ListAuditLogEntries", 2**62))
        async with self._repo.tenant(tid) as t:
            entries = await t.list_audit(before, size + 1)
        token = v.next_token(tid, "ListAuditLogEntries", entries, size, lambda x: int(v.last_segment(x.name)))
        return svc.ListAuditLogEntriesResponse(audit_log_entries=entries[:size], next_page_token=token)
