"""Which tenant and agent answer a room's caller, or why nobody does.

- SIP caller: the called number (participant attribute ``sip.trunkPhoneNumber``) goes to
  tenant_svc's ``LookupPhoneNumber`` (as the platform), which names the tenant and agent; the
  agent is then loaded as that tenant (through the gateway's catalog and config cache).
- WebRTC caller: the participant's (else the room's) metadata carries ``{"token": <JWT>,
  "agent_id": <id>}``; the token is a user token signed with the platform's keys, verified like
  a Converse credential, and must grant ``call`` in one tenant.

Anything else is ``Refused`` with a short reason: the caller hears the refusal message, the
room is closed, and ``voiceai_livekit_refused_calls_total{reason}`` counts it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import grpc
import grpc.aio
from prometheus_client import Counter

from common import context
from common.auth import AGENT, DEFAULT_POLICY, PLATFORM, Authenticator, InternalTokenIssuer, Principal
from common.discovery import ChannelPool
from common.errors import NotFound, PermissionDenied, Unauthenticated, VoiceAIError
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2_grpc as svc_grpc
from gateway.agents import Agent, AgentCatalog

log = logging.getLogger(__name__)

CALLED_NUMBER = "sip.trunkPhoneNumber"  # set by LiveKit SIP on every inbound SIP participant
CALLER_NUMBER = "sip.phoneNumber"
# Set by tenant_svc's LiveKit SIP provisioning (dispatch rules) and outbound dialing.
TENANT_ATTRIBUTE = "voiceai.tenant_id"
AGENT_ATTRIBUTE = "voiceai.agent_id"
CONVERSE = "/voiceai.gateway.v1.CallGatewayService/Converse"  # a room call needs what Converse needs
LOOKUP_TIMEOUT_S = 3.0
WORKER = Principal("voiceai-livekit-worker", None, frozenset({PLATFORM}), "internal")

REFUSED = Counter(
    "voiceai_livekit_refused_calls_total", "LiveKit callers hung up on without an agent", ["reason"]
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The remote participant a room's call is with, as the room shows it."""

    identity: str
    sip: bool
    attributes: Mapping[str, str] = field(default_factory=dict)
    metadata: str = ""
    room_metadata: str = ""

    @property
    def called_number(self) -> str:
        """The tenant's number: the one dialled (inbound) or the one calling out (outbound)."""
        return self.attributes.get(CALLED_NUMBER, "").strip()

    @property
    def outbound(self) -> bool:
        """A call the platform placed (its SIP participant's metadata says so; only the
        LiveKit API sets a SIP participant's metadata)."""
        if not self.sip or not self.metadata.strip():
            return False
        try:
            data = json.loads(self.metadata)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("direction") == "outbound"


@dataclass(frozen=True, slots=True)
class Route:
    """Who answers: the tenant, its agent, and the principal the call's hops run as."""

    tenant_id: str
    agent: Agent
    principal: Principal
    outbound: bool = False
    # A phone call's numbers (E.164 as LiveKit SIP reports them), for the record's telephony
    # minutes (issue 17); empty for WebRTC callers.
    from_number: str = ""
    to_number: str = ""


