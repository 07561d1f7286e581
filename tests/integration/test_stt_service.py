"""stt_svc over real loopback gRPC with the real faster-whisper model and Silero VAD."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

from common.audio import pcm16_to_mulaw, resample_once
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from stt_svc.app import Settings, build_host, make_engine
from tests.audio_helpers import normalise, silence_pcm, synthesize_pcm
from tests.conftest import md, running
from tts_svc.app import Settings as TtsSettings
from tts_svc.app import build_host as tts_host
from tts_svc.app import make_engine as tts_engine

pytestmark = pytest.mark.slow
R = stt_pb2.StreamingRecognizeRequest


def config(enc: int = audio_pb2.AUDIO_ENCODING_LINEAR16, rate: int = 16000, interim: bool = True) -> R:
    fmt = audio_pb2.AudioFormat(encoding=enc, sample_rate_hertz=rate, channels=1)
    return R(
        config=stt_pb2.RecognitionConfig(language_code="en-US", audio_format=fmt, interim_results=interim)
    )


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    e = make_engine(Settings())
    e.warm_up()  # type: ignore[attr-defined]
    return e


async def recognize(
    addr: str, audio: bytes, cfg: R, chunk: int, realtime: float = 0.0
) -> list[stt_pb2.StreamingRecognizeResponse]:
    """Stream ``audio`` in ``chunk``-byte messages (paced at ``realtime`` x real time if set)."""
    bytes_per_s = cfg.config.audio_format.sample_rate_hertz * (
        2 if cfg.config.audio_format.encoding == 1 else 1
    )
    async with grpc.aio.insecure_channel(addr) as ch:
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(cfg)
        t0 = time.monotonic()
        for i in range(0, len(audio), chunk):
            await call.write(R(audio=audio[i : i + chunk]))
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + chunk) / bytes_per_s / realtime - time.monotonic()))
        await call.done_writing()
        return [r async for r in call]


def finals(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[stt_pb2.FinalResult]:
    return [r.final for r in responses if r.WhichOneof("event") == "final"]


async def test_round_trip_tts_to_stt_in_real_time(engine) -> None:  # type: ignore[no-untyped-def]
    """Sentences synthesized by tts_svc, streamed in real time into stt_svc, come back as words."""
    sentences = "Thanks for calling the dental office. We are open every weekday morning and afternoon."
    piper = tts_engine(TtsSettings())
    async with running(tts_host(TtsSettings(), piper)) as tts_addr, grpc.aio.insecure_channel(tts_addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        fmt16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000)
        await call.write(
            tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(audio_format=fmt16))
        )
        await call.write(tts_pb2.StreamingSynthesizeRequest(text=sentences))
        await call.done_writing()
        speech = b"".join([r.audio.audio async for r in call if r.WhichOneof("event") == "audio"])
    async with running(build_host(Settings(), engine)) as addr:
        responses = await recognize(addr, speech + silence_pcm(800), config(), chunk=640, realtime=1.0)
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[0] == "speech_started" and "utterance_end" in kinds
    assert "interim" in kinds  # hypotheses while the (real-time) speech continues
    assert kinds.index("interim") < kinds.index("final")
    heard = " ".join(f.text for f in finals(responses))
    expected = set(normalise(sentences))
    assert len(set(normalise(heard)) & expected) >= 0.85 * len(expected), heard
    f = finals(responses)[-1]
    assert f.speech_final and 0 < f.confidence <= 1 and f.words and f.words[0].end_ms > f.words[0].start_ms


async def test_phone_audio_two_utterances_interims_on_and_off(engine) -> None:  # type: ignore[no-untyped-def]
    one = synthesize_pcm("I would like to book an appointment for next week please.", 8000)
    two = synthesize_pcm("My name is John Smith.", 8000)
    audio = pcm16_to_mulaw(one + silence_pcm(900, 8000) + two + silence_pcm(900, 8000))
    async with running(build_host(Settings(), engine)) as addr:
        with_interims = await recognize(addr, audio, config(audio_pb2.AUDIO_ENCODING_MULAW, 8000), chunk=800)
        without = await recognize(
            addr, audio, config(audio_pb2.AUDIO_ENCODING_MULAW, 8000, interim=False), chunk=800
        )
    got = finals(with_interims)
    assert len(got) == 2
    assert {"book", "appointment", "week"} <= set(normalise(got[0].text))
    assert {"john", "smith"} <= set(normalise(got[1].text))
    assert got[0].end_ms < got[1].start_ms
    assert not any(r.WhichOneof("event") == "interim" for r in without)
    assert len(finals(without)) == 2


async def test_48k_input_and_silence_gives_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    speech = resample_once(synthesize_pcm("Good morning.", 16000), 16000, 48000)
    async with running(build_host(Settings(), engine)) as addr:
        responses = await recognize(
            addr, speech + silence_pcm(700, 48000), config(rate=48000), chunk=48000 * 2 // 10
        )
        quiet = await recognize(addr, silence_pcm(2000), config(), chunk=3200)
    assert {"good", "morning"} <= set(normalise(" ".join(f.text for f in finals(responses))))
    assert quiet == []


BAD = [
    ([R(audio=b"\x00" * 640)], "first message must be 'config'"),
    ([config(rate=44100)], "sample_rate_hertz 44100"),
    ([config(audio_pb2.AUDIO_ENCODING_ALAW, 8000)], "encoding ALAW is not supported"),
    ([config(audio_pb2.AUDIO_ENCODING_MULAW, 16000)], "use one of: 8000"),
    ([config(), R(audio=b"\x00" * 32002)], "over the 1000 ms limit"),
    ([config(), R(audio=b"\x00" * 641)], "whole 16-bit samples"),
    ([config(), config()], "only be sent once"),
    (
        [
            R(
                config=stt_pb2.RecognitionConfig(
                    audio_format=config().config.audio_format, keyterms=["x"] * 101
                )
            )
        ],
        "at most 100",
    ),
]


async def test_bad_input_while_a_good_stream_keeps_working(engine) -> None:  # type: ignore[no-untyped-def]
    speech = synthesize_pcm("Please call me back tomorrow.", 16000)
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = stt_pb2_grpc.SpeechToTextServiceStub(ch)
        good = stub.StreamingRecognize(metadata=md("good"))
        await good.write(config())
        half = len(speech) // 4 * 2
        await good.write(R(audio=speech[:half]))
        for requests, fragment in BAD:
            call = stub.StreamingRecognize(metadata=md("bad"))
            for r in requests:
                try:
                    await call.write(r)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break  # rejected already; the status is read below
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fragment
            assert fragment in (info.value.details() or ""), info.value.details()
        no_tenant = stub.StreamingRecognize()
        try:
            await no_tenant.write(config())
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # rejected already; the status is read below
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in no_tenant:
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await good.write(R(audio=speech[half:]))
        await good.write(R(audio=silence_pcm(600)))
        await good.done_writing()
        text = " ".join([r.final.text async for r in good if r.WhichOneof("event") == "final"])
    assert {"call", "back", "tomorrow"} <= set(normalise(text))


async def test_cancel_leaves_no_tasks(engine) -> None:  # type: ignore[no-untyped-def]
    speech = synthesize_pcm("This stream will be cancelled in the middle.", 16000)
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        before = set(asyncio.all_tasks())
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(config())
        await call.write(R(audio=speech[:16000]))
        await call.read()  # speech started
        call.cancel()
        await asyncio.sleep(0.5)
        leaked = [
            t.get_name()
            for t in set(asyncio.all_tasks()) - before
            if not t.done() and t.get_name().startswith("stt")
        ]
        assert leaked == []
