"""tts_svc on Deepgram Aura-2: the real deepgram-sdk client against the speak-websocket double,
through the real gRPC servicer on loopback, with a text-coded local engine as the fallback so the
whole reply can be read back from its audio (``heard``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest
from prometheus_client import REGISTRY

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.providers import EnvKeySource
from tests.conftest import running
from tests.conftest import tts_md as md
from tests.doubles.deepgram_speak import DeepgramSpeakDouble, Fault, heard_text, text_audio
from tts_svc.app import Settings, build_host
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers.base import SynthesisOptions, Synthesizer
from tts_svc.providers.cloud import Deadlines
from tts_svc.providers.deepgram_aura import DeepgramAura

R = tts_pb2.StreamingSynthesizeRequest
RATE = 16000
PIECES = ["The first sentence is here.", "The second one follows it.", "And a third sentence ends it."]
REPLY = " ".join(PIECES)
FAST = Deadlines(connect_s=1.0, first_audio_s=0.5, idle_s=0.5, close_s=0.3)
KEYS = {"DEEPGRAM_API_KEY": "dg-shared", "DEEPGRAM_API_KEY__TENANT_TEST": "dg-own"}


class TextCodedLocal:
    """The "local" link for these tests: speaks the double's text-coded audio, instantly."""

    name = "text-coded"
    sample_rate = RATE
    voices = ("local",)

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        self.texts.append(text)
        return text_audio(text, RATE)


@dataclass
class Reply:
    """What a client received: audio chunks (with their text tags), then a status."""

    chunks: list[tts_pb2.AudioChunk] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""

    @property
    def heard(self) -> str:
        return heard_text(b"".join(c.audio for c in self.chunks), RATE)

    @property
    def tags(self) -> list[str]:
        return [c.text for c in self.chunks if c.text]

    @property
    def segments(self) -> list[tuple[str, str]]:
        """(tag, what its audio says) per piece as sent: a tagged chunk starts a segment."""
        parts: list[tuple[str, bytes]] = []
        for c in self.chunks:
            if c.text or not parts:
                parts.append((c.text, b""))
            parts[-1] = (parts[-1][0], parts[-1][1] + c.audio)
        return [(tag, heard_text(pcm, RATE)) for tag, pcm in parts]


def deepgram(double: DeepgramSpeakDouble, environ: Mapping[str, str] = KEYS, **kw: object) -> DeepgramAura:
    return DeepgramAura(base_url=double.url, deadlines=FAST, keys=EnvKeySource(environ), **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(
    providers: dict[str, Synthesizer], default: tuple[str, ...] = ("local",)
) -> AsyncIterator[str]:
    async with running(build_host(Settings(), ChainSynthesizer(providers, default))) as addr:
        yield addr


async def speak(addr: str, text: str = REPLY, tenant: str = "tenant-test", **cfg: object) -> Reply:
    reply = Reply()
    async with grpc.aio.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md(tenant=tenant))
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE, channels=1
        )
        await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt, **cfg)))  # type: ignore[arg-type]
        await call.write(R(text=text))
        await call.done_writing()
        try:
            async for r in call:
                if r.WhichOneof("event") == "audio":
                    reply.chunks.append(r.audio)
        except grpc.aio.AioRpcError as e:
            reply.code, reply.details = e.code(), e.details() or ""
    return reply


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - counters in the doubles and the limiter
            await asyncio.sleep(0.005)


def fallbacks(failed: str, to: str, kind: str) -> float:
    labels = {"service": "tts", "from_provider": failed, "to_provider": to, "reason": kind}
    return REGISTRY.get_sample_value("voiceai_provider_fallbacks_total", labels) or 0.0


def piece_bytes(n: int) -> int:
    return sum(len(text_audio(p, RATE)) for p in PIECES[:n])


# ---------------------------------------------------------------------------- happy path


async def test_reply_is_spoken_over_one_websocket_with_the_agents_voice_and_tenant_key() -> None:
    async with DeepgramSpeakDouble() as dg:
        provider = deepgram(dg)
        async with serving({"local": TextCodedLocal(), "deepgram": provider}) as addr:
            reply = await speak(addr, providers=["deepgram", "local"], voice="luna")
            again = await speak(addr, "And the next turn.", providers=["deepgram"], voice="luna")
        await provider.aclose()
        await until(lambda: dg.open == 0)  # the double has read everything
    assert reply.code == grpc.StatusCode.OK
    assert reply.heard == "".join(PIECES) and reply.tags == PIECES
    assert again.heard == "And the next turn."
    # One socket for both streams (the second took it from the idle pool): a Speak and a Flush
    # per piece, and a Close when the provider shut down.
    [conn] = dg.connections
    assert conn.messages == ["Speak", "Flush"] * 4 + ["Close"]
    assert conn.texts == [*PIECES, "And the next turn."]
    assert conn.model == "aura-2-luna-en" and conn.key == "dg-own"  # the tenant's own key
    assert conn.query["encoding"] == "linear16" and conn.query["sample_rate"] == "16000"


