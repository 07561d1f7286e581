"""The TTS provider chain with scripted providers: remainder rules, voices, final errors, settings."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import pytest

from common.errors import EngineError, FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from common.gen.voiceai.tts.v1 import tts_pb2
from common.providers import ProviderBusy, ProviderError
from tts_svc.app import Settings, build_servicer, make_chain
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers.base import SynthesisOptions
from tts_svc.stream import AudioSegment, SynthesisStream


@dataclass
class Scripted:
    """A streaming provider whose n-th piece does what ``script[n]`` says (default: speaks).

    A piece's audio is two chunks, ``b"<text>|1"`` and ``b"<text>|2"``; a script entry is an
    exception to raise before any audio, or ``(1, exception)`` to raise after the first chunk.
    """

    name: str
    script: dict[int, object] = field(default_factory=dict)
    sample_rate: int = 16000
    voices: tuple[str, ...] = ("v",)
    pieces: list[str] = field(default_factory=list)
    options: list[SynthesisOptions] = field(default_factory=list)
    closed: int = 0

    def open_session(self, options: SynthesisOptions) -> Scripted:
        self.options.append(options)
        return self

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        step = self.script.get(len(self.pieces))
        self.pieces.append(text)
        if isinstance(step, Exception):
            raise step
        yield f"{text}|1".encode()
        if isinstance(step, tuple):
            raise step[1]
        yield f"{text}|2".encode()

    async def aclose(self) -> None:
        self.closed += 1

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        raise AssertionError("the chain streams")


def chain(*providers: Scripted) -> ChainSynthesizer:
    return ChainSynthesizer({p.name: p for p in providers}, [p.name for p in providers])


async def spoken(engine: ChainSynthesizer, pieces: list[str], **options: object) -> list[AudioSegment]:
    stream = SynthesisStream(engine, SynthesisOptions(**options))  # type: ignore[arg-type]
    try:
        for p in pieces:
            stream.push_text(p + " ")
        stream.flush()
        stream.end_input()
        return [e async for e in stream if isinstance(e, AudioSegment)]
    finally:
        await stream.aclose()


PIECES = ["One is first.", "Two is next.", "Three ends it."]
BOOM = ProviderError("boom", kind="server_error")


async def test_failure_before_audio_moves_the_piece_and_the_rest_to_the_next_link() -> None:
    a, b = Scripted("deepgram", {1: BOOM}), Scripted("local")
    events = await spoken(chain(a, b), PIECES)
    assert [e.pcm.decode() for e in events] == [f"{p}|{i}" for p in PIECES for i in (1, 2)]
    assert [e.text for e in events if e.text] == PIECES  # no restart: nothing of piece 2 was sent
    assert a.pieces == PIECES[:2] and b.pieces == PIECES[1:]  # the stream stays on the fallback
    assert a.closed == 1


async def test_failure_mid_piece_restarts_that_piece_only() -> None:
    a, b = Scripted("deepgram", {1: (1, BOOM)}), Scripted("local")
    events = await spoken(chain(a, b), PIECES)
    assert [e.pcm.decode() for e in events] == [
        *(f"{PIECES[0]}|1", f"{PIECES[0]}|2"),
        f"{PIECES[1]}|1",  # sent before the failure, never sent again
        *(f"{PIECES[1]}|1", f"{PIECES[1]}|2"),  # the restart, by the next link
        *(f"{PIECES[2]}|1", f"{PIECES[2]}|2"),
    ]
    assert [e.text for e in events if e.text] == [PIECES[0], PIECES[1], PIECES[1], PIECES[2]]


async def test_the_voice_and_model_belong_to_the_first_link() -> None:
    a, b = Scripted("deepgram", {0: BOOM}), Scripted("local")
    await spoken(chain(a, b), PIECES[:1], voice="v", model="aura-2", speaking_rate=1.5, language="en")
    assert (a.options[0].voice, a.options[0].model) == ("v", "aura-2")
    assert (b.options[0].voice, b.options[0].model) == ("", "")
    assert (b.options[0].speaking_rate, b.options[0].language) == (1.5, "en")


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (ProviderError("no", kind="server_error"), Unavailable),
        (ProviderBusy("full"), ResourceExhausted),
        (RuntimeError("engine bug"), EngineError),
    ],
    ids=["provider-error", "over-cap", "other"],
)
async def test_the_last_links_failure_ends_the_stream_clearly(
    error: Exception, raised: type[Exception]
) -> None:
    a, b = Scripted("deepgram", {0: BOOM}), Scripted("local", {0: error})
    with pytest.raises(raised) as info:
        await spoken(chain(a, b), PIECES[:1])
    if raised is Unavailable:
        assert "deepgram: server_error; local: server_error" in str(info.value)


async def test_an_error_that_forbids_fallback_is_final() -> None:
    a, b = (
        Scripted("deepgram", {0: ProviderError("bad request", kind="rejected", fallback=False)}),
        Scripted("local"),
    )
    with pytest.raises(ProviderError, match="bad request"):
        await spoken(chain(a, b), PIECES[:1])
    assert not b.pieces


def test_settings_build_the_providers_whose_keys_or_urls_are_set() -> None:
    local = Scripted("local")
    assert set(make_chain(Settings(), local, environ={}).providers) == {"local"}  # type: ignore[arg-type]
    env = {"DEEPGRAM_API_KEY__ACME": "k", "ELEVENLABS_API_KEY": "e"}
    assert set(make_chain(Settings(), local, environ=env).providers) == {"local", "deepgram", "elevenlabs"}  # type: ignore[arg-type]
    hosted = Settings(tts_deepgram_url="ws://deepgram.internal:8080")
    assert set(make_chain(hosted, local, environ={}).providers) == {"local", "deepgram"}  # type: ignore[arg-type]


def test_a_bad_default_chain_fails_at_start_naming_the_setting() -> None:
    local = Scripted("local")
    with pytest.raises(InvalidArgument, match="default provider chain"):
        build_servicer(Settings(tts_providers="local,acme"), local).options(tts_pb2.SynthesisConfig())  # type: ignore[arg-type]
    engine = make_chain(Settings(tts_providers="elevenlabs"), local, environ={})  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match="none of the tts providers elevenlabs"):
        build_servicer(Settings(), engine).options(tts_pb2.SynthesisConfig())


async def test_a_link_without_the_streams_voice_gets_its_configured_default() -> None:
    a, b = Scripted("deepgram", {0: BOOM}), Scripted("local")
    engine = ChainSynthesizer({"deepgram": a, "local": b}, ["deepgram", "local"], {"local": "joe"})
    await spoken(engine, PIECES[:1], voice="aura-2-luna-en")
    assert a.options[0].voice == "aura-2-luna-en" and b.options[0].voice == "joe"


def test_the_local_default_voice_is_checked_at_start_and_only_for_the_local_engine() -> None:
    local = Scripted("local", voices=("joe",))
    with pytest.raises(InvalidArgument, match="voice 'nobody' is not available"):
        build_servicer(Settings(tts_default_voice="nobody"), local).options(tts_pb2.SynthesisConfig())  # type: ignore[arg-type]
    servicer = build_servicer(Settings(tts_default_voice="joe"), local)  # type: ignore[arg-type]
    assert servicer.options(tts_pb2.SynthesisConfig()).voice == ""  # applied by the chain, per link
