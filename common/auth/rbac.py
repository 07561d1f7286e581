"""Who may call what: roles grant permissions, a policy maps gRPC methods to the one they need.

A method the policy does not name is denied: adding an RPC without deciding who may call it
fails closed (and the test for that RPC says so at once).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from enum import StrEnum

from common.auth.principal import ADMIN, AGENT, PLATFORM, VIEWER, Principal
from common.errors import PermissionDenied


class Permission(StrEnum):
    """What a role may do; a method needs one (or one of a set)."""

    READ = "read"  # look at a tenant's configuration and records
    WRITE = "write"  # change them
    CALL = "call"  # run calls: audio in, speech out
    MANAGE_TENANTS = "manage_tenants"  # create, suspend, delete tenants (operators only)


ROLE_PERMISSIONS: Mapping[str, frozenset[Permission]] = {
    VIEWER: frozenset({Permission.READ}),
    AGENT: frozenset({Permission.READ, Permission.CALL}),
    ADMIN: frozenset({Permission.READ, Permission.WRITE, Permission.CALL}),
    # Platform operators manage tenants; to also act inside tenants they hold those roles too
    # (least privilege: an operator token for tenant lifecycle cannot place calls).
    PLATFORM: frozenset({Permission.MANAGE_TENANTS}),
}


def permissions_of(principal: Principal) -> frozenset[Permission]:
    """Every permission ``principal``'s roles grant."""
    return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in principal.roles))


def roles_granting(permission: Permission) -> list[str]:
    """The roles that grant ``permission`` (for error messages)."""
    return sorted(role for role, perms in ROLE_PERMISSIONS.items() if permission in perms)


def aip_rules(service: str) -> dict[str, Permission]:
    """Rules for a resource service following Google's AIP verbs: Get/List/Search read,
    Create/Update/Delete/Undelete write. ``service`` is the full name, e.g.
    ``voiceai.tenant.v1.AgentService``."""
    rules = {f"/{service}/{verb}*": Permission.READ for verb in ("Get", "List", "Search", "BatchGet")}
    rules |= {f"/{service}/{verb}*": Permission.WRITE for verb in ("Create", "Update", "Delete", "Undelete")}
    return rules


Rule = Permission | frozenset[Permission]


def is_internal_method(method: str) -> bool:
    """``/pkg.FooInternalService/Method``: callable with internal credentials only."""
    return method.rsplit("/", 1)[0].endswith("InternalService")


def _any_of(rule: Rule) -> frozenset[Permission]:
    return frozenset({rule}) if isinstance(rule, Permission) else rule


class AccessPolicy:
    """Maps full method names (``/pkg.Service/Method``) to the permission they need, or to a set
    of permissions any one of which will do.

    Keys are exact names or ``fnmatch`` patterns (``/pkg.Service/*``, ``/pkg.Service/Get*``).
    An exact name wins over patterns; among patterns the first listed that matches wins.
    """

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self.rules = {m: _any_of(r) for m, r in rules.items()}
        self._exact = {m: p for m, p in self.rules.items() if not any(c in m for c in "*?[")}
        self._patterns = [(m, p) for m, p in self.rules.items() if m not in self._exact]
        self._resolved: dict[str, frozenset[Permission] | None] = {}

    def required(self, method: str) -> frozenset[Permission] | None:
        """The permissions that admit ``method`` (any one suffices), or None when the policy
        does not know it (deny)."""
        try:
            return self._resolved[method]
        except KeyError:
            pass
        found = self._exact.get(method)
        if found is None:
            found = next((p for m, p in self._patterns if fnmatch.fnmatchcase(method, m)), None)
        if len(self._resolved) < 10_000:  # method names come from the caller: stay bounded
            self._resolved[method] = found
        return found

    def extended(self, rules: Mapping[str, Rule]) -> AccessPolicy:
        """A policy with ``rules`` added (they win over existing ones)."""
        return AccessPolicy({**rules, **{m: p for m, p in self.rules.items() if m not in rules}})

    def check(self, principal: Principal, method: str) -> None:
        """Raises ``PermissionDenied`` unless ``principal`` may call ``method``."""
        needed = self.required(method)
        if needed is None:
            raise PermissionDenied(f"{method} is not in the access policy, so nobody may call it")
        if principal.kind != "internal" and is_internal_method(method):
            raise PermissionDenied(f"{method} is internal: only the mesh's own services may call it")
        if needed.isdisjoint(permissions_of(principal)):
            names = " or ".join(f"'{p}'" for p in sorted(needed))
            roles = sorted({role for p in needed for role in roles_granting(p)})
            raise PermissionDenied(
                f"permission {names} is required for this method; roles that grant it: {', '.join(roles)}"
            )


