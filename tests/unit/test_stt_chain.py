"""stt_svc's provider chain and its parts, with scripted in-process recognizers (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from common.providers import EnvKeySource, ProviderError
from stt_svc.app import Settings, make_chain
from stt_svc.chain import BYTES_PER_MS, ChainRecognizer, ChainStream
from stt_svc.metering import provider_of
from stt_svc.providers.base import (
    Final,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from stt_svc.providers.deepgram_nova import DeepgramRecognizer, deepgram_configured, websocket_base
from stt_svc.providers.endpoints import EndpointBalancer
from tests.doubles.deepgram_api import ToneWordsRecognizer


class Scripted:
    """A recognizer whose streams replay a script: events, then an error or a normal end."""

    def __init__(self, name: str, script: list[RecognitionEvent], error: Exception | None = None) -> None:
        self.name = name
        self.script = script
        self.error = error
        self.open_error: Exception | None = None
        self.audio: list[bytes] = []
        self.ended = asyncio.Event()
        self.wait_for_input = True  # the script plays once all audio is in (as a real one hears it)

    async def open(self, options: RecognitionOptions) -> Scripted:
        if self.open_error is not None:
            raise self.open_error
        return self

    async def push_audio(self, pcm16: bytes) -> None:
        self.audio.append(pcm16)

    async def finalize(self) -> None:
        pass

    async def end_input(self) -> None:
        self.ended.set()

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        if self.wait_for_input:
            await self.ended.wait()
        for e in self.script:
            yield e
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.ended.set()


def final(text: str, start: int, end: int, speech_final: bool = True) -> Final:
    return Final(text, 1.0, (Word(text, start, end, 1.0),), start, end, speech_final)


async def run(
    chain: ChainRecognizer, audio_ms: int = 1000, providers: tuple[str, ...] = ()
) -> list[RecognitionEvent]:
    stream = await chain.open(RecognitionOptions(providers=providers))
    await asyncio.sleep(0.01)  # let a provider that fails at once do so before the audio
    try:
        for _ in range(audio_ms // 20):
            await stream.push_audio(bytes(20 * BYTES_PER_MS))
        await stream.end_input()
        return [e async for e in stream.events()]
    finally:
        await stream.aclose()


async def test_after_a_failure_the_next_provider_gets_the_uncovered_audio_on_the_stream_timeline() -> None:
    first = Scripted(
        "a",
        [SpeechStarted(0), final("one", 0, 300), UtteranceEnd(300), SpeechStarted(500)],
        ProviderError("drop", kind="disconnect"),
    )
    # The second provider hears the stream from 300 ms: its offsets are relative to that.
    second = Scripted(
        "b", [SpeechStarted(200), final("one", 0, 0), final("two", 200, 400), UtteranceEnd(400)]
    )
    chain = ChainRecognizer({"local": second, "deepgram": first}, ["deepgram", "local"])
    events = await run(chain)
    assert events == [
        SpeechStarted(0),
        final("one", 0, 300),
        UtteranceEnd(300),
        SpeechStarted(500),  # the replay's own SpeechStarted is not repeated
        Final("two", 1.0, (Word("two", 500, 700, 1.0),), 500, 700, True),
        UtteranceEnd(700),
    ]
    assert sum(map(len, second.audio)) == 700 * BYTES_PER_MS  # 1000 ms pushed, 300 ms covered


async def test_a_provider_that_ends_early_counts_as_failed() -> None:
    first = Scripted("a", [], None)
    first.wait_for_input = False  # its events end before the caller ended the input
    second = Scripted("b", [final("x", 0, 100)])
    chain = ChainRecognizer({"local": second, "deepgram": first}, ["deepgram", "local"])
    assert [e for e in await run(chain) if isinstance(e, Final)] == [final("x", 0, 100)]


async def test_errors_the_caller_must_fix_do_not_fall_back() -> None:
    first = Scripted("a", [], ProviderError("bad request", kind="bad_request", fallback=False))
    chain = ChainRecognizer({"local": Scripted("b", []), "deepgram": first}, ["deepgram", "local"])
    with pytest.raises(ProviderError, match="bad request"):
        await run(chain)


async def test_when_no_provider_is_left_the_status_says_why() -> None:
    limited = Scripted("a", [])
    limited.open_error = ProviderError("429", kind="rate_limited", retry_after_s=3)
    chain = ChainRecognizer({"deepgram": limited, "local": Scripted("b", [])}, ["deepgram"])
    with pytest.raises(ResourceExhausted) as err:
        await chain.open(RecognitionOptions())
    assert err.value.retry_after_s == 3
    limited.open_error = ProviderError("down", kind="server_error")
    with pytest.raises(Unavailable, match="down"):
        await chain.open(RecognitionOptions())


async def test_chain_names_are_checked() -> None:
    chain = ChainRecognizer({"local": ToneWordsRecognizer()}, ["local"])
    with pytest.raises(InvalidArgument, match="config.providers"):
        await chain.open(RecognitionOptions(providers=("whisperx",)))
    with pytest.raises(FailedPrecondition, match="deepgram"):
        await chain.open(RecognitionOptions(providers=("deepgram",)))


def test_endpoints_least_in_flight_and_failed_ones_avoided() -> None:
    pool = EndpointBalancer(["ws://a", "ws://b"], failure_penalty_s=60)
    first, second = pool.acquire(), pool.acquire()
    assert {first, second} == {"ws://a", "ws://b"}
    pool.release("ws://a")
    assert pool.acquire() == "ws://a"
    pool.mark_failed("ws://a")
    assert pool.acquire() == "ws://b" and pool.failed() == ["ws://a"]
    pool.mark_failed("ws://b")
    assert pool.acquire() in {"ws://a", "ws://b"}  # all failed: still try one


def test_settings_build_the_provider_set_and_name_bad_variables() -> None:
    local = ToneWordsRecognizer()
    assert set(make_chain(Settings(), local, environ={}).engines) == {"local"}
    chain = make_chain(
        Settings(stt_providers="deepgram,local"), local, environ={"DEEPGRAM_API_KEY__ACME": "k"}
    )
    assert set(chain.engines) == {"local", "deepgram"} and chain.default == ("deepgram", "local")
    hosted = make_chain(Settings(stt_deepgram_urls="http://gpu-1:8080, https://gpu-2"), local, environ={})
    engine = provider_of(hosted.engines["deepgram"])  # under its meter and VAD gate (issue 17)
    assert isinstance(engine, DeepgramRecognizer) and engine.endpoints.urls == (
        "ws://gpu-1:8080",
        "wss://gpu-2",
    )
    with pytest.raises(ValueError, match="VOICEAI_STT_PROVIDERS"):
        make_chain(Settings(stt_providers="deepgram,azure"), local, environ={})
    with pytest.raises(ValueError, match="VOICEAI_STT_DEEPGRAM_URLS"):
        make_chain(Settings(stt_deepgram_urls="gpu-1:8080"), local, environ={})
    assert not deepgram_configured(Settings(), EnvKeySource({"DEEPGRAM_API_KEY": " "}))
    assert websocket_base("wss://api.deepgram.com/") == "wss://api.deepgram.com"


async def test_a_local_only_chain_hands_out_the_local_stream_itself() -> None:
    local = ToneWordsRecognizer()
    stream = await ChainRecognizer({"local": local}, ["local"]).open(RecognitionOptions())
    assert not isinstance(stream, ChainStream)
    await stream.aclose()


def test_endpoint_set_replaced_while_streams_are_in_flight() -> None:
    from stt_svc.providers.endpoints import EndpointBalancer

    balancer = EndpointBalancer(["ws://a", "ws://b"])
    held = balancer.acquire()
    balancer.replace(["ws://c", "ws://c"])
    assert balancer.urls == ("ws://c",)
    assert balancer.acquire() == "ws://c"  # a URL that left gets no new streams
    assert balancer.in_flight() == {held: 1, "ws://c": 1}
    balancer.release(held)  # the stream on the old URL ends as usual; its counter goes
    assert balancer.in_flight() == {"ws://c": 1}
    balancer.replace([])  # an empty answer changes nothing
    assert balancer.urls == ("ws://c",)
