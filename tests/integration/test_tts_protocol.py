"""tts_svc's stream protocol over real loopback gRPC, with a tone engine (fast, exact).

The engine's audio is deterministic (60 ms of a 220 Hz tone per character at 22050 Hz, Piper's
rate), so sizes, formats and ordering can be checked exactly; tests/integration/test_tts_service.py
does the same things with the real Piper voice.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import numpy as np
import pytest

from common.audio import mulaw_to_pcm16
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from tests.conftest import running
from tests.conftest import tts_md as md
from tts_svc.app import Settings, build_host
from tts_svc.providers.base import SynthesisOptions

R = tts_pb2.StreamingSynthesizeRequest
LINEAR16 = audio_pb2.AUDIO_ENCODING_LINEAR16
MULAW = audio_pb2.AUDIO_ENCODING_MULAW
RATE = 22050
MS_PER_CHAR = 60
_TONE = (3000 * np.sin(2 * np.pi * 220 * np.arange(RATE * 20) / RATE)).astype(np.int16).tobytes()


class ToneEngine:
    """A Synthesizer whose audio is a tone as long as the text; can hold or fail pieces."""

    name = "tone"
    sample_rate = RATE
    voices = ("tone",)
    language = "en-US"

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None  # pieces wait for it when set
        self.fail_on = ""
        self.started: list[str] = []
        self.cancelled = 0

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        self.started.append(text)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("model crashed on: " + text)
        return _TONE[: RATE * MS_PER_CHAR * len(text) // 1000 * 2]


def config(enc: int = LINEAR16, rate: int = 16000, **kw: object) -> R:
    fmt = audio_pb2.AudioFormat(encoding=enc, sample_rate_hertz=rate, channels=1)
    return R(config=tts_pb2.SynthesisConfig(audio_format=fmt, **kw))  # type: ignore[arg-type]


def events(responses: list[tts_pb2.StreamingSynthesizeResponse]) -> list[tuple[str, str | int]]:
    """("audio", text) for text-tagged chunks, ("flush_done", characters); continuations skipped."""
    out: list[tuple[str, str | int]] = []
    for r in responses:
        if r.WhichOneof("event") == "flush_done":
            out.append(("flush_done", r.flush_done.characters))
        elif r.audio.text:
            out.append(("audio", r.audio.text))
    return out


async def read_all(call: grpc.aio.StreamStreamCall) -> list[tts_pb2.StreamingSynthesizeResponse]:
    responses = []
    while (r := await call.read()) != grpc.aio.EOF:
        responses.append(r)
    return responses


@pytest.mark.parametrize(
    ("enc", "rate"), [(LINEAR16, 16000), (LINEAR16, 24000), (LINEAR16, 48000), (MULAW, 8000)]
)
async def test_audio_length_and_format_match_the_text(enc: int, rate: int) -> None:
    text = "Thanks for calling. How can I help you today?"
    async with running(build_host(Settings(), ToneEngine())) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(config(enc, rate))
        await call.write(R(text=text))
        await call.done_writing()
        responses = await read_all(call)
    chunks = [r.audio for r in responses if r.WhichOneof("event") == "audio"]
    audio = b"".join(c.audio for c in chunks)
    bps = 2 if enc == LINEAR16 else 1
    seconds = len(audio) / bps / rate
    spoken = len("Thanks for calling.") + len("How can I help you today?")
    assert abs(seconds - spoken * MS_PER_CHAR / 1000) < 0.002
    assert abs(sum(c.duration_ms for c in chunks) - seconds * 1000) <= len(chunks)
    assert all(len(c.audio) <= rate * bps for c in chunks)  # at most 1 s per message
    assert events(responses) == [
        ("audio", "Thanks for calling."),
        ("audio", "How can I help you today?"),
        ("flush_done", len(text)),
    ]
    pcm = np.frombuffer(mulaw_to_pcm16(audio) if enc == MULAW else audio, dtype=np.int16)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    assert abs(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))] - 220) < 2  # the tone


async def test_flushes_answer_in_order_after_their_audio() -> None:
    async with running(build_host(Settings(), ToneEngine())) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(config())
        await call.write(R(flush=tts_pb2.Flush()))  # nothing to say: answered at once
        assert (await call.read()).flush_done.characters == 0
        for token in ["Sure", ", I", " can", " do", " that", "", " for you"]:  # "" is fine
            await call.write(R(text=token))
        await call.write(R(flush=tts_pb2.Flush()))
        await call.write(R(text="Anything else?"))
        await call.write(R(flush=tts_pb2.Flush()))
        await call.write(R(flush=tts_pb2.Flush()))
        await call.done_writing()
        responses = await read_all(call)
    first = len("Sure, I can do that for you")
    assert events(responses) == [
        ("audio", "Sure,"),
        ("audio", "I can do that for you"),
        ("flush_done", first),
        ("audio", "Anything else?"),
        ("flush_done", first + len("Anything else?")),
        ("flush_done", first + len("Anything else?")),
        ("flush_done", first + len("Anything else?")),  # half-close flushes too
    ]


async def test_text_far_ahead_of_the_audio_is_refused() -> None:
    """Text waiting for synthesis is bounded: over the limit, the stream ends RESOURCE_EXHAUSTED."""
    engine = ToneEngine()
    engine.gate = asyncio.Event()  # the first piece never finishes while the text piles up
    sentence = "This sentence is about sixty characters long, give or take. "
    async with running(build_host(Settings(tts_max_pending_chars=2048), engine)) as addr:
        async with grpc.aio.insecure_channel(addr) as ch:
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            await call.write(config())
            # Stop writing once over the limit: grpc.aio reports a write that fails because the
            # server has ended the call as INTERNAL, hiding the server's status (grpc/grpc#36066).
            for _ in range(3):
                await call.write(R(text=sentence * 16))  # 960 characters
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over 2048 characters are waiting" in (info.value.details() or "")
    assert len(engine.started) == 1 and engine.cancelled == 1  # refused, not waited out


async def test_cancel_leaves_no_tasks_and_stops_synthesis() -> None:
    engine = ToneEngine()
    engine.gate = asyncio.Event()

    def live() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith("tts")}

    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        await call.write(config())
        await call.write(R(text="One. Two. Three. "))
        for _ in range(100):
            if engine.started:
                break
            await asyncio.sleep(0.01)
        assert live() == {"tts-read", "tts-synthesis"}
        call.cancel()
        for _ in range(100):
            if not live():
                break
            await asyncio.sleep(0.01)
        assert live() == set()
        engine.gate.set()
        await asyncio.sleep(0.05)
    assert engine.started == ["One."] and engine.cancelled == 1


async def test_an_engine_failure_ends_that_stream_only_without_leaking_its_text() -> None:
    engine = ToneEngine()
    engine.fail_on = "explode"
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = tts_pb2_grpc.TextToSpeechServiceStub(ch)
        good = stub.StreamingSynthesize(metadata=md("good"))
        await good.write(config())
        await good.write(R(text="Still fine. "))
        assert (await good.read()).audio.text == "Still fine."
        bad = stub.StreamingSynthesize(metadata=md("bad"))
        await bad.write(config())
        await bad.write(R(text="Hello. Please explode now. Never said."))
        assert (await bad.read()).audio.text == "Hello."
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await bad.read()
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert info.value.details() == "speech synthesis failed (RuntimeError)"  # no tenant text
        await good.write(R(text="Done."))
        await good.done_writing()
        texts = [r.audio.text for r in await read_all(good)]
        assert [t for t in texts if t] == ["Done."]
        assert "Never said." not in engine.started


BAD: list[tuple[str, list[R], str]] = [
    ("text first", [R(text="hi")], "first message must be 'config'"),
    ("nothing first", [R()], "first message must be 'config'"),
    ("unsupported rate", [config(rate=44100)], "44100"),
    ("mulaw at 16 kHz", [config(MULAW, 16000)], "use one of: 8000"),
    ("no encoding", [config(0)], "use one of: LINEAR16, MULAW, ALAW"),
    ("unknown voice", [config(voice="nobody")], "use one of: tone"),
    ("other language", [config(language_code="de-DE")], "use en-US"),
    ("too fast", [config(speaking_rate=3.0)], "0.5..2.0"),
    ("long text", [config(), R(text="x" * 5000)], "4096-byte limit"),
    ("long multibyte text", [config(), R(text="é" * 2100)], "4200 bytes"),  # 2,100 chars, 4,200 bytes
    ("second config", [config(), config()], "only be sent once"),
    ("empty request", [config(), R()], "set one of text or flush"),
]


@pytest.mark.parametrize(("name", "requests", "fragment"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_invalid_argument_saying_what_to_fix(
    name: str, requests: list[R], fragment: str
) -> None:
    async with running(build_host(Settings(), ToneEngine())) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
        for r in requests:
            await call.write(r)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read_all(call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in (info.value.details() or ""), info.value.details()


async def test_english_variants_are_accepted_by_an_english_voice() -> None:
    async with running(build_host(Settings(), ToneEngine())) as addr, grpc.aio.insecure_channel(addr) as ch:
        for language in ("en", "en-GB", "EN_us"):
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            await call.write(config(language_code=language, voice="tone"))
            await call.write(R(text="Hello."))
            await call.done_writing()
            assert events(await read_all(call)) == [("audio", "Hello."), ("flush_done", 6)]


async def write_on(call: grpc.aio.StreamStreamCall, requests: list[R], pace_s: float = 0.0) -> None:
    """Write like a busy client that does not watch for the end of the call."""
    try:
        for r in requests:
            await call.write(r)
            if pace_s:
                await asyncio.sleep(pace_s)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call has ended; its status is read separately


@pytest.mark.parametrize(
    ("opening", "pace_s"),
    [
        ([config(voice="nobody")], 0.0),  # refused config, then tokens back to back
        ([config(), R(text="x" * 5000)], 0.0),  # refused message mid-stream
        ([config(), R(text="x" * 5000)], 0.02),  # ...while writing every 20 ms, like live audio
    ],
)
async def test_a_client_still_writing_sees_the_intended_status(opening: list[R], pace_s: float) -> None:
    """Without the server's settle, ~95% of these end as INTERNAL on the client (grpc/grpc#36066)."""
    async with running(build_host(Settings(), ToneEngine())) as addr, grpc.aio.insecure_channel(addr) as ch:
        for _ in range(5):
            call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            await write_on(call, [*opening, *[R(text="word ") for _ in range(50)]], pace_s)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read_all(call)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
