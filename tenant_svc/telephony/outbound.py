"""One outbound phone call through LiveKit: room, agent dispatch, SIP dial, progress.

The room is created first and the gateway's agent dispatched into it (with metadata naming
tenant, agent and numbers), so the agent is there when the callee answers. The dial waits for the
answer (``wait_until_answered``) while the callee participant's ``sip.callStatus`` attribute is
read every ``call_poll_interval_s`` to report ringing; after the answer the same reads notice the
end (the participant leaves or its status is ``hangup``). A call that fails or ends has its room
deleted, which also ends the agent's job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum

from livekit import api
from livekit.protocol import agent_dispatch as ad
from livekit.protocol import room as lk_room
from livekit.protocol import sip

from common.tasks import cancel_and_wait
from tenant_svc.telephony.errors import LiveKitRefused, livekit_call, translate
from tenant_svc.telephony.provisioning import MARKER
from tenant_svc.telephony.settings import LiveKitSettings

log = logging.getLogger(__name__)


class CallState(Enum):
    """Where an outbound call stands."""

    DIALING = 1
    RINGING = 2
    ANSWERED = 3
    FAILED = 4
    ENDED = 5


@dataclass(frozen=True, slots=True)
class CallStep:
    """One step of an outbound call, as the API reports it."""

    state: CallState
    room: str
    participant_identity: str
    sip_status_code: int = 0
    sip_status: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """One outbound call being placed: who, to where, and its state."""

    tenant_id: str
    agent_id: str
    to_number: str
    from_number: str
    trunk_id: str
    ringing_timeout_s: int


class OutboundDialer:
    """Places outbound calls through LiveKit and follows each until it ends."""

    def __init__(self, lk: api.LiveKitAPI, settings: LiveKitSettings) -> None:
        self._lk = lk
        self._s = settings

    async def place(self, call: OutboundCall) -> AsyncIterator[CallStep]:
        room = f"{self._s.room_prefix}{call.tenant_id}-out-{uuid.uuid4().hex[:12]}"
        identity = f"sip-{call.to_number.lstrip('+')}"
        meta = json.dumps({
            "managed_by": MARKER, "direction": "outbound", "tenant_id": call.tenant_id,
            "agent_id": call.agent_id, "to_number": call.to_number, "from_number": call.from_number,
        })  # fmt: skip
        async with livekit_call("create the call's room"):
            await self._lk.room.create_room(
                lk_room.CreateRoomRequest(name=room, metadata=meta, empty_timeout=30)
            )
        try:
            async with livekit_call("dispatch the agent"):
                await self._lk.agent_dispatch.create_dispatch(
                    ad.CreateAgentDispatchRequest(agent_name=self._s.agent_name, room=room, metadata=meta)
                )
        except BaseException:
            await self._close_room(room)
            raise
        step = CallStep(CallState.DIALING, room, identity)
        yield step
        dial = sip.CreateSIPParticipantRequest(
            sip_trunk_id=call.trunk_id, sip_call_to=call.to_number, sip_number=call.from_number,
            room_name=room, participant_identity=identity, participant_metadata=meta,
            participant_attributes={"voiceai.tenant_id": call.tenant_id, "voiceai.agent_id": call.agent_id},
            wait_until_answered=True,
        )  # fmt: skip
        dial.ringing_timeout.seconds = call.ringing_timeout_s
        dialing = asyncio.get_running_loop().create_task(
            self._lk.sip.create_sip_participant(dial), name="sip-dial"
        )
        ended = True
        try:
            ringing_told = False
            while not dialing.done():
                await asyncio.wait({dialing}, timeout=self._s.call_poll_interval_s)
                if (
                    not ringing_told
                    and not dialing.done()
                    and await self._status(room, identity) == "ringing"
                ):
                    ringing_told = True
                    yield CallStep(CallState.RINGING, room, identity)
            failure = dialing.exception()
            if failure is not None:
                error = translate(failure, f"call {call.to_number}")
                if not isinstance(error, LiveKitRefused):
                    raise error from failure
                reason = (
                    f"SIP {error.sip_status_code} {error.sip_status}" if error.sip_status_code else str(error)
                )
                yield CallStep(
                    CallState.FAILED, room, identity, error.sip_status_code, error.sip_status, reason
                )
                return
            yield CallStep(CallState.ANSWERED, room, identity)
            ended = False
            while True:  # LiveKit's server API has no progress stream: read the participant
                if await self._status(room, identity) in (None, "hangup"):
                    break
                await asyncio.sleep(self._s.call_poll_interval_s)
            ended = True
            yield CallStep(CallState.ENDED, room, identity, reason="the callee hung up")
        finally:
            await cancel_and_wait(dialing)
            if ended:  # a watcher that stops early leaves an answered call running
                await self._close_room(room)

    async def _status(self, room: str, identity: str) -> str | None:
        """The callee's ``sip.callStatus``; None when it is not (or no longer) in the room."""
        try:
            async with livekit_call("read the call's progress"):
                p = await self._lk.room.get_participant(
                    lk_room.RoomParticipantIdentity(room=room, identity=identity)
                )
        except LiveKitRefused as e:
            if e.livekit_code == "not_found":
                return None
            raise
        return p.attributes.get("sip.callStatus", "")

    async def _close_room(self, room: str) -> None:
        try:
            async with livekit_call("delete the call's room"):
                await self._lk.room.delete_room(lk_room.DeleteRoomRequest(room=room))
        except LiveKitRefused:
            pass  # gone already
        except Exception as e:  # the room's empty_timeout removes it anyway
            log.warning("outbound call room %s not deleted: %s", room, e)
