"""VAD-gated cloud STT (issue 17) on the Deepgram listen double: with long silences the double
receives only voiced audio plus pre-roll and hangover (KeepAlive while silent), the words and
their offsets are exactly those of the ungated stream, and stt_svc reports the seconds the
provider was sent, per provider and model."""

from __future__ import annotations

import asyncio
import time

import grpc.aio

from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from stt_svc.app import Settings, build_host, make_chain
from stt_svc.vad_gate import GateSettings
from tests.conftest import running, stt_md
from tests.doubles.deepgram_api import DeepgramListenDouble, ToneWordsRecognizer
from tests.doubles.tone_words import GAP_MS, speak
from tests.integration.test_stt_deepgram import FIRST, SECOND, R, config, finals, silence, words_of

ENV = {"DEEPGRAM_API_KEY": "dg-test"}
LEAD, MIDDLE, TAIL = 1500, 3000, 2500
AUDIO = silence(LEAD) + speak(FIRST) + silence(MIDDLE) + speak(SECOND) + silence(TAIL)
SPEECH_MS = len(speak(FIRST)) // 32


async def recognize_paced(addr: str, audio: bytes, realtime: bool) -> list:  # type: ignore[type-arg]
    async with grpc.aio.insecure_channel(addr) as ch:
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=stt_md())
        await call.write(config(providers=["deepgram"]))
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(audio), 640)):
            await call.write(R(audio=audio[i : i + 640]))
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))
        await call.done_writing()
        return [r async for r in call]


async def run(gate: bool, realtime: bool) -> tuple[list, DeepgramListenDouble]:  # type: ignore[type-arg]
    async with DeepgramListenDouble() as dg:
        settings = Settings(
            stt_providers="deepgram,local",
            stt_deepgram_urls=dg.url,
            stt_vad_gate=gate,
            stt_deepgram_keepalive_s=0.5,
        )
        chain = make_chain(settings, ToneWordsRecognizer(), ENV)
        async with running(build_host(settings, chain)) as addr:
            responses = await recognize_paced(addr, AUDIO, realtime)
        await chain.aclose()
        return responses, dg


def usage_lines(responses: list) -> list:  # type: ignore[type-arg]
    return [ln for r in responses if r.WhichOneof("event") == "usage" for ln in r.usage.lines]


async def test_silence_is_not_sent_and_the_words_are_unchanged() -> None:
    open_responses, open_dg = await run(gate=False, realtime=False)
    gated_responses, gated_dg = await run(gate=True, realtime=True)
    # The same words at the same places on the stream's timeline, gate or not.
    assert [f.text for f in finals(gated_responses)] == [f.text for f in finals(open_responses)]
    assert words_of(gated_responses) == words_of(open_responses)
    assert [w for w, _, _ in words_of(gated_responses)] == FIRST + SECOND
    assert words_of(gated_responses)[0][1] == LEAD  # offsets on the caller's timeline
    (ungated,) = open_dg.requests
    (gated,) = gated_dg.requests
    assert ungated.audio_bytes == len(AUDIO)
    # Only voiced audio, each utterance with its pre-roll before and its hangover after (the
    # hangover counts from the first quiet frame after the last word): exactly that, no more.
    gate = GateSettings()
    voiced_ms = SPEECH_MS - GAP_MS  # speak() ends with a word gap: quiet, part of the hangover
    per_utterance_ms = gate.pre_roll_ms + voiced_ms + gate.hangover_ms
    assert gated.audio_bytes == 2 * per_utterance_ms * 32, gated.audio_bytes
    assert (
        len(AUDIO) - gated.audio_bytes
        >= (LEAD + MIDDLE + TAIL - 2 * (gate.pre_roll_ms + gate.hangover_ms)) * 32
    )
    assert "KeepAlive" in gated.control  # the stream stayed open through the silences
    # What stt_svc reports is what the provider was sent, by provider and model.
    lines = usage_lines(gated_responses)
    assert {(ln.provider, ln.model, ln.key_label, ln.unit) for ln in lines} == {
        ("deepgram", "nova-3", "default", "second")
    }
    assert sum(ln.quantity_milli for ln in lines) == gated.audio_bytes // 32
    assert sum(ln.quantity_milli for ln in usage_lines(open_responses)) == len(AUDIO) // 32
    # Reported at each utterance's end (not only at the stream's end, which a hangup may cut).
    kinds = [r.WhichOneof("event") for r in gated_responses]
    assert kinds.count("usage") >= 2 and kinds.index("usage") < len(kinds) - 1
