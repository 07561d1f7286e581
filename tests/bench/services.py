"""Service benchmarks (issue: mesh spine).

(a) Mesh overhead per service: stt_svc and tts_svc run as their own processes with zero-cost
    engines; a load generator pushes 20 ms frames (STT) or text (TTS) through N concurrent
    streams; reported per CPU-second of the service process.
(b) Real local engines: STT real-time factor and final latency after speech end (real-time
    paced Piper speech), TTS time to first audio and real-time factor.

    python -m tests.bench.services
"""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc.aio
import uvloop

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from tests.bench import procs
from tests.credentials import internal_bearer  # fixes the dev keys every mesh process verifies with

# stt/llm/tts accept only the gateway's internal tokens, one per service and call.
STT_MD = (("x-tenant-id", "bench"), ("x-call-id", "bench"), internal_bearer("stt", "bench", "bench"))
TTS_MD = (("x-tenant-id", "bench"), ("x-call-id", "bench"), internal_bearer("tts", "bench", "bench"))
F16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channels=1)
FRAME = b"\x10\x00" * 320  # 20 ms of quiet LINEAR16 16 kHz


async def _stt_load(address: str, streams: int, seconds: float) -> int:
    sent = 0
    stop = time.monotonic() + seconds

    async def one() -> None:
        nonlocal sent
        async with grpc.aio.insecure_channel(address) as ch:
            call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=STT_MD)
            await call.write(
                stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(audio_format=F16))
            )
            req = stt_pb2.StreamingRecognizeRequest(audio=FRAME)
            while time.monotonic() < stop:
                await call.write(req)
                sent += 1
            await call.done_writing()
            async for _ in call:
                pass

    await asyncio.gather(*(one() for _ in range(streams)))
    return sent


async def _tts_load(address: str, streams: int, seconds: float) -> tuple[int, float]:
    messages = 0
    audio_ms = 0.0
    stop = time.monotonic() + seconds

    async def one() -> None:
        nonlocal messages, audio_ms
        async with grpc.aio.insecure_channel(address) as ch:
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=TTS_MD)
            await call.write(
                tts_pb2.StreamingSynthesizeRequest(
                    config=tts_pb2.SynthesisConfig(voice="fake", audio_format=F16)
                )
            )
            while time.monotonic() < stop:
                await call.write(tts_pb2.StreamingSynthesizeRequest(text="Sure, that works. "))
                await call.write(tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush()))
                while True:
                    resp = await call.read()
                    messages += 1
                    if resp.WhichOneof("event") == "flush_done":
                        break
                    audio_ms += resp.audio.duration_ms
            await call.done_writing()
            while await call.read() != grpc.aio.EOF:
                pass

    await asyncio.gather(*(one() for _ in range(streams)))
    return messages, audio_ms


def overhead(streams: int = 50, seconds: float = 8.0) -> None:
    env = {
        "VOICEAI_STT_ENGINE": "tests.fakes.stt:ZeroCostRecognizer",
        "VOICEAI_TTS_ENGINE": "tests.fakes.tts:ZeroCostSynthesizer",
        "VOICEAI_FAKE_TTS_FIRST_AUDIO_MS": "0",
    }
    print(
        f"\n== Service overhead with zero-cost engines ({streams} concurrent streams, {seconds:.0f} s each)"
    )
    with procs.start("stt", "stt_svc", env) as stt:
        cpu0 = stt.cpu_seconds()
        t0 = time.monotonic()
        frames = uvloop.run(_stt_load(stt.address, streams, seconds))
        cpu, wall = stt.cpu_seconds() - cpu0, time.monotonic() - t0
        print(
            f"  StreamingRecognize:  {frames / wall:8.0f} frames/s (20 ms, 640 B) using {cpu / wall:.2f} cores"
            f" -> {frames / cpu:8.0f} frames per CPU-second of stt_svc = {frames / cpu / 50:.0f} real-time calls per core"
        )
    with procs.start("tts", "tts_svc", env) as tts:
        cpu0 = tts.cpu_seconds()
        t0 = time.monotonic()
        messages, audio_ms = uvloop.run(_tts_load(tts.address, streams, seconds))
        cpu, wall = tts.cpu_seconds() - cpu0, time.monotonic() - t0
        frames = audio_ms / 20
        print(
            f"  StreamingSynthesize: {frames / wall:8.0f} frames/s of audio in {messages / wall:.0f} messages/s using"
            f" {cpu / wall:.2f} cores -> {frames / cpu:8.0f} frames per CPU-second of tts_svc"
            f" ({messages / cpu:.0f} messages per CPU-second)"
        )


