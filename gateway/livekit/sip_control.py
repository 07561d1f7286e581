"""The LiveKit server calls a running call makes: transfer the SIP caller to a human, hang up.

``SipControl`` is the seam: the call side (``calls``) asks for a transfer or a hangup and never
sees livekit-api, so it is tested with a recording double; ``LiveKitSipControl`` makes the
real Twirp calls with ``livekit.api``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from livekit import api

log = logging.getLogger(__name__)


class TransferFailed(Exception):
    """LiveKit (or the far end) did not take the transfer; the message says why."""


class SipControl(Protocol):
    """What a call may ask of the LiveKit server about its own room."""

    async def transfer(self, room: str, identity: str, to: str) -> None:
        """Cold-transfer the SIP participant ``identity`` to ``to`` (E.164 or sip: URI);
        ``TransferFailed`` if it did not happen."""
        ...

    async def hang_up(self, room: str) -> None:
        """End the call for everyone in ``room`` (a SIP caller hears the line drop)."""
        ...


def transfer_target(number: str) -> str:
    """LiveKit SIP dials ``tel:`` URIs or ``sip:`` URIs; an E.164 number becomes ``tel:+...``."""
    number = number.strip()
    if number.startswith(("tel:", "sip:", "sips:")):
        return number
    if number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16:
        return f"tel:{number}"
    raise ValueError(f"transfer number must be E.164 (+14155550123) or a sip: URI; got {number!r}")


def transfer_request(room: str, identity: str, to: str) -> api.TransferSIPParticipantRequest:
    """The LiveKit request that transfers a SIP participant to ``to``."""
    # A dial tone tells the caller something is happening while the human's phone rings.
    return api.TransferSIPParticipantRequest(
        room_name=room, participant_identity=identity, transfer_to=transfer_target(to), play_dialtone=True
    )


class LiveKitSipControl:
    """``SipControl`` over LiveKit's SIP and Room services (one ``LiveKitAPI`` per worker)."""

    def __init__(self, lkapi: api.LiveKitAPI) -> None:
        self._api = lkapi

    async def transfer(self, room: str, identity: str, to: str) -> None:
        try:
            request = transfer_request(room, identity, to)
        except ValueError as e:
            raise TransferFailed(str(e)) from None
        try:
            reply = await self._api.sip.transfer_sip_participant(request)
        except api.TwirpError as e:
            raise TransferFailed(f"LiveKit refused the transfer: {e.code}: {e.message}") from None
        # An older server answers with an empty body (status 0, "ongoing"): it took the
        # transfer. Only an explicit failure is one.
        if reply.status == api.SIPTransferStatus.STS_TRANSFER_FAILED:
            reason = api.SIPTransferReason.Name(reply.reason)
            raise TransferFailed(f"the transfer failed ({reason}, SIP {reply.sip_status.code or '?'})")

    async def hang_up(self, room: str) -> None:
        try:
            await self._api.room.delete_room(api.DeleteRoomRequest(room=room))
        except api.TwirpError as e:
            if e.code != api.TwirpErrorCode.NOT_FOUND:  # already gone is what we wanted
                log.warning("could not close room %s: %s: %s", room, e.code, e.message)
