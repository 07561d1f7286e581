"""LiveKitSipControl through the real livekit-api client against the Twirp double of LiveKit's
SIP and Room services: a transfer is requested as LiveKit SIP wants it and takes the caller out
of the room; a refused transfer, an unknown caller or an unreachable LiveKit is a
``TransferFailed`` with LiveKit's reason; hanging up closes the room (once is enough)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import api

from gateway.livekit.sip_control import LiveKitSipControl, TransferFailed
from tests.doubles import livekit_twirp as twirp


@pytest.fixture
def double() -> Iterator[twirp.LiveKitDouble]:
    with twirp.LiveKitDouble() as d:
        yield d


@pytest.fixture
async def control(double: twirp.LiveKitDouble) -> AsyncIterator[LiveKitSipControl]:
    async with api.LiveKitAPI(double.url, double.api_key, double.api_secret) as lkapi:
        yield LiveKitSipControl(lkapi)


async def test_a_transfer_takes_the_caller_to_the_human(
    double: twirp.LiveKitDouble, control: LiveKitSipControl
) -> None:
    double.add_participant("call-1", "sip_+14155550100")
    await control.transfer("call-1", "sip_+14155550100", "+14155550199")
    (request,) = double.transfers
    assert request.room_name == "call-1" and request.participant_identity == "sip_+14155550100"
    assert request.transfer_to == "tel:+14155550199" and request.play_dialtone
    assert "sip_+14155550100" not in double.participants["call-1"]  # LiveKit SIP took them out


async def test_failed_transfers_say_why(double: twirp.LiveKitDouble, control: LiveKitSipControl) -> None:
    double.add_participant("call-2", "sip_+14155550100")
    double.script_transfer("tel:+14155550198", twirp.TransferScript(sip_status=(486, "Busy Here")))
    with pytest.raises(TransferFailed, match="486 Busy Here"):
        await control.transfer("call-2", "sip_+14155550100", "+14155550198")
    assert "sip_+14155550100" in double.participants["call-2"]  # still on the line with the agent
    with pytest.raises(TransferFailed, match="not_found"):
        await control.transfer("call-2", "sip_nobody", "+14155550199")
    double.fail_next("TransferSIPParticipant", code="unavailable", msg="LiveKit is restarting")
    with pytest.raises(TransferFailed, match="unavailable: LiveKit is restarting"):
        await control.transfer("call-2", "sip_+14155550100", "+14155550199")
    asked = len(double.calls("TransferSIPParticipant"))
    with pytest.raises(TransferFailed, match="E.164"):
        await control.transfer("call-2", "sip_+14155550100", "front desk")
    assert len(double.calls("TransferSIPParticipant")) == asked  # it never left the gateway


async def test_hanging_up_closes_the_room_and_tolerates_a_closed_one(
    double: twirp.LiveKitDouble, control: LiveKitSipControl
) -> None:
    double.add_participant("call-3", "sip_+14155550100")
    await control.hang_up("call-3")
    assert "call-3" not in double.rooms
    await control.hang_up("call-3")  # already gone: fine
    assert [s.request.room for s in double.calls("DeleteRoom")] == ["call-3", "call-3"]  # type: ignore[attr-defined]
