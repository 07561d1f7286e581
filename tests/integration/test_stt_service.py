"""stt_svc over real loopback gRPC with the real faster-whisper model and Silero VAD.

Speech comes from the local Piper voice (tts_svc over gRPC, or tests.audio_helpers), streamed
in 20 ms messages as a telephone or WebRTC edge would send it.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import numpy as np
import pytest

from common.audio import pcm16_to_mulaw, resample_once
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from stt_svc.app import Settings, build_host, make_engine
from stt_svc.providers.base import RecognitionOptions
from tests.audio_helpers import normalise, silence_pcm, synthesize_pcm
from tests.conftest import running, tts_md
from tests.conftest import stt_md as md
from tts_svc.app import Settings as TtsSettings
from tts_svc.app import build_host as tts_host
from tts_svc.app import make_engine as tts_engine

pytestmark = pytest.mark.slow
R = stt_pb2.StreamingRecognizeRequest
LINEAR16 = audio_pb2.AUDIO_ENCODING_LINEAR16
MULAW = audio_pb2.AUDIO_ENCODING_MULAW


def config(enc: int = LINEAR16, rate: int = 16000, interim: bool = True, **kw: object) -> R:
    fmt = audio_pb2.AudioFormat(encoding=enc, sample_rate_hertz=rate, channels=kw.pop("channels", 1))  # type: ignore[arg-type]
    cfg = stt_pb2.RecognitionConfig(
        language_code=kw.pop("language_code", "en-US"),  # type: ignore[arg-type]
        audio_format=fmt,
        interim_results=interim,
        **kw,  # type: ignore[arg-type]
    )
    return R(config=cfg)


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    e = make_engine(Settings())
    e.warm_up()  # type: ignore[attr-defined]
    return e


async def recognize(
    addr: str, audio: bytes, cfg: R, chunk_ms: int = 20, realtime: bool = False
) -> list[stt_pb2.StreamingRecognizeResponse]:
    """Stream ``audio`` in ``chunk_ms`` messages (paced in real time if asked), then half-close."""
    fmt = cfg.config.audio_format
    step = fmt.sample_rate_hertz * chunk_ms // 1000 * (2 if fmt.encoding == LINEAR16 else 1)
    async with grpc.aio.insecure_channel(addr) as ch:
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(cfg)
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(audio), step)):
            await call.write(R(audio=audio[i : i + step]))
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (n + 1) * chunk_ms / 1000 - time.monotonic()))
        await call.done_writing()
        # Recognition events only: usage reports (issue 17) are tested in test_stt_usage.py.
        return [r async for r in call if r.WhichOneof("event") != "usage"]


def kinds(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[str]:
    """Recognition event kinds in order (usage reports, issue 17, are not recognition events)."""
    return [k for r in responses if (k := r.WhichOneof("event")) != "usage"]


def finals(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[stt_pb2.FinalResult]:
    return [r.final for r in responses if r.WhichOneof("event") == "final"]


def heard(responses: list[stt_pb2.StreamingRecognizeResponse]) -> set[str]:
    return set(normalise(" ".join(f.text for f in finals(responses))))


async def test_round_trip_tts_to_stt_in_real_time_with_and_without_interims(engine) -> None:  # type: ignore[no-untyped-def]
    """Sentences from tts_svc, streamed in real time into stt_svc, come back as words.

    Two streams run side by side on one server: interim hypotheses appear while the (long)
    utterance goes on when asked for, and never when not."""
    sentences = "Thanks for calling the dental office. We are open every weekday morning and afternoon."
    async with running(tts_host(TtsSettings(), tts_engine(TtsSettings()))) as tts_addr:
        async with grpc.aio.insecure_channel(tts_addr) as ch:
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=tts_md())
            fmt16 = audio_pb2.AudioFormat(encoding=LINEAR16, sample_rate_hertz=16000)
            await call.write(
                tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(audio_format=fmt16))
            )
            await call.write(tts_pb2.StreamingSynthesizeRequest(text=sentences))
            await call.done_writing()
            speech = b"".join([r.audio.audio async for r in call if r.WhichOneof("event") == "audio"])
    audio = speech + silence_pcm(800)
    async with running(build_host(Settings(), engine)) as addr:
        with_interims, without = await asyncio.gather(
            recognize(addr, audio, config(interim=True), realtime=True),
            recognize(addr, audio, config(interim=False), realtime=True),
        )
    expected = set(normalise(sentences))
    for responses in (with_interims, without):
        k = kinds(responses)
        assert k[0] == "speech_started" and k[-1] == "utterance_end", k
        assert len(heard(responses) & expected) >= 0.85 * len(expected), finals(responses)
        last = finals(responses)[-1]
        assert last.speech_final and 0 < last.confidence <= 1
        assert last.words and all(w.start_ms <= w.end_ms for w in last.words)
        assert last.words[0].start_ms >= last.start_ms and last.words[-1].end_ms <= last.end_ms + 500
    k = kinds(with_interims)
    # How many interims fit depends on the CPU left over (they are skipped, never queued).
    assert "interim" in k and k.index("interim") < k.index("final"), k
    assert "interim" not in kinds(without)


async def test_phone_audio_two_utterances_give_two_finals(engine) -> None:  # type: ignore[no-untyped-def]
    one = synthesize_pcm("I would like to book an appointment for next week please.", 8000)
    two = synthesize_pcm("My name is John Smith.", 8000)
    audio = pcm16_to_mulaw(one + silence_pcm(900, 8000) + two + silence_pcm(900, 8000))
    async with running(build_host(Settings(), engine)) as addr:
        responses = await recognize(addr, audio, config(MULAW, 8000, interim=False))
    assert kinds(responses) == ["speech_started", "final", "utterance_end"] * 2
    got = finals(responses)
    assert {"book", "appointment", "week"} <= set(normalise(got[0].text)), got[0].text
    assert {"john", "smith"} <= set(normalise(got[1].text)), got[1].text
    assert all(f.speech_final for f in got)
    assert got[0].end_ms < got[1].start_ms
    # offsets are ms of stream audio: the second sentence starts after the first and the pause
    assert abs(got[1].start_ms - (len(one) / 16 + 900)) < 500


async def test_other_rates_and_encodings_silence_and_noise(engine) -> None:  # type: ignore[no-untyped-def]
    speech = synthesize_pcm("Good morning.", 16000)
    rng = np.random.default_rng(3)
    hiss = rng.normal(0, 300, 16000 * 2).astype(np.int16).tobytes()
    hum = (np.sin(2 * np.pi * 60 * np.arange(16000) / 16000) * 3000).astype(np.int16).tobytes()
    async with running(build_host(Settings(), engine)) as addr:
        at48k, mulaw16k, quiet, noise = await asyncio.gather(
            recognize(
                addr, resample_once(speech, 16000, 48000) + silence_pcm(700, 48000), config(rate=48000)
            ),
            recognize(addr, pcm16_to_mulaw(speech + silence_pcm(700)), config(MULAW, 16000)),
            recognize(addr, silence_pcm(2000), config(), chunk_ms=100),
            recognize(addr, hiss + hum + silence_pcm(500), config()),
        )
    assert {"good", "morning"} <= heard(at48k)
    assert {"good", "morning"} <= heard(mulaw16k)
    assert quiet == []
    assert finals(noise) == []  # the gateway relies on noise producing no words


def test_transcriber_drops_noise_it_is_given(engine) -> None:  # type: ignore[no-untyped-def]
    """Even when the VAD lets noise through, whisper's invented words are filtered out."""
    rng = np.random.default_rng(5)
    for noise in (rng.normal(0, 3000, 16000 * 2), np.cumsum(rng.normal(0, 200, 16000 * 2))):
        pcm = np.clip(noise - noise.mean(), -32000, 32000).astype(np.int16).tobytes()
        assert engine.transcribe(pcm, RecognitionOptions(), True).text == ""


