"""The rtc glue's two decisions: the job's grants are re-signed unchanged for the gateway's own
connection, and the caller is the first phone or person in the room, never another agent."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from livekit import api, rtc
from livekit.rtc.event_emitter import EventEmitter

from gateway.livekit.room import room_token, wait_for_caller
from gateway.livekit.settings import LiveKitCredentials

CREDS = LiveKitCredentials(url="wss://lk.example.com", api_key="APIkey", api_secret="s" * 40)  # type: ignore[arg-type]


def test_the_job_grants_are_signed_again_unchanged() -> None:
    issued = (
        api.AccessToken("APIkey", "s" * 40)
        .with_identity("voiceai-agent-j1")
        .with_name("VoiceAI agent")
        .with_kind("agent")
        .with_attributes({"lk.agent.name": "voiceai-gateway"})
        .with_grants(api.VideoGrants(room_join=True, room="call-1", agent=True))
        .to_jwt()
    )
    claims = api.TokenVerifier("APIkey", "s" * 40).verify(issued)
    again = api.TokenVerifier("APIkey", "s" * 40).verify(room_token(CREDS, claims))
    assert (again.identity, again.name, again.kind) == ("voiceai-agent-j1", "VoiceAI agent", "agent")
    assert again.attributes == {"lk.agent.name": "voiceai-gateway"}
    assert again.video is not None and (again.video.room, again.video.room_join, again.video.agent) == (
        "call-1",
        True,
        True,
    )
    with pytest.raises(Exception, match="(?i)signature"):
        api.TokenVerifier("APIkey", "another-secret-" * 3).verify(room_token(CREDS, claims))


class FakeRoom(EventEmitter[str]):
    def __init__(self, *participants: SimpleNamespace) -> None:
        super().__init__()
        self.remote_participants = {p.identity: p for p in participants}

    def join(self, p: SimpleNamespace) -> None:
        self.remote_participants[p.identity] = p
        self.emit("participant_connected", p)


def person(identity: str, kind: int) -> SimpleNamespace:
    return SimpleNamespace(identity=identity, kind=kind)


async def test_the_caller_is_a_phone_or_a_person_not_an_agent() -> None:
    phone = person("sip_+14155550100", rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
    room = FakeRoom(person("other-agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT))
    waiting = asyncio.create_task(wait_for_caller(room, 5))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    room.join(person("recorder", rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS))
    room.join(phone)
    assert await waiting is phone
    already = FakeRoom(person("web-user", rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD))
    assert (await wait_for_caller(already, 5)).identity == "web-user"  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await wait_for_caller(FakeRoom(), 0.05)  # type: ignore[arg-type]
