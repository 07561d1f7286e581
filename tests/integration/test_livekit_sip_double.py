"""The LiveKit Twirp double answers the real livekit-api client like LiveKit would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent_dispatch as ad
from livekit.protocol import room, sip

from tests.doubles.livekit_twirp import DialScript, LiveKitDouble, TransferScript


@pytest.fixture
def double() -> Iterator[LiveKitDouble]:
    with LiveKitDouble() as d:
        yield d


@pytest.fixture
async def lk(double: LiveKitDouble) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(double.url, double.api_key, double.api_secret) as client:
        yield client


def _inbound(name: str, *numbers: str) -> sip.CreateSIPInboundTrunkRequest:
    return sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(name=name, numbers=numbers))


async def test_trunks_rules_and_conflicts(lk: api.LiveKitAPI) -> None:
    trunk = await lk.sip.create_inbound_trunk(_inbound("a", "+15550001"))
    with pytest.raises(api.ServerError) as e:
        await lk.sip.create_inbound_trunk(_inbound("b", "+15550001"))
    assert e.value.status == 400 and "Conflicting inbound SIP Trunks" in e.value.message
    changed = await lk.sip.update_inbound_trunk_fields(
        trunk.sip_trunk_id, numbers=["+15550002"], metadata="m"
    )
    assert list(changed.numbers) == ["+15550002"] and changed.metadata == "m"
    rule = sip.SIPDispatchRuleInfo(
        rule=sip.SIPDispatchRule(dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="c-")),
        trunk_ids=[trunk.sip_trunk_id],
    )
    made = await lk.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=rule))
    with pytest.raises(api.ServerError, match="Conflicting SIP Dispatch Rules"):
        await lk.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=rule))
    listed = await lk.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest(trunk_ids=[trunk.sip_trunk_id]))
    assert [r.sip_dispatch_rule_id for r in listed.items] == [made.sip_dispatch_rule_id]
    await lk.sip.delete_dispatch_rule(
        sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=made.sip_dispatch_rule_id)
    )
    await lk.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
    with pytest.raises(api.ServerError) as gone:
        await lk.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
    assert gone.value.code == "not_found"


async def test_outbound_call_transfer_and_sip_failure(double: LiveKitDouble, lk: api.LiveKitAPI) -> None:
    out = await lk.sip.create_outbound_trunk(
        sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(name="o", address="sip.example.com"))
    )
    await lk.room.create_room(room.CreateRoomRequest(name="r1"))
    await lk.agent_dispatch.create_dispatch(ad.CreateAgentDispatchRequest(room="r1", agent_name="gw"))
    call = sip.CreateSIPParticipantRequest(
        sip_trunk_id=out.sip_trunk_id, sip_call_to="+15559999", room_name="r1", wait_until_answered=True
    )
    p = await lk.sip.create_sip_participant(call)
    got = await lk.room.get_participant(
        room.RoomParticipantIdentity(room="r1", identity=p.participant_identity)
    )
    assert got.attributes["sip.callStatus"] == "active"
    double.script_dial("+15550486", DialScript(sip_status=(486, "Busy Here")))
    call.sip_call_to = "+15550486"
    with pytest.raises(api.SipCallError) as busy:
        await lk.sip.create_sip_participant(call)
    assert busy.value.sip_status_code == 486
    double.script_transfer("tel:+15550000", TransferScript(sip_status=(603, "Decline")))
    transfer = sip.TransferSIPParticipantRequest(
        room_name="r1", participant_identity=p.participant_identity, transfer_to="tel:+15550000"
    )
    with pytest.raises(api.SipCallError) as declined:
        await lk.sip.transfer_sip_participant(transfer)
    assert declined.value.sip_status_code == 603
    transfer.transfer_to = "tel:+15551234"
    done = await lk.sip.transfer_sip_participant(transfer)
    assert done.status == sip.STS_TRANSFER_SUCCESSFUL
    assert p.participant_identity not in double.participants["r1"]


async def test_credentials_faults_and_outage(double: LiveKitDouble, lk: api.LiveKitAPI) -> None:
    async with api.LiveKitAPI(double.url, double.api_key, "wrong-secret-wrong-secret-wrong-secret") as bad:
        with pytest.raises(api.ServerError) as denied:
            await bad.room.list_rooms(room.ListRoomsRequest())
    assert denied.value.status == 401
    double.fail_next("ListRooms", "unavailable", "down for maintenance", status=503)
    with pytest.raises(api.ServerError, match="down for maintenance"):
        await lk.room.list_rooms(room.ListRoomsRequest())
    double.stop()
    with pytest.raises((aiohttp.ClientError, OSError)):
        await lk.room.list_rooms(room.ListRoomsRequest())
    double.start()
    assert (await lk.room.list_rooms(room.ListRoomsRequest())).rooms == []