async def test_keyterms_and_finalize(engine) -> None:  # type: ignore[no-untyped-def]
    speech = synthesize_pcm("Can I get a refill of my Xarelto prescription?", 16000)
    half = len(speech) // 2 // 640 * 640
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        hinted = await recognize(addr, speech + silence_pcm(700), config(keyterms=["Xarelto"]))
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(config(interim=False))
        for i in range(0, half, 640):
            await call.write(R(audio=speech[i : i + 640]))
        await call.write(R(finalize=stt_pb2.Finalize()))
        for i in range(half, len(speech), 640):
            await call.write(R(audio=speech[i : i + 640]))
        await call.write(R(audio=silence_pcm(700)))
        await call.done_writing()
        finalized = [r async for r in call]
    assert "xarelto" in heard(hinted), finals(hinted)
    # finalize: a final for the first half at once; the utterance itself goes on to its end
    assert kinds(finalized) == ["speech_started", "final", "final", "utterance_end"]
    cut, last = finals(finalized)
    assert not cut.speech_final and last.speech_final and cut.end_ms <= last.start_ms + 200
    assert {"refill", "prescription"} <= set(normalise(cut.text + " " + last.text))


FMT16 = config().config.audio_format
BAD = [
    ([R(audio=b"\x00" * 640)], "first message must be 'config'"),
    ([R()], "first message must be 'config'"),
    ([config(rate=44100)], "sample_rate_hertz 44100"),
    ([config(audio_pb2.AUDIO_ENCODING_ALAW, 8000)], "encoding ALAW is not supported"),
    ([config(audio_pb2.AUDIO_ENCODING_UNSPECIFIED, 16000)], "is not supported; use one of"),
    ([config(channels=2)], "channels must be 1"),
    ([config(), R(audio=b"\x00" * 32002)], "over the 1000 ms limit"),
    ([config(MULAW, 8000), R(audio=b"\xff" * 8001)], "over the 1000 ms limit"),
    ([config(), R(audio=b"\x00" * 641)], "whole 16-bit samples"),
    ([config(), config()], "only be sent once"),
    ([config(), R()], "empty request"),
    ([config(keyterms=["x"] * 101)], "at most 100"),
    ([config(keyterms=["x" * 101])], "keyterms[0] has 101 characters"),
    ([config(keyterms=["ok", " "])], "keyterms[1]"),
    ([config(endpointing_ms=50)], "endpointing_ms 50 is out of range"),
    ([config(endpointing_ms=-1)], "endpointing_ms -1 is out of range"),
    ([config(endpointing_ms=60000)], "endpointing_ms 60000 is out of range"),
    ([config(language_code="fr-FR")], "is not supported by the local engine"),
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
                    break  # rejected already (the server may answer before our next write)
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
        responses = [r async for r in good]
    assert kinds(responses)[0] == "speech_started" and kinds(responses)[-1] == "utterance_end"
    assert {"call", "back", "tomorrow"} <= heard(responses)


async def test_client_cancel_leaves_no_tasks(engine) -> None:  # type: ignore[no-untyped-def]
    speech = synthesize_pcm("This stream will be cancelled in the middle of a sentence.", 16000)

    def live() -> set[asyncio.Task[object]]:
        # The session's loop is shared: only tasks this test's stream created count. The server's
        # pending "accept the next RPC" task is replaced on every RPC, so it is left out.
        return {t for t in asyncio.all_tasks() if not t.done() and "_request_registered_call" not in repr(t)}

    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        before = live()
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(config(interim=True))
        for i in range(0, 48000, 640):  # 1.5 s: speech has started, an interim is likely running
            await call.write(R(audio=speech[i : i + 640]))
        assert (await call.read()).WhichOneof("event") == "speech_started"
        during = {t.get_name() for t in live() - before}
        assert {"stt-stream", "stt-read"} <= during
        call.cancel()
        for _ in range(50):  # everything of the stream must be gone within 1 s
            if not live() - before:
                break
            await asyncio.sleep(0.02)
        assert not live() - before, [t.get_name() for t in live() - before]
        assert not any(t.get_name().startswith("stt") for t in live())
