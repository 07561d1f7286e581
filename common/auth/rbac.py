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
    return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in principal.roles))


def roles_granting(permission: Permission) -> list[str]:
    return sorted(role for role, perms in ROLE_PERMISSIONS.items() if permission in perms)


def aip_rules(service: str) -> dict[str, Permission]:
    """Rules for a resource service following Google's AIP verbs: Get/List/Search read,
    Create/Update/Delete/Undelete write. ``service`` is the full name, e.g.
    ``voiceai.tenant.v1.AgentService``."""
    rules = {f"/{service}/{verb}*": Permission.READ for verb in ("Get", "List", "Search", "BatchGet")}
    rules |= {f"/{service}/{verb}*": Permission.WRITE for verb in ("Create", "Update", "Delete", "Undelete")}
    return rules


class AccessPolicy:
    """Maps full method names (``/pkg.Service/Method``) to the permission they need.

    Keys are exact names or ``fnmatch`` patterns (``/pkg.Service/*``, ``/pkg.Service/Get*``).
    An exact name wins over patterns; among patterns the first listed that matches wins.
    """

    def __init__(self, rules: Mapping[str, Permission]) -> None:
        self._exact = {m: p for m, p in rules.items() if not any(c in m for c in "*?[")}
        self._patterns = [(m, p) for m, p in rules.items() if m not in self._exact]
        self._resolved: dict[str, Permission | None] = {}
        self.rules = dict(rules)

    def required(self, method: str) -> Permission | None:
        """The permission ``method`` needs, or None when the policy does not know it (deny)."""
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

    def extended(self, rules: Mapping[str, Permission]) -> AccessPolicy:
        """A policy with ``rules`` added (they win over existing ones)."""
        return AccessPolicy({**rules, **{m: p for m, p in self.rules.items() if m not in rules}})

    def check(self, principal: Principal, method: str) -> None:
        """Raises ``PermissionDenied`` unless ``principal`` may call ``method``."""
        needed = self.required(method)
        if needed is None:
            raise PermissionDenied(f"{method} is not in the access policy, so nobody may call it")
        if needed not in permissions_of(principal):
            raise PermissionDenied(
                f"permission '{needed}' is required for this method; roles that grant it:"
                f" {', '.join(roles_granting(needed))}"
            )


CALL_METHODS = (
    "/voiceai.gateway.v1.CallGatewayService/Converse",
    "/voiceai.stt.v1.SpeechToTextService/StreamingRecognize",
    "/voiceai.llm.v1.LanguageModelService/StreamChat",
    "/voiceai.tts.v1.TextToSpeechService/StreamingSynthesize",
)

# The mesh's policy. The tenant service adds its rules when its API exists, e.g.
# DEFAULT_POLICY.extended({**aip_rules("voiceai.tenant.v1.AgentService"),
#                          "/voiceai.tenant.v1.TenantService/*": Permission.MANAGE_TENANTS}).
DEFAULT_POLICY = AccessPolicy(dict.fromkeys(CALL_METHODS, Permission.CALL))