async def test_an_idle_socket_gives_its_slot_to_a_stream_that_needs_another() -> None:
    async with DeepgramSpeakDouble() as dg:
        provider = deepgram(dg, capacity=1)
        async with serving({"local": TextCodedLocal(), "deepgram": provider}) as addr:
            luna = await speak(addr, "Luna speaks.", providers=["deepgram"], voice="luna")
            zeus = await speak(addr, "Zeus speaks.", providers=["deepgram"], voice="zeus")
        await provider.aclose()
        await until(lambda: dg.open == 0)
    assert (luna.heard, zeus.heard) == ("Luna speaks.", "Zeus speaks.")
    assert [c.model for c in dg.connections] == ["aura-2-luna-en", "aura-2-zeus-en"]
    assert dg.connections[0].messages[-1] == "Close" and dg.peak_open == 1


async def test_an_idle_socket_expires() -> None:
    async with DeepgramSpeakDouble() as dg:
        provider = deepgram(dg, idle_s=0.05)
        async with serving({"local": TextCodedLocal(), "deepgram": provider}) as addr:
            await speak(addr, "Once.", providers=["deepgram"])
            await asyncio.sleep(0.1)
            reply = await speak(addr, "Twice.", providers=["deepgram"])
        await provider.aclose()
        await until(lambda: dg.open == 0)
    assert reply.heard == "Twice." and len(dg.connections) == 2
    assert dg.connections[0].messages == ["Speak", "Flush", "Close"]


