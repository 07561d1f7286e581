"""Real speech over the agent: a backchannel ("okay", "uh-huh") must not cut the agent off,
while a real request must. Whisper hears the caller; the gateway decides."""

from __future__ import annotations

import grpc.aio
import pytest

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from tests.audio_helpers import synthesize_pcm
from tests.caller import ConverseCaller
from tests.e2e.test_call_e2e import RecordingStore, real_mesh

pytestmark = pytest.mark.slow

LONG = (
    "We offer cleanings, check-ups, fillings and whitening. Our hygienists are gentle and thorough."
    " We also have evening hours on Thursdays and free parking behind the building."
)


def config() -> gateway_pb2.CallConfig:
    rules = llm_pb2.ResponderRules(
        intents=[llm_pb2.Intent(keywords=["services"], reply=LONG)],
        default_reply="Of course, I will stop there.",
    )
    return gateway_pb2.CallConfig(
        agent=gateway_pb2.AgentConfig(system_prompt="Dental receptionist.", responder_rules=rules),
        caller_audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000
        ),
    )


@pytest.mark.parametrize(
    ("over_the_agent", "cuts_in"), [("Okay.", False), ("Wait, can you stop for a second?", True)]
)
async def test_backchannel_versus_real_interruption(over_the_agent: str, cuts_in: bool) -> None:
    store = RecordingStore()
    async with real_mesh(store) as (gateway, _stt), grpc.aio.insecure_channel(gateway) as ch:
        async with ConverseCaller(ch, config()) as caller:
            await caller.send_pcm(synthesize_pcm("Can you tell me about your services?"))
            await caller.wait_for(lambda c: c.of("agent_speech"), timeout=15)
            await caller.silence(1500)
            await caller.send_pcm(synthesize_pcm(over_the_agent))
            await caller.wait_for(caller.turn_done(1), timeout=30)
            if cuts_in:
                await caller.wait_for(caller.turn_done(2), timeout=30)
            ended = await caller.hangup(timeout=10)
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    turn1 = caller.turn_done(1)(caller).msg.turn_metrics  # type: ignore[union-attr]
    finals = [
        r.msg.caller_transcript.text
        for r in caller.of("caller_transcript")
        if r.msg.caller_transcript.is_final
    ]
    assert len(finals) >= 2, finals  # the words over the agent were heard either way
    if cuts_in:
        assert caller.of("clear") and turn1.interrupted
        assert "Of course," in caller.agent_texts()  # the agent answered the request
    else:
        assert not caller.of("clear") and not turn1.interrupted
        assert " ".join(t for t in caller.agent_texts()) == LONG  # every sentence was spoken
        assert not caller.turn_done(2)(caller)  # "okay" did not become a turn
