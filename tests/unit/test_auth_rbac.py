"""The access policy: roles to permissions, methods to the permission they need, deny by default."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import common.gen
from common.auth import DEFAULT_POLICY, AccessPolicy, Permission, Principal, aip_rules
from common.auth.rbac import CALL_METHODS
from common.errors import PermissionDenied
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from common.gen.voiceai.stt.v1 import stt_pb2
from common.gen.voiceai.telephony.v1 import telephony_service_pb2
from common.gen.voiceai.tenant.v1 import (
    api_key_internal_service_pb2,
    data_key_internal_service_pb2,
    data_protection_service_pb2,
    provider_key_internal_service_pb2,
    tenant_service_pb2,
    usage_service_pb2,
)
from common.gen.voiceai.tts.v1 import tts_pb2

MODULES = (
    gateway_pb2,
    llm_pb2,
    stt_pb2,
    telephony_service_pb2,
    tenant_service_pb2,
    tts_pb2,
    api_key_internal_service_pb2,
)
# data protection (#14): BYOK, retention, data keys; the internal provider-key path
MODULES += (data_protection_service_pb2, provider_key_internal_service_pb2, data_key_internal_service_pb2)
MODULES += (usage_service_pb2,)
# Every generated *_pb2 module with services, found by walking common/gen, so a new .proto file
# cannot add an RPC without a rule (issue 15: CallRecordInternalService).
MODULES = tuple(
    {
        *MODULES,
        *(
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(common.gen.__path__, "common.gen.")
            if info.name.endswith("_pb2")
        ),
    }
)


def who(*roles: str) -> Principal:
    return Principal("u", None if "platform" in roles else "t", frozenset(roles), "jwt")


def test_call_methods_need_call_which_agents_and_admins_have() -> None:
    for method in CALL_METHODS:
        assert DEFAULT_POLICY.required(method) == {Permission.CALL}
        DEFAULT_POLICY.check(who("agent"), method)
        DEFAULT_POLICY.check(who("admin"), method)
        for roles in (("viewer",), ("platform",), ()):
            with pytest.raises(PermissionDenied, match="permission 'call' is required"):
                DEFAULT_POLICY.check(who(*roles), method)


def test_unknown_methods_are_denied_to_everyone() -> None:
    assert DEFAULT_POLICY.required("/voiceai.tenant.v1.TenantService/Frobnicate") is None
    with pytest.raises(PermissionDenied, match="not in the access policy"):
        DEFAULT_POLICY.check(who("admin", "agent", "viewer", "platform"), "/x.v1.S/M")


def test_exact_names_win_over_patterns_and_the_first_pattern_wins() -> None:
    policy = AccessPolicy(
        {
            "/svc.v1.AgentService/GetSecretThing": Permission.WRITE,
            **aip_rules("svc.v1.AgentService"),
            "/svc.v1.AgentService/*": Permission.MANAGE_TENANTS,
        }
    )
    assert policy.required("/svc.v1.AgentService/GetAgent") == {Permission.READ}
    assert policy.required("/svc.v1.AgentService/ListAgents") == {Permission.READ}
    assert policy.required("/svc.v1.AgentService/UpdateAgent") == {Permission.WRITE}
    assert policy.required("/svc.v1.AgentService/GetSecretThing") == {Permission.WRITE}
    assert policy.required("/svc.v1.AgentService/Rotate") == {Permission.MANAGE_TENANTS}
    assert policy.required("/svc.v1.OtherService/GetAgent") is None
    extended = policy.extended({"/svc.v1.AgentService/Get*": Permission.WRITE})
    assert extended.required("/svc.v1.AgentService/GetAgent") == {Permission.WRITE}
    assert policy.required("/svc.v1.AgentService/GetAgent") == {Permission.READ}  # unchanged


def test_permission_denied_names_the_permission_and_the_roles_that_grant_it() -> None:
    policy = AccessPolicy(aip_rules("svc.v1.AgentService"))
    with pytest.raises(PermissionDenied) as info:
        policy.check(who("viewer"), "/svc.v1.AgentService/DeleteAgent")
    assert info.value.message == "permission 'write' is required for this method; roles that grant it: admin"
    policy.check(who("viewer"), "/svc.v1.AgentService/GetAgent")


def test_every_rpc_of_the_mesh_has_a_rule_and_every_rule_names_a_real_rpc() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert {m for m in methods if DEFAULT_POLICY.required(m) is None} == set()
    assert set(DEFAULT_POLICY.rules) - methods == set()


def test_tenant_service_rules() -> None:
    t = "/voiceai.tenant.v1.TenantService/"
    DEFAULT_POLICY.check(who("platform"), t + "CreateTenant")
    DEFAULT_POLICY.check(who("platform"), t + "GetTenant")
    DEFAULT_POLICY.check(who("viewer"), t + "GetTenant")
    DEFAULT_POLICY.check(who("agent"), t + "CreateCall")
    DEFAULT_POLICY.check(who("agent"), t + "LookupPhoneNumber")
    DEFAULT_POLICY.check(who("platform"), t + "LookupPhoneNumber")
    for roles, method in [
        (("admin",), "CreateTenant"),
        (("viewer",), "ListApiKeys"),
        (("agent",), "ListAuditLogEntries"),
        (("viewer",), "LookupPhoneNumber"),
    ]:
        with pytest.raises(PermissionDenied):
            DEFAULT_POLICY.check(who(*roles), t + method)
    with pytest.raises(PermissionDenied) as info:
        DEFAULT_POLICY.check(who("viewer"), t + "LookupPhoneNumber")
    assert "permission 'call' or 'manage_tenants' is required" in info.value.message
    assert "admin, agent, platform" in info.value.message


def test_internal_services_admit_internal_credentials_only() -> None:
    method = "/voiceai.tenant.v1.ApiKeyInternalService/LookupApiKey"
    gateway = Principal("voiceai-gateway", None, frozenset({"platform"}), "internal")
    DEFAULT_POLICY.check(gateway, method)
    with pytest.raises(PermissionDenied, match="internal"):
        DEFAULT_POLICY.check(who("platform"), method)  # an operator's own JWT: refused
    for kind in ("jwt", "api_key"):
        with pytest.raises(PermissionDenied):
            DEFAULT_POLICY.check(Principal("op", None, frozenset({"platform"}), kind), method)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        DEFAULT_POLICY.check(Principal("gw", "t", frozenset({"agent"}), "internal"), method)
