"""Who may call which service of the mesh: the caller's certificate identity and credential kind.

Two questions per RPC, both answered here and enforced by ``AuthServerInterceptor``:

* **Which peer** (mTLS identity, ``common.tls.peer_identity``): only the gateway may call
  stt/llm/tts; only the gateway and the REST front may call tenant_svc; a ``*InternalService``
  method only the gateway. The gateway itself is the edge: any peer (client certificates are not
  requested there; callers authenticate with their token).
* **Which credential**: stt/llm/tts accept only internal tokens minted by the gateway for that
  service (audience) and for the call named in ``x-call-id``; user tokens and API keys are
  refused there with PERMISSION_DENIED. The edge (gateway, tenant_svc's public API, the REST
  front) refuses internal tokens, except on ``*InternalService`` methods (which accept nothing
  else) and on the few public tenant methods the gateway still calls for a caller
  (``GATEWAY_TENANT_METHODS``, until they move into internal services).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.auth.principal import Principal
from common.errors import PermissionDenied

GATEWAY = "gateway"
TENANT = "tenant"
REST = "rest"
INTERNAL_SERVICES = frozenset({"stt", "llm", "tts"})
# The internal token audience for a service: "voiceai-internal:stt".
AUDIENCE_PREFIX = "voiceai-internal:"
MESH_SERVICES = ("gateway", "stt", "llm", "tts", "tenant", "rest")
INTERNAL_AUDIENCES = tuple(AUDIENCE_PREFIX + s for s in MESH_SERVICES)

# Peers each service admits (None = any: the edge).
ALLOWED_PEERS: dict[str, frozenset[str] | None] = {
    "stt": frozenset({GATEWAY}),
    "llm": frozenset({GATEWAY}),
    "tts": frozenset({GATEWAY}),
    TENANT: frozenset({GATEWAY, REST}),
    GATEWAY: None,
    REST: None,
}
INTERNAL_SERVICE_PEERS = frozenset({GATEWAY})

_TENANT_API = "/voiceai.tenant.v1.TenantService/"
# Public tenant methods the gateway calls on a caller's behalf with an internal token (agent
# config, routing a dialled number, the call record). Transitional: each should move into a
# ``*InternalService`` (#13, #15), after which internal tokens are refused on all of them.
GATEWAY_TENANT_METHODS = frozenset(
    _TENANT_API + m for m in ("GetAgent", "GetTenant", "CreateCall", "LookupPhoneNumber")
) | {"/voiceai.tenant.v1.UsageService/GetUsage"}  # a call's usage budget at admission (#17)

# Internal methods a speech service calls for the call it serves, forwarding the gateway's token
# for that call (audience = the calling service): the peer says who calls, the token for whom.
SERVICE_FORWARDED_METHODS: dict[str, frozenset[str]] = {
    "/voiceai.tenant.v1.ProviderKeyInternalService/ResolveProviderKey": INTERNAL_SERVICES,
}

# The proto package of each service, to name a host's identity from what it serves.
_PACKAGES = {
    "voiceai.gateway.": GATEWAY,
    "voiceai.stt.": "stt",
    "voiceai.llm.": "llm",
    "voiceai.tts.": "tts",
    "voiceai.tenant.": TENANT,
    "voiceai.telephony.": TENANT,
}


def service_of(full_names: list[str]) -> str:
    """The mesh identity of a host serving ``full_names`` ('' when none of them is ours)."""
    for name in full_names:
        for package, service in _PACKAGES.items():
            if name.startswith(package):
                return service
    return ""


def audience(service: str) -> str:
    """The ``aud`` of an internal token for ``service``."""
    return AUDIENCE_PREFIX + service


def is_internal_service_method(method: str) -> bool:
    """``/pkg.XInternalService/Method``: internal-only by name."""
    return method.rsplit("/", 2)[-2].endswith("InternalService") if method.count("/") >= 2 else False


@dataclass(frozen=True)
class HopRules:
    """The rules for one host: its own service identity and whether peers present certificates."""

    service: str
    mutual_tls: bool = False

    @property
    def internal(self) -> bool:
        """Whether this service sits behind the gateway (stt, llm, tts)."""
        return self.service in INTERNAL_SERVICES

    def check_credential(self, principal: Principal, method: str, call_id: str) -> None:
        """Raise PermissionDenied when this kind of credential may not open ``method`` here."""
        if not self.service:
            return
        internal_token = principal.kind == "internal"
        if self.internal or is_internal_service_method(method):
            if not internal_token:
                what = "an API key" if principal.kind == "api_key" else "a user token"
                target = self.service if self.internal else method.rsplit("/", 2)[-2]
                raise PermissionDenied(
                    f"{target} is internal: it accepts only the gateway's internal tokens, and"
                    f" this RPC carries {what}; place calls through the gateway's Converse instead"
                )
            forwarded = SERVICE_FORWARDED_METHODS.get(method)
            if forwarded is None:
                self._check_audience(principal)
            elif principal.audience not in {audience(s) for s in forwarded}:
                raise PermissionDenied(
                    f"{method.rsplit('/', 1)[-1]} takes the token a speech service was given for its"
                    " call (forwarded), not one minted for another service"
                )
            if self.internal and principal.call_id != call_id:
                raise PermissionDenied(
                    "this internal token is bound to another call than the one named in 'x-call-id'"
                )
            return
        if internal_token:
            if method in GATEWAY_TENANT_METHODS and self.service == TENANT:
                self._check_audience(principal)
                return
            raise PermissionDenied(
                f"{self.service} is an edge API: internal tokens are never accepted here; use a"
                " user token or an API key"
            )

    def _check_audience(self, principal: Principal) -> None:
        if principal.audience != audience(self.service):
            shown = principal.audience.removeprefix(AUDIENCE_PREFIX) or "(none)"
            raise PermissionDenied(f"this internal token is for '{shown}', not for '{self.service}'")

    def check_peer(self, peer: str | None, method: str, internal_token: bool = False) -> None:
        """Raise PermissionDenied when the TLS peer may not call ``method`` (mTLS only). An
        internal token is only ever sent by the gateway, whatever the method."""
        if not self.mutual_tls or not self.service:
            return
        gateway_only = internal_token or is_internal_service_method(method)
        allowed = INTERNAL_SERVICE_PEERS if gateway_only else ALLOWED_PEERS.get(self.service)
        allowed = SERVICE_FORWARDED_METHODS.get(method, allowed)
        if allowed is None:
            return
        if peer is None:
            raise PermissionDenied(
                f"{self.service} requires a client certificate from one of: {', '.join(sorted(allowed))}"
            )
        if peer not in allowed:
            raise PermissionDenied(
                f"peer identity '{peer}' may not call {method.rsplit('/', 1)[-1]} on {self.service};"
                f" allowed: {', '.join(sorted(allowed))}"
            )
