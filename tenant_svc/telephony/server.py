"""The TelephonyService servicer: validates, resolves the tenant's agent and numbers under its
row-level security, provisions the tenant's outbound trunk, then streams the call's steps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from common import context
from common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from common.gen.voiceai.telephony.v1 import telephony_service_pb2 as tel
from common.gen.voiceai.telephony.v1 import telephony_service_pb2_grpc as tel_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc import validation as v
from tenant_svc.repository import Repository
from tenant_svc.telephony.outbound import CallStep, OutboundCall, OutboundDialer
from tenant_svc.telephony.provisioning import SipProvisioner
from tenant_svc.telephony.settings import LiveKitSettings

DEFAULT_RING_S, MIN_RING_S, MAX_RING_S = 30, 5, 120


def _bound(tenant: str) -> str:
    bound = context.current()
    if bound is None or bound.tenant_id != tenant:
        raise PermissionDenied("the resource belongs to a different tenant than 'x-tenant-id'")
    return tenant


def _caller_id(requested: str, phones: list[pb.PhoneNumber], agent_name: str) -> str:
    numbers = [p.e164_number for p in phones]
    if requested:
        if v.e164(requested, "from_number") not in numbers:
            raise InvalidArgument("from_number must be one of this tenant's phone numbers")
        return requested
    if not numbers:
        raise FailedPrecondition("the tenant has no phone number to call from; create a PhoneNumber first")
    return next((p.e164_number for p in phones if p.agent == agent_name), numbers[0])


class TelephonyServicer(tel_grpc.TelephonyServiceServicer):
    """TelephonyService: outbound calls through LiveKit SIP."""

    def __init__(
        self,
        repo: Repository,
        settings: LiveKitSettings,
        provisioner: SipProvisioner | None,
        dialer: OutboundDialer | None,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._provisioner = provisioner
        self._dialer = dialer

    async def CreateOutboundCall(
        self, request: tel.CreateOutboundCallRequest, _: grpc.aio.ServicerContext
    ) -> AsyncIterator[tel.CreateOutboundCallResponse]:
        tid = _bound(v.tenant_of(request.parent, "parent"))
        to_number = v.e164(request.to_number, "to_number")
        agent_tenant, aid = v.child_id(request.agent, "agents", "agent")
        if agent_tenant != tid:  # another tenant's agent is as absent as a missing one
            raise NotFound("agent not found")
        ring_s = request.ringing_timeout.seconds if request.HasField("ringing_timeout") else DEFAULT_RING_S
        if not MIN_RING_S <= ring_s <= MAX_RING_S:
            raise InvalidArgument(f"ringing_timeout must be {MIN_RING_S} s to {MAX_RING_S} s")
        if self._provisioner is None or self._dialer is None:
            raise FailedPrecondition(
                "phone calls are off: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET for tenant_svc"
            )
        if not self._settings.sip_outbound_address:
            raise FailedPrecondition("outbound calls are off: set VOICEAI_LIVEKIT_SIP_OUTBOUND_ADDRESS")
        async with self._repo.tenant(tid) as t:
            agent = await t.get_agent(aid)
            phones = await t.list_phone_numbers("", v.MAX_PAGE)
            from_number = _caller_id(request.from_number, phones, agent.name)
            await t.lock_sip_tenant()
            trunk_id = await self._provisioner.outbound_trunk(tid, [p.e164_number for p in phones])
        call = OutboundCall(tid, aid, to_number, from_number, trunk_id, ring_s)
        async for step in self._dialer.place(call):
            yield _response(step)


def _response(step: CallStep) -> tel.CreateOutboundCallResponse:
    out = tel.CreateOutboundCallResponse(
        state=f"STATE_{step.state.name}",
        room=step.room,
        participant_identity=step.participant_identity,
        sip_status_code=step.sip_status_code,
        sip_status=step.sip_status,
        reason=step.reason,
    )
    out.event_time.GetCurrentTime()
    return out