async def _stt_real(address: str, speech: bytes, tail_ms: int = 1500) -> tuple[float, float]:
    """Stream real-time; return (final latency after speech end in s, wall time)."""
    async with grpc.aio.insecure_channel(address) as ch:
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=STT_MD)
        cfg = stt_pb2.RecognitionConfig(audio_format=F16, interim_results=True, endpointing_ms=400)
        await call.write(stt_pb2.StreamingRecognizeRequest(config=cfg))
        audio = speech + b"\x00\x00" * (16 * tail_ms)
        speech_end: float | None = None
        final_at: list[float] = []

        async def read() -> None:
            async for r in call:
                if r.WhichOneof("event") == "final":
                    final_at.append(time.monotonic())

        reader = asyncio.get_running_loop().create_task(read())
        t0 = time.monotonic()
        for i in range(0, len(audio), 640):
            await asyncio.sleep(max(0.0, t0 + i / 32000 - time.monotonic()))
            await call.write(stt_pb2.StreamingRecognizeRequest(audio=audio[i : i + 640]))
            if speech_end is None and i + 640 >= len(speech):
                speech_end = time.monotonic()
        await call.done_writing()
        await reader
        assert speech_end is not None and final_at, "no final result"
        return final_at[0] - speech_end, time.monotonic() - t0


async def _tts_real(address: str, text: str) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=TTS_MD)
        await call.write(tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(audio_format=F16)))
        t0 = time.monotonic()
        for word in text.split(" "):
            await call.write(tts_pb2.StreamingSynthesizeRequest(text=word + " "))
        await call.done_writing()
        first = None
        audio_ms = 0
        async for r in call:
            if r.WhichOneof("event") == "audio":
                first = first or time.monotonic()
                audio_ms += r.audio.duration_ms
        wall = time.monotonic() - t0
        return (first or t0) - t0, wall / (audio_ms / 1000)


def real_engines() -> None:
    from stt_svc.app import Settings, make_engine
    from stt_svc.providers.base import RecognitionOptions
    from tests.audio_helpers import synthesize_pcm

    print("\n== Local engines (faster-whisper tiny.en int8 + Silero VAD; Piper en_US-joe-medium)")
    sentences = [
        "Hi, I would like to book a cleaning for next Tuesday morning.",
        "What are your opening hours on Saturday?",
        "My phone number is five five five, one two three four.",
    ]
    speech = [synthesize_pcm(s, 16000) for s in sentences]
    engine = make_engine(Settings())
    engine.warm_up()  # type: ignore[attr-defined]
    rtf = []
    for pcm in speech:
        t0 = time.perf_counter()
        engine.transcribe(pcm, RecognitionOptions(), True)  # type: ignore[attr-defined]
        rtf.append((time.perf_counter() - t0) / (len(pcm) / 32000))
    print(
        f"  STT real-time factor (one utterance, word timings): {statistics.mean(rtf):.3f} (mean of {len(rtf)}; {len(speech[0]) / 32000:.1f}-{len(speech[-1]) / 32000:.1f} s utterances)"
    )
    with procs.start("stt", "stt_svc", {}) as stt:
        lat = [uvloop.run(_stt_real(stt.address, pcm))[0] for pcm in speech]
    print(
        f"  STT final after speech end (real-time stream, endpointing 400 ms): median {statistics.median(lat) * 1000:.0f} ms,"
        f" max {max(lat) * 1000:.0f} ms"
    )
    with procs.start("tts", "tts_svc", {}) as tts:
        runs = [uvloop.run(_tts_real(tts.address, " ".join(sentences))) for _ in range(3)]
    ttfa = [r[0] for r in runs]
    print(
        f"  TTS time to first audio (text streamed word by word): median {statistics.median(ttfa) * 1000:.0f} ms;"
        f" real-time factor {statistics.mean(r[1] for r in runs):.3f}"
    )


def main() -> None:
    overhead()
    real_engines()


if __name__ == "__main__":
    main()
