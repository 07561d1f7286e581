"""tts_svc over real loopback gRPC with the real Piper voice (en_US-joe-medium)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import grpc.aio
import numpy as np
import pytest

from common.audio import mulaw_to_pcm16
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from tests.audio_helpers import synthesize_pcm
from tests.conftest import running
from tests.conftest import tts_md as md
from tts_svc.app import Settings, build_host
from tts_svc.providers.piper_local import PiperSynthesizer

pytestmark = pytest.mark.slow

R = tts_pb2.StreamingSynthesizeRequest
LINEAR16 = audio_pb2.AUDIO_ENCODING_LINEAR16
MULAW = audio_pb2.AUDIO_ENCODING_MULAW
ALAW = audio_pb2.AUDIO_ENCODING_ALAW


def fmt(enc: int = LINEAR16, rate: int = 16000, channels: int = 1) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=enc, sample_rate_hertz=rate, channels=channels)


def config(enc: int = LINEAR16, rate: int = 16000, **kw: object) -> R:
    return R(config=tts_pb2.SynthesisConfig(audio_format=fmt(enc, rate), **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    engine = PiperSynthesizer()
    engine.warm_up()
    return engine


async def speak(addr: str, text: str, cfg: R) -> list[tts_pb2.AudioChunk]:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(cfg)
        await call.write(R(text=text))
        await call.done_writing()
        return [r.audio async for r in call if r.WhichOneof("event") == "audio"]


def spectrum_profile(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Long-term average spectrum in 40 bands up to 3.6 kHz (dB): a voice's fingerprint."""
    frames = pcm[: len(pcm) // 256 * 256].astype(np.float64).reshape(-1, 256)
    power = (np.abs(np.fft.rfft(frames * np.hanning(256), axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(256, 1 / rate)
    edges = np.linspace(100, 3600, 41)
    bands = [power[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return 10 * np.log10(np.asarray(bands) + 1e-9)


async def test_first_sentence_is_spoken_before_the_rest_arrives(piper: PiperSynthesizer) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(config())
        for token in ["Hello", " there", ".", " I", " am", " still"]:
            await call.write(R(text=token))
        first = await asyncio.wait_for(call.read(), 10)  # no flush yet: the sentence has ended
        assert first.audio.text == "Hello there." and len(first.audio.audio) > 16000  # > 0.5 s
        assert abs(first.audio.duration_ms - len(first.audio.audio) / 32) <= 1
        await call.write(R(text=" thinking about it"))
        await call.write(R(flush=tts_pb2.Flush()))
        rest = []
        while (r := await call.read()).WhichOneof("event") == "audio":
            rest.append(r.audio)
        assert [c.text for c in rest if c.text] == ["I am still thinking about it"]
        assert rest[0].text  # the piece's first chunk carries its text; continuations do not
        assert r.flush_done.characters == len("Hello there. I am still thinking about it")
        await call.done_writing()
        last = await call.read()
        assert last.WhichOneof("event") == "flush_done"  # half-close flushes (nothing was left)
        assert await call.read() == grpc.aio.EOF


@pytest.mark.parametrize(("enc", "rate"), [(LINEAR16, 16000), (LINEAR16, 24000), (LINEAR16, 48000)])
async def test_linear16_rates_carry_the_durations_they_claim(
    piper: PiperSynthesizer, enc: int, rate: int
) -> None:
    async with running(build_host(Settings(), piper)) as addr:
        chunks = await speak(
            addr, "Thanks for calling. This is a slightly longer second sentence.", config(enc, rate)
        )
    audio = b"".join(c.audio for c in chunks)
    assert all(len(c.audio) <= rate * 2 and len(c.audio) % 2 == 0 for c in chunks)  # <= 1 s each
    assert [c.text for c in chunks if c.text] == [
        "Thanks for calling.",
        "This is a slightly longer second sentence.",
    ]
    assert abs(sum(c.duration_ms for c in chunks) - len(audio) / 2 / rate * 1000) <= len(chunks)
    pcm = np.frombuffer(audio, dtype=np.int16)
    assert 2.5 < len(pcm) / rate < 7  # seconds of speech for ~60 characters
    # The spectrum reaches past 4 kHz at these rates: really resampled speech, not upsampled 8 kHz.
    power = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    assert power[(freqs > 4500) & (freqs < 7500)].sum() > 1e-4 * power.sum()


async def test_telephone_mulaw_decodes_to_the_voice(piper: PiperSynthesizer) -> None:
    text = "I would like to book an appointment for next week, please."
    async with running(build_host(Settings(), piper)) as addr:
        chunks = await speak(addr, text, config(MULAW, 8000))
    audio = b"".join(c.audio for c in chunks)
    assert all(len(c.audio) <= 8000 for c in chunks)
    pcm = np.frombuffer(mulaw_to_pcm16(audio), dtype=np.int16)
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert 2.5 < len(pcm) / 8000 < 7 and 500 < rms < 12000
    assert np.mean(np.abs(pcm) > 32000) < 0.001  # not clipped
    # Same voice, same words, through Piper directly: the spectra agree within a few dB per band
    # (measured ~3.5 dB on average; decoding these bytes as A-law instead gives ~15 dB).
    reference = np.frombuffer(synthesize_pcm(text, 8000), dtype=np.int16)
    profile, expected = spectrum_profile(pcm, 8000), spectrum_profile(reference, 8000)
    assert np.corrcoef(profile, expected)[0, 1] > 0.85
    assert np.mean(np.abs(profile - expected)) < 7


async def test_speaking_rate_changes_the_pace(piper: PiperSynthesizer) -> None:
    text = "We are open from nine in the morning until five in the afternoon."
    async with running(build_host(Settings(), piper)) as addr:
        slow = await speak(addr, text, config(speaking_rate=0.5))
        fast = await speak(addr, text, config(speaking_rate=2.0))
    slow_s, fast_s = (sum(len(c.audio) for c in chunks) / 32000 for chunks in (slow, fast))
    assert 2.5 < slow_s / fast_s < 6  # ideally 4; pauses do not all scale


BAD: list[tuple[str, list[R], grpc.StatusCode, str]] = [
    ("text first", [R(text="hi")], grpc.StatusCode.INVALID_ARGUMENT, "first message must be 'config'"),
    ("unsupported rate", [config(rate=44100)], grpc.StatusCode.INVALID_ARGUMENT, "44100"),
    ("mulaw at 16 kHz", [config(MULAW, 16000)], grpc.StatusCode.INVALID_ARGUMENT, "use one of: 8000"),
    ("alaw at 48 kHz", [config(ALAW, 48000)], grpc.StatusCode.INVALID_ARGUMENT, "use one of: 8000"),
    ("no encoding", [config(0)], grpc.StatusCode.INVALID_ARGUMENT, "use one of: LINEAR16, MULAW, ALAW"),
    (
        "stereo",
        [R(config=tts_pb2.SynthesisConfig(audio_format=fmt(channels=2)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "mono",
    ),
    ("unknown voice", [config(voice="nobody")], grpc.StatusCode.INVALID_ARGUMENT, "en_US-joe-medium, joe"),
    ("other language", [config(language_code="de-DE")], grpc.StatusCode.INVALID_ARGUMENT, "use en-US"),
    ("too fast", [config(speaking_rate=3.0)], grpc.StatusCode.INVALID_ARGUMENT, "0.5..2.0"),
    ("long text", [config(), R(text="x" * 5000)], grpc.StatusCode.INVALID_ARGUMENT, "4096-byte limit"),
    (
        "long multibyte text",
        [config(), R(text="é" * 2100)],  # 2,100 characters, 4,200 bytes
        grpc.StatusCode.INVALID_ARGUMENT,
        "4200 bytes",
    ),
    ("second config", [config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "only be sent once"),
    ("empty request", [config(), R()], grpc.StatusCode.INVALID_ARGUMENT, "set one of text or flush"),
]


async def expect_error(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value


async def test_bad_input_while_a_good_stream_keeps_working(piper: PiperSynthesizer) -> None:
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = tts_pb2_grpc.TextToSpeechServiceStub(ch)
        good = stub.StreamingSynthesize(metadata=md("good"))
        await good.write(config())
        await good.write(R(text="First part. "))
        first = await good.read()
        assert first.audio.text == "First part."

        for name, requests, code, fragment in BAD:
            call = stub.StreamingSynthesize(metadata=md("bad"))
            try:
                for r in requests:
                    await call.write(r)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # refused already; the status is read below
            error = await expect_error(call)
            assert (error.code(), fragment in (error.details() or "")) == (code, True), (
                name,
                error.details(),
            )

        # Invalid UTF-8 in the text field cannot even be parsed as the request message.
        raw = ch.stream_stream(
            "/voiceai.tts.v1.TextToSpeechService/StreamingSynthesize",
            request_serializer=lambda b: b,
            response_deserializer=tts_pb2.StreamingSynthesizeResponse.FromString,
        )(metadata=md("raw"))
        await raw.write(config().SerializeToString())
        await raw.write(b"\x12\x02\xff\xfe")  # field 2 (text), 2 bytes that are not UTF-8
        error = await expect_error(raw)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must be valid UTF-8" in (error.details() or ""), error.details()

        # Refused when the call opens: nothing is written (a write could race the refusal).
        nameless = stub.StreamingSynthesize(metadata=(("x-call-id", "c"),))
        error = await expect_error(nameless)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "x-tenant-id" in (error.details() or "")

        await good.write(R(text="Second part."))
        await good.done_writing()
        rest = []
        while (r := await good.read()) != grpc.aio.EOF:
            rest.append(r)
    assert [r.audio.text for r in rest if r.WhichOneof("event") == "audio" and r.audio.text] == [
        "Second part."
    ]
    assert rest[-1].flush_done.characters == len("First part. Second part.")


async def test_streams_in_parallel_each_get_their_own_words_in_order(piper: PiperSynthesizer) -> None:
    replies = [
        ["One, two.", "Three four.", "Five six seven."],
        ["Alpha beta.", "Gamma, delta.", "Epsilon."],
        ["Red green.", "Blue.", "Yellow and purple."],
    ]

    async def one(addr: str, sentences: list[str]) -> list[str]:
        chunks = await speak(addr, " ".join(sentences), config(MULAW, 8000))
        return [c.text for c in chunks if c.text]

    async with running(build_host(Settings(), piper)) as addr:
        heard = await asyncio.gather(*(one(addr, s) for s in replies))
    assert heard == [
        ["One,", "two.", "Three four.", "Five six seven."],  # a reply's first clause goes alone
        ["Alpha beta.", "Gamma, delta.", "Epsilon."],
        ["Red green.", "Blue.", "Yellow and purple."],
    ]


async def test_synthesis_never_blocks_the_event_loop(
    piper: PiperSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop keeps ticking while pieces synthesize: its worst stall is far below one piece's time."""
    text = (
        "This is a rather long sentence that takes Piper a noticeable fraction of a second to"
        " synthesize, and the event loop must keep ticking all the while. " * 3
    )
    render = piper.render
    piece_s: list[float] = []

    def timed(text: str, length_scale: float, stop: threading.Event) -> bytes:
        t = time.perf_counter()
        try:
            return render(text, length_scale, stop)
        finally:
            piece_s.append(time.perf_counter() - t)

    monkeypatch.setattr(piper, "render", timed)
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lag = max(lag, time.perf_counter() - t - 0.005)

    async with running(build_host(Settings(), piper)) as addr:
        tick = asyncio.create_task(ticker(), name="test-ticker")
        chunks = await speak(addr, text, config(LINEAR16, 22050))
        stop.set()
        await tick
    assert sum(len(c.audio) for c in chunks) / 44100 > 15  # ~20 s of speech
    # Inline synthesis would stall the loop for a whole piece at least.
    assert lag < 0.5 * max(piece_s), (lag, piece_s)


async def test_cancel_stops_synthesis_and_leaves_no_tasks(
    piper: PiperSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs: list[str] = []
    render = piper.render

    def counting(text: str, length_scale: float, stop: threading.Event) -> bytes:
        jobs.append(text)
        return render(text, length_scale, stop)

    monkeypatch.setattr(piper, "render", counting)

    def live() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith("tts")}

    sentences = [f"This is sentence number {n} of a long reply that nobody will hear." for n in range(20)]
    async with running(build_host(Settings(), piper)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(config())
        await call.write(R(text=" ".join(sentences) + " "))
        first = await call.read()
        assert first.audio.text == sentences[0]
        assert live() == {"tts-read", "tts-synthesis"}
        call.cancel()
        for _ in range(100):
            if not live():
                break
            await asyncio.sleep(0.01)
        assert live() == set()
        started = len(jobs)
        assert started <= 3  # the one sent, the next, at most one more: never the whole reply
        await asyncio.sleep(1.0)  # long enough for several more sentences, had any been queued
        assert len(jobs) == started
        assert piper._pool._work_queue.qsize() == 0  # nothing left queued in the shared pool