class Refused(Exception):
    """No agent answers this caller. ``reason`` is the metric label; the message is for logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CallRouter:
    """Resolves a room's caller to a ``Route`` (see module docstring)."""

    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        issuer: InternalTokenIssuer,
        users: Authenticator,
        tenant_pool: ChannelPool | None,
    ) -> None:
        self._catalog = catalog
        self._issuer = issuer
        self._users = users
        self._tenant = tenant_pool  # None: no tenant_svc, so phone numbers cannot be routed

    async def route(self, caller: Caller, call_id: str) -> Route:
        """The route for ``caller``, with its request context bound in the current task."""
        try:
            if caller.sip:
                return await self._sip(caller, call_id)
            return await self._webrtc(caller, call_id)
        except Refused as refused:
            REFUSED.labels(refused.reason).inc()
            raise

    # ------------------------------------------------------------------ SIP
    async def _sip(self, caller: Caller, call_id: str) -> Route:
        number = caller.called_number
        if not number:
            raise Refused("no_called_number", f"SIP participant {caller.identity!r} has no {CALLED_NUMBER}")
        tenant_id, agent_id = await self.lookup(number)
        # A call tenant_svc placed (outbound) or provisioned names its tenant and agent on the
        # participant; only LiveKit's API sets those. The number decides the tenant all the same:
        # the named agent is taken only inside the tenant that owns the number.
        named_tenant = caller.attributes.get(TENANT_ATTRIBUTE, "")
        if named_tenant and named_tenant != tenant_id:
            raise Refused("tenant_mismatch", f"{number} belongs to another tenant than the call names")
        agent_id = caller.attributes.get(AGENT_ATTRIBUTE, "") or agent_id
        principal = Principal(f"livekit-sip:{number}", tenant_id, frozenset({AGENT}), "internal")
        agent = await self.load_agent(principal, agent_id, call_id)
        theirs = caller.attributes.get(CALLER_NUMBER, "")
        ends = (number, theirs) if caller.outbound else (theirs, number)  # (from, to)
        return Route(
            tenant_id, agent, principal, outbound=caller.outbound, from_number=ends[0], to_number=ends[1]
        )

    async def lookup(self, number: str) -> tuple[str, str]:
        """(tenant, agent id) answering ``number``, asked as the platform."""
        if self._tenant is None:
            raise Refused("no_tenant_service", "phone numbers need tenant_svc (VOICEAI_TENANT_ADDRESSES)")
        md = ((context.AUTHORIZATION_HEADER, self._issuer.authorization_for(WORKER, "tenant")),)
        try:
            async with self._tenant.stream() as channel:
                reply = await svc_grpc.TenantServiceStub(channel).LookupPhoneNumber(
                    svc.LookupPhoneNumberRequest(e164_number=number), metadata=md, timeout=LOOKUP_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise Refused("unknown_number", f"no agent answers {number}: {e.details()}") from None
            raise Refused(
                "lookup_failed", f"looking up {number} failed: {e.code().name} {e.details()}"
            ) from None
        except VoiceAIError as e:  # no tenant_svc instance reachable
            raise Refused("lookup_failed", f"looking up {number} failed: {e.message}") from None
        parts = reply.agent.split("/")  # tenants/{tenant}/agents/{agent}
        if len(parts) != 4 or parts[0] != "tenants" or parts[2] != "agents":
            raise Refused("lookup_failed", f"tenant_svc answered {number} with agent {reply.agent!r}")
        return parts[1], parts[3]

    async def load_agent(self, principal: Principal, agent_id: str, call_id: str) -> Agent:
        """The agent as ``principal``'s tenant sees it; binds the call's request context."""
        tenant_id = principal.tenant_id or ""
        context.bind(
            context.RequestContext(
                tenant_id,
                call_id,
                forward_authorization=partial(self._issuer.authorization_for, principal),
            )
        )
        try:
            return await self._catalog.get(tenant_id, agent_id)
        except NotFound as e:
            # The number still points at it, but the agent is gone (deleted after the lookup,
            # or not in this tenant any more).
            raise Refused(
                "agent_not_found", f"agent {agent_id!r} of tenant {tenant_id}: {e.message}"
            ) from None
        except VoiceAIError as e:
            raise Refused(
                "agent_unavailable", f"agent {agent_id!r} could not be loaded: {e.message}"
            ) from None

    # ------------------------------------------------------------------ WebRTC
    async def _webrtc(self, caller: Caller, call_id: str) -> Route:
        claims = _metadata_claims(caller.metadata) or _metadata_claims(caller.room_metadata)
        if claims is None:
            raise Refused("no_token", f"participant {caller.identity!r} brought no signed metadata")
        token, agent_id = claims
        try:
            principal = await self._users.authenticate(f"Bearer {token}")
            if principal.kind != "jwt":
                raise Unauthenticated("only user tokens may start a room call")
            if principal.tenant_id is None:
                raise Unauthenticated("the token must belong to one tenant")
            DEFAULT_POLICY.check(principal, CONVERSE)
        except (Unauthenticated, PermissionDenied) as e:
            raise Refused("bad_token", f"participant {caller.identity!r}: {e.message}") from None
        return Route(principal.tenant_id, await self.load_agent(principal, agent_id, call_id), principal)


def _metadata_claims(metadata: str) -> tuple[str, str] | None:
    """(token, agent id) from ``{"token": ..., "agent_id": ...}`` metadata, else None."""
    if not metadata.strip():
        return None
    try:
        data = json.loads(metadata)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    token, agent_id = data.get("token"), data.get("agent_id")
    if not isinstance(token, str) or not token or not isinstance(agent_id, str) or not agent_id:
        return None
    return token, agent_id
