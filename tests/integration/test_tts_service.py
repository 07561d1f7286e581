"""tts_svc over real loopback gRPC with the real Piper voice."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import numpy as np
import pytest

from common.audio import mulaw_to_pcm16
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from tests.conftest import md, running
from tts_svc.app import Settings, build_host
from tts_svc.providers.piper_local import PiperSynthesizer

pytestmark = pytest.mark.slow

R = tts_pb2.StreamingSynthesizeRequest


def fmt(enc: int = audio_pb2.AUDIO_ENCODING_LINEAR16, rate: int = 16000) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=enc, sample_rate_hertz=rate, channels=1)


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    engine = PiperSynthesizer()
    engine.warm_up()
    return engine


async def test_first_sentence_is_spoken_before_the_rest_arrives(piper: PiperSynthesizer) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt())))
        for token in ["Hello", " there", ".", " I am", " still"]:
            await call.write(R(text=token))
        first = await asyncio.wait_for(call.read(), 5)  # no flush yet: the sentence ended
        assert first.audio.text == "Hello there." and len(first.audio.audio) > 16000  # > 0.5 s
        assert abs(first.audio.duration_ms - len(first.audio.audio) / 32) <= 1
        await call.write(R(text=" thinking"))
        await call.write(R(flush=tts_pb2.Flush()))
        second = await call.read()
        done = await call.read()
        while done.WhichOneof("event") == "audio":  # a long piece continues in chunks of <= 1 s
            assert done.audio.text == ""
            done = await call.read()
        assert second.audio.text == "I am still thinking"
        assert done.flush_done.characters == len("Hello there. I am still thinking")
        await call.done_writing()
        last = await call.read()
        assert last.WhichOneof("event") == "flush_done"  # half-close flushes (nothing was left)
        assert await call.read() == grpc.aio.EOF


@pytest.mark.parametrize(
    ("enc", "rate"),
    [
        (audio_pb2.AUDIO_ENCODING_MULAW, 8000),
        (audio_pb2.AUDIO_ENCODING_LINEAR16, 24000),
        (audio_pb2.AUDIO_ENCODING_LINEAR16, 48000),
    ],
)
async def test_requested_formats(piper: PiperSynthesizer, enc: int, rate: int) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt(enc, rate))))
        await call.write(R(text="Thanks for calling. This is a slightly longer second sentence to split."))
        await call.done_writing()
        chunks = [r.audio async for r in call if r.WhichOneof("event") == "audio"]
    bps = 2 if enc == audio_pb2.AUDIO_ENCODING_LINEAR16 else 1
    total = b"".join(c.audio for c in chunks)
    assert all(len(c.audio) <= rate * bps for c in chunks)  # at most 1 s per message
    assert [c.text for c in chunks if c.text] == [
        "Thanks for calling.",
        "This is a slightly longer second sentence to split.",
    ]
    assert abs(sum(c.duration_ms for c in chunks) - len(total) / bps / rate * 1000) < 5
    pcm = np.frombuffer(mulaw_to_pcm16(total) if bps == 1 else total, dtype=np.int16)
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert 2.5 < len(pcm) / rate < 8 and rms > 300  # seconds of audible speech


BAD = [
    ([R(text="hi")], grpc.StatusCode.INVALID_ARGUMENT, "first message must be 'config'"),
    (
        [R(config=tts_pb2.SynthesisConfig(audio_format=fmt(rate=44100)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "44100",
    ),
    (
        [R(config=tts_pb2.SynthesisConfig(audio_format=fmt(audio_pb2.AUDIO_ENCODING_MULAW, 16000)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "use one of: 8000",
    ),
    (
        [R(config=tts_pb2.SynthesisConfig(voice="nobody", audio_format=fmt()))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "en_US-joe-medium",
    ),
    (
        [R(config=tts_pb2.SynthesisConfig(audio_format=fmt())), R(text="x" * 5000)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "4096-byte",
    ),
    (
        [R(config=tts_pb2.SynthesisConfig(audio_format=fmt())), R(config=tts_pb2.SynthesisConfig())],
        grpc.StatusCode.INVALID_ARGUMENT,
        "only be sent once",
    ),
]


async def test_bad_input_while_a_good_stream_keeps_working(piper: PiperSynthesizer) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = tts_pb2_grpc.TextToSpeechServiceStub(ch)
        good = stub.StreamingSynthesize(metadata=md("good"))
        await good.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt())))
        await good.write(R(text="First part. "))
        for requests, code, fragment in BAD:
            call = stub.StreamingSynthesize(metadata=md("bad"))
            for r in requests:
                try:
                    await call.write(r)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break  # rejected already; the status is read below
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() == code and fragment in (info.value.details() or ""), (
                info.value.details()
            )
        # Invalid UTF-8 cannot even be parsed as the request message.
        raw = ch.stream_stream(
            "/voiceai.tts.v1.TextToSpeechService/StreamingSynthesize",
            request_serializer=lambda b: b,
            response_deserializer=tts_pb2.StreamingSynthesizeResponse.FromString,
        )(metadata=md("raw"))
        await raw.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt())).SerializeToString())
        await raw.write(b"\x12\x02\xff\xfe")  # field 2 (text), 2 bytes of invalid UTF-8
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in raw:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "valid UTF-8" in (info.value.details() or "")
        await good.write(R(text="Second part."))
        await good.done_writing()
        texts = [r.audio.text async for r in good if r.WhichOneof("event") == "audio" and r.audio.text]
    assert texts == ["First part.", "Second part."]


async def test_cancel_stops_synthesis(piper: PiperSynthesizer) -> None:
    calls = 0
    original = piper.synthesize

    async def counting(text, options):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original(text, options)

    piper.synthesize = counting  # type: ignore[method-assign]
    try:
        async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
            before = {t for t in asyncio.all_tasks() if not t.done()}
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt())))
            await call.write(R(text="One. Two. Three. "))
            await call.read()
            call.cancel()
            await asyncio.sleep(0.5)
            seen = calls
            leaked = [
                t for t in asyncio.all_tasks() - before if not t.done() and t.get_name().startswith("tts")
            ]
            assert leaked == []
            await asyncio.sleep(0.3)
            assert calls == seen <= 3
    finally:
        piper.synthesize = original  # type: ignore[method-assign]


async def test_time_to_first_audio_is_short(piper: PiperSynthesizer) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt())))
        t0 = time.monotonic()
        await call.write(R(text="Sure. "))
        await call.read()
        # Not a speed assertion (that is make bench): only that audio comes without a flush.
        assert time.monotonic() - t0 < 10
        call.cancel()