async def test_other_tenants_use_the_deployment_key() -> None:
    async with (
        DeepgramSpeakDouble() as dg,
        serving({"local": TextCodedLocal(), "deepgram": deepgram(dg)}) as addr,
    ):
        reply = await speak(addr, tenant="tenant-other", providers=["deepgram"])
    assert reply.heard == "".join(PIECES)
    assert dg.connections[0].key == "dg-shared" and dg.connections[0].model == "aura-2-thalia-en"


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault(status=429, retry_after="2"), "rate_limited"),
        (Fault(status=503), "server_error"),
        (Fault(first_audio_delay_s=2.0), "timeout"),
    ],
    ids=["429", "503", "slow-first-byte"],
)
async def test_failure_before_first_audio_falls_back_with_every_word(fault: Fault, kind: str) -> None:
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg, serving({"local": local, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(fault)
        before = fallbacks("deepgram", "local", kind)
        reply = await speak(addr, providers=["deepgram", "local"])
    assert reply.code == grpc.StatusCode.OK
    assert reply.heard == "".join(PIECES) and reply.tags == PIECES  # each piece once, in order
    assert local.texts == PIECES  # the stream stays on the fallback for its later pieces
    assert fallbacks("deepgram", "local", kind) == before + 1


async def test_disconnect_between_pieces_reconnects_to_deepgram() -> None:
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg, serving({"local": local, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(Fault(drop_after_bytes=piece_bytes(1)))  # drops as piece 2 starts
        reply = await speak(addr, providers=["deepgram", "local"])
    assert reply.heard == "".join(PIECES) and reply.tags == PIECES
    assert [c.texts for c in dg.connections] == [PIECES[:2], PIECES[1:]] and not local.texts


@pytest.mark.parametrize("code", [0, 1011], ids=["tcp-reset", "close-1011"])
async def test_disconnect_mid_piece_restarts_that_piece_on_the_next_provider(code: int) -> None:
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg, serving({"local": local, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(Fault(drop_after_bytes=piece_bytes(1) + 3200, drop_code=code))
        before = fallbacks("deepgram", "local", "disconnect")
        reply = await speak(addr, providers=["deepgram", "local"])
    assert reply.code == grpc.StatusCode.OK
    # Piece 2 was cut after 3200 bytes (100 ms = 10 characters): the fallback restarts it, so
    # every piece is heard whole, once, in order, after the cut-off start of piece 2.
    assert reply.segments == [
        (PIECES[0], PIECES[0]),
        (PIECES[1], PIECES[1][:10]),
        (PIECES[1], PIECES[1]),
        (PIECES[2], PIECES[2]),
    ]
    assert local.texts == PIECES[1:]
    assert fallbacks("deepgram", "local", "disconnect") == before + 1


async def test_silence_mid_piece_hits_the_inactivity_deadline_and_restarts_the_piece() -> None:
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg, serving({"local": local, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(Fault(stall_after_bytes=piece_bytes(1) + 3200))
        before = fallbacks("deepgram", "local", "timeout")
        reply = await speak(addr, providers=["deepgram", "local"])
    assert reply.code == grpc.StatusCode.OK
    assert reply.segments[2:] == [(PIECES[1], PIECES[1]), (PIECES[2], PIECES[2])]
    assert reply.segments[1] == (PIECES[1], PIECES[1][:10])
    assert fallbacks("deepgram", "local", "timeout") == before + 1


async def test_every_provider_failing_ends_with_unavailable_naming_them() -> None:
    async with (
        DeepgramSpeakDouble() as dg,
        serving({"local": TextCodedLocal(), "deepgram": deepgram(dg)}) as addr,
    ):
        dg.faults.append(Fault(status=502))
        reply = await speak(addr, providers=["deepgram"])
    assert reply.code == grpc.StatusCode.UNAVAILABLE and not reply.chunks
    assert "deepgram: server_error" in reply.details


# ---------------------------------------------------------------------------- caps


async def test_over_cap_goes_to_the_next_provider_or_resource_exhausted() -> None:
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg:
        provider = deepgram(dg, capacity=1)
        async with (
            serving({"local": local, "deepgram": provider}) as addr,
            grpc.aio.insecure_channel(addr) as ch,
        ):
            # A stream holds its websocket, and so the only slot, from its first piece to its end.
            holder = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
            fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE)
            await holder.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt, providers=["deepgram"])))
            await holder.write(R(text="Hold the line please."))
            await holder.write(R(flush=tts_pb2.Flush()))
            while (await holder.read()).WhichOneof("event") != "flush_done":
                pass
            spilled = await speak(addr, providers=["deepgram", "local"])
            refused = await speak(addr, providers=["deepgram"])
            await holder.done_writing()  # speaks nothing more: one last FlushDone, then the end
            assert (await holder.read()).WhichOneof("event") == "flush_done"
            assert await holder.read() == grpc.aio.EOF
    assert spilled.heard == "".join(PIECES) and local.texts == PIECES
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrency cap" in refused.details
    assert dg.peak_open == 1 and len(dg.connections) == 1


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("cfg", "code", "needle"),
    [
        ({"providers": ["acme"]}, grpc.StatusCode.INVALID_ARGUMENT, "config.providers"),
        ({"providers": ["elevenlabs"]}, grpc.StatusCode.FAILED_PRECONDITION, "API key"),
        ({"providers": ["deepgram"], "voice": "Not A Voice"}, grpc.StatusCode.INVALID_ARGUMENT, "voice"),
        ({"providers": ["deepgram"], "model": "eleven_v3"}, grpc.StatusCode.INVALID_ARGUMENT, "config.model"),
    ],
    ids=["unknown-provider", "unconfigured-provider", "bad-voice", "bad-model"],
)
async def test_bad_config_is_refused_naming_the_field(
    cfg: dict[str, object], code: grpc.StatusCode, needle: str
) -> None:
    async with (
        DeepgramSpeakDouble() as dg,
        serving({"local": TextCodedLocal(), "deepgram": deepgram(dg)}) as addr,
    ):
        reply = await speak(addr, **cfg)
    assert reply.code == code and needle in reply.details, reply.details
    assert not dg.connections


async def test_a_tenant_without_a_key_cannot_use_deepgram() -> None:
    provider = DeepgramAura(deadlines=FAST, keys=EnvKeySource({"DEEPGRAM_API_KEY__TENANT_OTHER": "x"}))
    async with serving({"local": TextCodedLocal(), "deepgram": provider}) as addr:
        reply = await speak(addr, providers=["deepgram"])
    assert reply.code == grpc.StatusCode.FAILED_PRECONDITION and "DEEPGRAM" not in reply.details
    assert "set the provider's API key" in reply.details


@pytest.mark.slow
async def test_the_real_piper_voice_takes_over_after_a_refusal() -> None:
    from tts_svc.providers.piper_local import PiperSynthesizer

    piper = PiperSynthesizer(threads=1)
    async with DeepgramSpeakDouble() as dg, serving({"local": piper, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(Fault(status=429, retry_after="5"))
        reply = await speak(addr, providers=["deepgram", "local"], voice="luna")
    assert reply.code == grpc.StatusCode.OK and reply.tags == PIECES  # Piper's own voice, every piece
    # Piper's 22.05 kHz audio reaches the client at its 16 kHz: about a second per sentence.
    assert all(sum(c.duration_ms for c in reply.chunks if c.text == p) > 800 for p in PIECES)


async def test_each_piece_is_tagged_with_the_provider_that_spoke_it() -> None:
    """Usage by provider (issue 17): a restarted piece is tagged with both providers, in order,
    so its characters count for each provider that received them."""
    local = TextCodedLocal()
    async with DeepgramSpeakDouble() as dg, serving({"local": local, "deepgram": deepgram(dg)}) as addr:
        dg.faults.append(Fault(drop_after_bytes=piece_bytes(1) + 3200, drop_code=1011))
        reply = await speak(addr, providers=["deepgram", "local"], model="aura-2")
    tagged = [(c.text, c.provider, c.model) for c in reply.chunks if c.text]
    assert tagged == [
        (PIECES[0], "deepgram", "aura-2"),
        (PIECES[1], "deepgram", "aura-2"),
        (PIECES[1], "local", ""),  # a fallback link uses its own default model
        (PIECES[2], "local", ""),
    ]
    assert all(not c.provider for c in reply.chunks if not c.text)