CALL_METHODS = (
    "/voiceai.gateway.v1.CallGatewayService/Converse",
    "/voiceai.stt.v1.SpeechToTextService/StreamingRecognize",
    "/voiceai.llm.v1.LanguageModelService/StreamChat",
    "/voiceai.tts.v1.TextToSpeechService/StreamingSynthesize",
)

_TENANT = "/voiceai.tenant.v1.TenantService/"
_READ, _WRITE, _CALL, _MANAGE = Permission.READ, Permission.WRITE, Permission.CALL, Permission.MANAGE_TENANTS
# Every method by name, no patterns: a new RPC is denied until someone decides who may call it.
_TENANT_METHODS: dict[str, Rule] = {
    "CreateTenant": _MANAGE,
    "ListTenants": _MANAGE,
    "DeleteTenant": _MANAGE,
    "GetTenant": frozenset({_READ, _MANAGE}),
    # Tenant admins edit their tenant; the plan tier is the handler's check (operators only).
    "UpdateTenant": frozenset({_WRITE, _MANAGE}),
    "GetAgent": _READ,
    "ListAgents": _READ,
    "CreateAgent": _WRITE,
    "UpdateAgent": _WRITE,
    "DeleteAgent": _WRITE,
    "GetPhoneNumber": _READ,
    "ListPhoneNumbers": _READ,
    "CreatePhoneNumber": _WRITE,
    "UpdatePhoneNumber": _WRITE,
    "DeletePhoneNumber": _WRITE,
    # Keys are credentials: only admins see or change them, even their metadata.
    "CreateApiKey": _WRITE,
    "GetApiKey": _WRITE,
    "ListApiKeys": _WRITE,
    "RevokeApiKey": _WRITE,
    "CreateCall": _CALL,  # the gateway records a call as it ends, on the caller's behalf
    "GetCall": _READ,
    "ListCalls": _READ,
    "ListAuditLogEntries": _WRITE,  # admins only
    # Call routing: the gateway (for a caller) or an operator resolves a dialled number.
    "LookupPhoneNumber": frozenset({_CALL, _MANAGE}),
}
TENANT_SERVICE_RULES = {_TENANT + method: rule for method, rule in _TENANT_METHODS.items()}
# Internal-only services (``*InternalService``): called by the gateway as the platform, with an
# internal credential; ``AccessPolicy.check`` refuses any other credential kind for them.
INTERNAL_SERVICE_RULES: dict[str, Rule] = {
    "/voiceai.tenant.v1.ApiKeyInternalService/LookupApiKey": _MANAGE,
    # Durable call-record writes (issue 15): the gateway's internal credential, never rate limited.
    "/voiceai.tenant.v1.CallRecordInternalService/UpsertCallRecord": _CALL,
}
# Placing a phone call is a call on the tenant's behalf (agents and admins), like Converse.
TELEPHONY_SERVICE_RULES: dict[str, Rule] = {
    "/voiceai.telephony.v1.TelephonyService/CreateOutboundCall": _CALL,
}

# Data protection (#14): BYOK keys, retention and data keys are admin-only (WRITE), like API
# keys. ResolveProviderKey is internal-only: the handler also refuses non-internal credentials.
_DP = "/voiceai.tenant.v1.DataProtectionService/"
DATA_PROTECTION_RULES: dict[str, Rule] = {
    **{_DP + m: _WRITE for m in ("CreateProviderKey", "ListProviderKeys", "DeleteProviderKey")},
    **{_DP + m: _WRITE for m in ("GetRetentionPolicy", "UpdateRetentionPolicy", "RotateDataKey")},
    _DP + "ShredDataKeys": _MANAGE,  # irreversible: platform operators only
    "/voiceai.tenant.v1.ProviderKeyInternalService/ResolveProviderKey": _CALL,
    "/voiceai.tenant.v1.DataKeyInternalService/GetHistoryKeys": _CALL,
}

# Usage ledger reads (issue 17): whoever may read a tenant's call records may read its usage.
USAGE_SERVICE_RULES: dict[str, Rule] = {
    **{
        f"/voiceai.tenant.v1.UsageService/{m}": _READ
        for m in ("GetUsage", "ListUsage", "ExportUsage", "GetContractPrices")
    },
    # A contract price is set by the platform's operators, never by the tenant itself.
    "/voiceai.tenant.v1.UsageService/UpdateContractPrices": _MANAGE,
}

# The mesh's policy. A service with other RPCs extends it, e.g.
# DEFAULT_POLICY.extended(aip_rules("voiceai.tenant.v2.AgentService")).
DEFAULT_POLICY = AccessPolicy(
    {
        **dict.fromkeys(CALL_METHODS, Permission.CALL),
        **TENANT_SERVICE_RULES,
        **TELEPHONY_SERVICE_RULES,
        **INTERNAL_SERVICE_RULES,
    }
    | DATA_PROTECTION_RULES
    | USAGE_SERVICE_RULES
)
