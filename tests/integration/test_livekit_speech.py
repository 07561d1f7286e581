"""A room call with real speech and the real engines: Piper's voice at 48 kHz goes through
``RoomTransport`` (``rtc.AudioResampler`` down to 16 kHz, 20 ms frames) into the same CallSession
Converse runs, whisper hears the words, the demo agent answers, and what the caller hears comes
out as 48 kHz ``rtc.AudioFrame``s that whisper transcribes back to the agent's words."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from common.audio import resample_once
from common.discovery import StaticResolver
from gateway.app import GatewayApp, Settings
from gateway.livekit.routing import Caller
from gateway.session.events import AgentSpeech, CallerTranscript
from llm_svc.app import Settings as LlmSettings
from llm_svc.app import build_host as llm_host
from stt_svc.app import Settings as SttSettings
from stt_svc.app import build_host as stt_host
from stt_svc.app import make_engine as stt_engine
from stt_svc.providers.base import RecognitionOptions
from tests.audio_helpers import normalise, synthesize_pcm
from tests.conftest import running
from tests.credentials import token
from tests.integration.livekit_harness import RoomLine, room_calls, start_call
from tts_svc.app import Settings as TtsSettings
from tts_svc.app import build_host as tts_host
from tts_svc.app import make_engine as tts_engine

pytestmark = pytest.mark.slow


async def until_quiet(room: RoomLine, quiet_s: float = 0.8, timeout_s: float = 30.0) -> None:
    """Until the agent has sent nothing for ``quiet_s`` (the line carries silence meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    heard, since = len(room.sink.frames), loop.time()
    while loop.time() - since < quiet_s:
        assert loop.time() < deadline, "the agent never stopped talking"
        await room.say(bytes(960 * 10))
        if len(room.sink.frames) != heard:
            heard, since = len(room.sink.frames), loop.time()


async def test_a_browser_caller_is_heard_and_answered_through_the_room_transport() -> None:
    stt = stt_engine(SttSettings())
    stt.warm_up()  # type: ignore[attr-defined]
    tts = tts_engine(TtsSettings())
    tts.warm_up()  # type: ignore[attr-defined]
    metadata = json.dumps({"token": token("clinic"), "agent_id": "demo"})
    room = RoomLine(Caller(identity="web-visitor", sip=False, metadata=metadata))
    async with (
        running(stt_host(SttSettings(), stt)) as stt_addr,
        running(llm_host(LlmSettings())) as llm_addr,
        running(tts_host(TtsSettings(), tts)) as tts_addr,
    ):
        resolver = StaticResolver({"stt": [stt_addr], "llm": [llm_addr], "tts": [tts_addr]})
        app = GatewayApp(Settings(grace_period_s=1.0), resolver)
        await app.start()
        try:
            async with room_calls(app) as (calls, sip):
                call, _ = start_call(calls, room, sip)
                await room.wait_for(lambda r: any(isinstance(e, AgentSpeech) for e in r.transport.events))
                await until_quiet(room)  # the greeting
                greeting_frames = len(room.sink.frames)
                await room.say(synthesize_pcm("Hi, I'd like to book a cleaning for next Tuesday.", 48000))
                await room.wait_for(room.turn_done(1), timeout=30)
                await until_quiet(room)  # the reply
                room.transport.caller_left()
                reason = await asyncio.wait_for(call, 10)
        finally:
            await app.drain(1.0)
    assert reason == "caller_hangup"
    heard = [e.text for e in room.transport.events if isinstance(e, CallerTranscript) and e.is_final]
    assert {"book", "cleaning", "tuesday"} <= set(normalise(" ".join(heard)))
    said = " ".join(e.text for e in room.transport.events if isinstance(e, AgentSpeech))
    assert "Bright Smile Dental" in said and "an opening next Tuesday" in said
    # The caller's side of the room: 20 ms frames of 48 kHz mono carrying the agent's words.
    assert {(f.sample_rate, f.samples_per_channel) for f in room.sink.frames} == {(48000, 960)}
    reply = room.sink.pcm()[greeting_frames * 1920 :]
    assert np.abs(np.frombuffer(reply, dtype=np.int16)).max() > 1000
    heard_back, _, _ = stt.transcribe(resample_once(reply, 48000, 16000), RecognitionOptions(), False)  # type: ignore[attr-defined]
    assert {"opening", "tuesday", "morning"} <= set(normalise(heard_back))
