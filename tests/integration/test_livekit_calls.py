"""Room calls end to end on loopback: a phone call routed by its called number through a real
tenant_svc runs the same CallSession as Converse (greeting, turns, call record), unknown numbers
and numbers whose agent is gone hear the refusal and are hung up on (counted), and the keypad
reaches the session or, with the transfer digit, asks LiveKit for a transfer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf import field_mask_pb2
from livekit import api as lkapi
from prometheus_client import REGISTRY

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from gateway.livekit.routing import (
    AGENT_ATTRIBUTE,
    CALLED_NUMBER,
    CALLER_NUMBER,
    TENANT_ATTRIBUTE,
    Caller,
    CallRouter,
)
from gateway.livekit.settings import LiveKitSettings
from gateway.livekit.sip_control import LiveKitSipControl
from gateway.session.events import AgentSpeech, CallStarted
from tenant_svc.db.database import DatabaseSettings
from tests.credentials import KEY_DIR
from tests.doubles.livekit_sip import TransferScript
from tests.doubles.livekit_twirp import LiveKitDouble
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.livekit_harness import RecordingSip, RoomLine, room_calls, start_call, tone48
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_gateway_tenancy import wait_for_record


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("voiceai_livekit_refused_calls_total", {"reason": reason}) or 0.0


def new_number() -> str:
    return "+1415" + str(uuid.uuid4().int)[:7]


def phone(number: str) -> Caller:
    return Caller(
        identity=f"sip_{number}", sip=True, attributes={CALLED_NUMBER: number, CALLER_NUMBER: "+14155550100"}
    )


async def tenant_with_number(api: TenantApi, transfer_number: str = "") -> tuple[str, pb.Agent, str]:
    tenant = await api.new_tenant()
    agent = await api.new_agent(tenant, "reception")
    await api.stub.UpdateAgent(
        svc.UpdateAgentRequest(
            agent=pb.Agent(name=agent.name, greeting="Thanks for calling.", transfer_number=transfer_number),
            update_mask=field_mask_pb2.FieldMask(paths=["greeting", "transfer_number"]),
        ),
        metadata=api.md(tenant, "admin"),
    )
    number = new_number()
    await api.stub.CreatePhoneNumber(
        svc.CreatePhoneNumberRequest(
            parent=f"tenants/{tenant}",
            phone_number=pb.PhoneNumber(e164_number=number, agent=agent.name),
            phone_number_id="main",
        ),
        metadata=api.md(tenant, "admin"),
    )
    return tenant, agent, number


async def test_a_phone_call_runs_the_tenants_agent_and_is_recorded(api: TenantApi, redis_url: str) -> None:
    tenant, agent, number = await tenant_with_number(api)
    stt = ScriptedStt(["what are your hours?", "thanks, bye."])
    room = RoomLine(phone(number))
    async with (
        scripted_mesh(stt, tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app) as (calls, sip),
    ):
        call, _ = start_call(calls, room, sip)
        await room.wait_for(lambda r: any(isinstance(e, AgentSpeech) for e in r.transport.events))
        assert calls.active == 1
        await room.say(bytes(960 * 150))  # 1.5 s of quiet while the greeting plays
        for turn in (1, 2):
            await room.say(tone48(700))
            await room.wait_for(room.turn_done(turn))
        room.transport.caller_left()
        reason = await asyncio.wait_for(call, 10)
        started = next(e for e in room.transport.events if isinstance(e, CallStarted))
        # Every task the call started ended with it (the record is written in the background).
        left = [t.get_name() for t in asyncio.all_tasks() if started.call_id[:8] in t.get_name()]
        assert [n for n in left if not n.startswith("call-record")] == []
    assert reason == "caller_hangup" and calls.active == 0
    assert sip.hung_up == [room.name]  # the room is closed, so the phone line drops
    assert started.agent_id == "reception"
    speech = [e.text for e in room.transport.events if isinstance(e, AgentSpeech)]
    assert speech[0] == "Thanks for calling." and any(t.startswith("You said") for t in speech)
    # What the caller heard: 20 ms frames of 48 kHz mono, about as long as what was said.
    assert {(f.sample_rate, f.num_channels, f.samples_per_channel) for f in room.sink.frames} == {
        (48000, 1, 960)
    }
    assert len(room.sink.frames) > 50
    record = await wait_for_record(api, tenant)
    assert record.agent == agent.name and record.end_reason == "caller_hangup"
    by_turn = {t.index: t for t in record.turns}
    assert by_turn[1].caller_text == "what are your hours?" and by_turn[2].caller_text == "thanks, bye."
    assert record.usage.stt_seconds > 1
    # The phone line's minutes are a priced telephony line of the record (issue 17).
    assert (record.from_number, record.to_number) == ("+14155550100", number)
    (telephony,) = [ln for ln in record.usage.lines if ln.component == "telephony"]
    assert (telephony.provider, telephony.unit, telephony.quantity_milli) == ("sip_inbound", "minute", 1000)
    assert telephony.cost_micros == 8_500 and not telephony.unpriced


async def test_unknown_and_missing_numbers_hear_the_refusal_and_are_hung_up_on(
    api: TenantApi, redis_url: str
) -> None:
    unknown, missing = refused("unknown_number"), refused("no_called_number")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app) as (calls, sip),
    ):
        for caller in (phone(new_number()), Caller(identity="sip_anon", sip=True, attributes={})):
            room = RoomLine(caller, name=f"room-{caller.identity}")
            call, _ = start_call(calls, room, sip)
            reason = await asyncio.wait_for(call, 10)
            assert reason in ("refused_unknown_number", "refused_no_called_number")
            # The refusal went out through the TTS path (the tone double: ~15 ms per character).
            heard_ms = len(room.sink.frames) * 20
            assert heard_ms >= 15 * len(LiveKitSettings().unknown_number_message) * 0.8
            assert sip.hung_up[-1] == room.name
            assert not any(isinstance(e, CallStarted) for e in room.transport.events)  # no session
    assert refused("unknown_number") == unknown + 1
    assert refused("no_called_number") == missing + 1


async def test_a_number_whose_agent_was_deleted_is_refused(api: TenantApi, redis_url: str) -> None:
    tenant, agent, number = await tenant_with_number(api)

    class AgentDeletedAfterLookup(CallRouter):
        """The race a live platform has: the lookup still names the agent, then it is gone."""

        async def lookup(self, e164: str) -> tuple[str, str]:
            found = await super().lookup(e164)
            md = api.md(tenant, "admin")
            await api.stub.DeletePhoneNumber(
                svc.DeletePhoneNumberRequest(name=f"tenants/{tenant}/phoneNumbers/main"), metadata=md
            )
            await api.stub.DeleteAgent(svc.DeleteAgentRequest(name=agent.name), metadata=md)
            return found

    before = refused("agent_not_found")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app, router=AgentDeletedAfterLookup) as (calls, sip),
    ):
        room = RoomLine(phone(number))
        call, _ = start_call(calls, room, sip)
        assert await asyncio.wait_for(call, 10) == "refused_agent_not_found"
        assert room.sink.frames and sip.hung_up == [room.name]
        # Afterwards the number itself is unknown.
        room2 = RoomLine(phone(number), name="room-2")
        call2, _ = start_call(calls, room2, sip)
        assert await asyncio.wait_for(call2, 10) == "refused_unknown_number"
    assert refused("agent_not_found") == before + 1


def transfers(result: str) -> float:
    return REGISTRY.get_sample_value("voiceai_livekit_transfers_total", {"result": result}) or 0.0


def speech(room: RoomLine) -> list[str]:
    return [e.text for e in room.transport.events if isinstance(e, AgentSpeech)]


def said(room: RoomLine) -> str:
    """Everything the agent said, as one text (a phrase goes out a sentence at a time)."""
    return " ".join(speech(room))


class Heard:
    """What the caller had heard (agent texts, room frames) each time LiveKit was asked."""

    def __init__(self, room: RoomLine) -> None:
        self.room = room
        self.at_ask: list[tuple[list[str], int]] = []

    def note(self) -> None:
        self.at_ask.append((speech(self.room), len(self.room.sink.frames)))


class WatchedSip(RecordingSip):
    def __init__(self, heard: Heard) -> None:
        super().__init__()
        self.heard = heard

    async def transfer(self, room: str, identity: str, to: str) -> None:
        self.heard.note()
        await super().transfer(room, identity, to)


class WatchedLiveKit(LiveKitSipControl):
    def __init__(self, client: lkapi.LiveKitAPI, heard: Heard) -> None:
        super().__init__(client)
        self.heard = heard

    async def transfer(self, room: str, identity: str, to: str) -> None:
        self.heard.note()
        await super().transfer(room, identity, to)


def phrase_frames(text: str) -> float:
    """Room frames (20 ms) of ``text`` from the tone TTS double (~15 ms per character), less 20 %."""
    return 15 * len(text) * 0.8 / 20


async def test_keypad_digits_reach_the_session_and_the_transfer_digit_asks_livekit(
    api: TenantApi, redis_url: str
) -> None:
    tenant, _agent, number = await tenant_with_number(api, transfer_number="+14155550199")
    room = RoomLine(phone(number))
    heard = Heard(room)
    settings = LiveKitSettings()
    failed = transfers("failed")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app, sip_control=WatchedSip(heard)) as (calls, sip),
    ):
        assert isinstance(sip, WatchedSip)
        call, controls = start_call(calls, room, sip)
        await room.wait_for(lambda r: any(isinstance(e, CallStarted) for e in r.transport.events))
        controls.dtmf("5")  # an ordinary digit is a turn of the conversation
        await room.wait_for(room.turn_done(1))
        sip.refuse = "486 Busy Here"
        controls.dtmf("0")  # the transfer digit: LiveKit refuses once ...
        await room.wait_for(lambda r: controls.transfer is None)
        assert sip.transfers == [] and transfers("failed") == failed + 1
        # ... the caller heard the announcement, then the apology, and the agent goes on.
        assert said(room).endswith(f"{settings.transfer_phrase} {settings.transfer_failed_phrase}")
        assert not call.done() and calls.active == 1
        sip.refuse = ""
        before = len(room.sink.frames)
        controls.dtmf("0")  # ... and takes it the second time
        # The transfer ends the call (the caller is with a human now), as "transferred".
        assert await asyncio.wait_for(call, 10) == "transferred"
    assert sip.transfers == [(room.name, room.caller.identity, "+14155550199")]
    # The announcement had played out in the room before LiveKit was asked.
    texts, frames = heard.at_ask[-1]
    assert texts[-1] == settings.transfer_phrase
    assert frames - before >= phrase_frames(settings.transfer_phrase)
    record = await wait_for_record(api, tenant)
    assert record.end_reason == "transferred" and record.status == pb.CALL_STATUS_COMPLETED
    assert [t.caller_text for t in record.turns if t.index == 1] == ["(the caller pressed 5)"]
    assert not any(t.caller_text.endswith("pressed 0)") for t in record.turns)
    assert record.turns[-1].agent_text == settings.transfer_phrase


async def test_an_outbound_call_runs_the_agent_it_was_placed_for(api: TenantApi, redis_url: str) -> None:
    tenant, _agent, number = await tenant_with_number(api)
    await api.new_agent(tenant, "sales", "Sell politely.")
    # What tenant_svc's dialer puts on the callee's SIP participant; the number calls out.
    callee = Caller(
        identity="sip-14155550123",
        sip=True,
        attributes={CALLED_NUMBER: number, TENANT_ATTRIBUTE: tenant, AGENT_ATTRIBUTE: "sales"},
        metadata=json.dumps({"direction": "outbound", "tenant_id": tenant, "agent_id": "sales"}),
    )
    mismatch = refused("tenant_mismatch")
    async with (
        scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
        room_calls(mesh.app) as (calls, sip),
    ):
        room = RoomLine(callee)
        call, _ = start_call(calls, room, sip)
        await room.wait_for(lambda r: any(isinstance(e, CallStarted) for e in r.transport.events))
        room.transport.caller_left()
        assert await asyncio.wait_for(call, 10) == "caller_hangup"
        started = next(e for e in room.transport.events if isinstance(e, CallStarted))
        assert started.agent_id == "sales"
        # A participant naming another tenant than the number's is not served.
        forged = Caller(
            identity="sip-x", sip=True, attributes={CALLED_NUMBER: number, TENANT_ATTRIBUTE: "t-other"}
        )
        call2, _ = start_call(calls, RoomLine(forged, name="room-forged"), sip)
        assert await asyncio.wait_for(call2, 10) == "refused_tenant_mismatch"
    assert refused("tenant_mismatch") == mismatch + 1
    record = await wait_for_record(api, tenant)
    assert record.direction == pb.CALL_DIRECTION_OUTBOUND and record.agent.endswith("/agents/sales")


async def test_the_transfer_digit_transfers_the_phone_caller_in_livekit(
    api: TenantApi, redis_url: str
) -> None:
    """The same keypad, through the real livekit-api client against the LiveKit Twirp double:
    the far end declines once (SIP 603) and the call goes on; the second transfer goes through
    while LiveKit is still answering when the caller leaves the room, and is recorded as one."""
    tenant, _agent, number = await tenant_with_number(api, transfer_number="+14155550199")
    caller = phone(number)
    room = RoomLine(caller, name="call-t")
    heard = Heard(room)
    settings = LiveKitSettings()
    failed, ok = transfers("failed"), transfers("ok")
    with LiveKitDouble() as livekit:
        livekit.add_participant("call-t", caller.identity, attributes=dict(caller.attributes))
        livekit.script_transfer("tel:+14155550199", TransferScript(sip_status=(603, "Decline")))
        async with (
            lkapi.LiveKitAPI(livekit.url, livekit.api_key, livekit.api_secret) as client,
            scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh,
            room_calls(mesh.app, sip_control=WatchedLiveKit(client, heard)) as (calls, sip),
        ):
            call, controls = start_call(calls, room, sip)
            await room.wait_for(lambda r: any(isinstance(e, CallStarted) for e in r.transport.events))
            before = len(room.sink.frames)
            controls.dtmf("0")
            await room.wait_for(lambda r: controls.transfer is None)
            # Declined: counted, the caller still in the room with the agent, who apologises.
            assert transfers("failed") == failed + 1 and len(livekit.transfers) == 1
            assert caller.identity in livekit.participants["call-t"]
            assert said(room).endswith(f"{settings.transfer_phrase} {settings.transfer_failed_phrase}")
            assert not call.done()
            texts, frames = heard.at_ask[0]
            assert texts[-1] == settings.transfer_phrase
            assert frames - before >= phrase_frames(settings.transfer_phrase)
            # The human answers the second time; LiveKit SIP takes the caller out of the room
            # while its answer is still on the way, which the room tells the worker first.
            livekit.script_transfer("tel:+14155550199", TransferScript(after_s=0.5))
            controls.dtmf("0")
            await room.wait_for(lambda r: len(livekit.transfers) == 2)
            room.transport.caller_left()
            assert await asyncio.wait_for(call, 10) == "transferred"
            assert caller.identity not in livekit.participants.get("call-t", {})
        assert transfers("ok") == ok + 1
        request = livekit.transfers[-1]
        assert (request.room_name, request.participant_identity) == ("call-t", caller.identity)
        assert request.transfer_to == "tel:+14155550199" and request.play_dialtone
        assert "call-t" not in livekit.rooms  # the call's end closed the room
    record = await wait_for_record(api, tenant)
    assert record.end_reason == "transferred"
