"""The access policy: roles to permissions, methods to the permission they need, deny by default."""

from __future__ import annotations

import pytest

from common.auth import DEFAULT_POLICY, AccessPolicy, Permission, Principal, aip_rules
from common.auth.rbac import CALL_METHODS
from common.errors import PermissionDenied


def who(*roles: str) -> Principal:
    return Principal("u", None if "platform" in roles else "t", frozenset(roles), "jwt")


def test_call_methods_need_call_which_agents_and_admins_have() -> None:
    for method in CALL_METHODS:
        assert DEFAULT_POLICY.required(method) is Permission.CALL
        DEFAULT_POLICY.check(who("agent"), method)
        DEFAULT_POLICY.check(who("admin"), method)
        for roles in (("viewer",), ("platform",), ()):
            with pytest.raises(PermissionDenied, match="permission 'call' is required"):
                DEFAULT_POLICY.check(who(*roles), method)


def test_unknown_methods_are_denied_to_everyone() -> None:
    assert DEFAULT_POLICY.required("/voiceai.tenant.v1.TenantService/DeleteTenant") is None
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
    assert policy.required("/svc.v1.AgentService/GetAgent") is Permission.READ
    assert policy.required("/svc.v1.AgentService/ListAgents") is Permission.READ
    assert policy.required("/svc.v1.AgentService/UpdateAgent") is Permission.WRITE
    assert policy.required("/svc.v1.AgentService/GetSecretThing") is Permission.WRITE
    assert policy.required("/svc.v1.AgentService/Rotate") is Permission.MANAGE_TENANTS
    assert policy.required("/svc.v1.OtherService/GetAgent") is None
    extended = policy.extended({"/svc.v1.AgentService/Get*": Permission.WRITE})
    assert extended.required("/svc.v1.AgentService/GetAgent") is Permission.WRITE
    assert policy.required("/svc.v1.AgentService/GetAgent") is Permission.READ  # unchanged


def test_permission_denied_names_the_permission_and_the_roles_that_grant_it() -> None:
    policy = AccessPolicy(aip_rules("svc.v1.AgentService"))
    with pytest.raises(PermissionDenied) as info:
        policy.check(who("viewer"), "/svc.v1.AgentService/DeleteAgent")
    assert info.value.message == "permission 'write' is required for this method; roles that grant it: admin"
    policy.check(who("viewer"), "/svc.v1.AgentService/GetAgent")
