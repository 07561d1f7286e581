"""Deepgram listen streams at their end: a Deepgram that answers CloseStream but never closes
the socket, and a close cut short by the caller's cancellation (the real SDK client against the
listen double over loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from common.providers import EnvKeySource, ProviderError, resolve_key
from stt_svc.providers.base import Final, RecognitionEvent, RecognitionOptions
from stt_svc.providers.deepgram_nova import KEY_ENV, DeepgramConfig, DeepgramRecognizer
from stt_svc.providers.deepgram_stream import DeepgramStream
from tests.doubles.deepgram_api import DeepgramListenDouble, ListenFault
from tests.doubles.tone_words import speak

ENV = {KEY_ENV: "deployment-key"}
WORDS = ["alpha", "bravo", "charlie"]
# A hang shows as this deadline passing; the stream's own deadlines are far shorter.
HANG_S = 10.0


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - counters in the double and the limiter
            await asyncio.sleep(0.005)


def recognizer(url: str, **kw: object) -> DeepgramRecognizer:
    return DeepgramRecognizer(DeepgramConfig(urls=(url,), **kw), EnvKeySource(ENV))  # type: ignore[arg-type]


async def send_words(stream: DeepgramStream) -> None:
    audio = speak(WORDS)  # no trailing silence: CloseStream's final carries the words
    for i in range(0, len(audio), 640):
        await stream.push_audio(audio[i : i + 640])
    await stream.end_input()


async def collect(stream: DeepgramStream) -> list[RecognitionEvent]:
    async with asyncio.timeout(HANG_S):
        return [event async for event in stream.events()]


def heard(events: list[RecognitionEvent]) -> list[str]:
    return [w.word.lower() for e in events if isinstance(e, Final) for w in e.words]


async def test_metadata_after_close_stream_ends_the_stream_though_the_socket_stays_open() -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(after_close_stream="hold"))
        provider = recognizer(dg.url)
        stream = await provider.open(RecognitionOptions())
        try:
            await send_words(stream)
            events = await collect(stream)  # before the fix: no deadline once a final arrived
        finally:
            await stream.aclose()
            await provider.aclose()
    assert heard(events) == WORDS


async def test_silence_after_close_stream_is_a_timeout_not_a_hang() -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(after_close_stream="mute"))
        provider = recognizer(dg.url, inactivity_timeout_s=0.3)
        stream = await provider.open(RecognitionOptions())
        events: list[RecognitionEvent] = []
        try:
            await send_words(stream)
            with pytest.raises(ProviderError) as failed:
                async with asyncio.timeout(HANG_S):
                    async for event in stream.events():
                        events.append(event)
        finally:
            await stream.aclose()
            await provider.aclose()
    assert failed.value.kind == "timeout"
    assert heard(events) == WORDS  # what Deepgram said before it went quiet is delivered


async def test_a_close_cut_short_by_cancellation_still_frees_the_socket_and_the_slot() -> None:
    async with DeepgramListenDouble() as dg:
        provider = recognizer(dg.url)
        key = resolve_key(KEY_ENV, "", ENV)
        stream = await provider.open(RecognitionOptions())
        await stream.push_audio(speak(WORDS[:1]))
        closing = asyncio.get_running_loop().create_task(stream.aclose())
        await asyncio.sleep(0)  # the close is under way (waiting for its reader to stop) ...
        closing.cancel()  # ... when the caller that started it goes away
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        await stream.aclose()  # what the owner does next: must finish the close, not skip it
        try:
            await until(lambda: dg.open == 0)
            assert provider.limiter.in_use(key) == 0
            assert provider.endpoints.in_flight() == {dg.url: 0}
        finally:
            await provider.aclose()


async def test_a_message_the_client_cannot_read_fails_the_stream_instead_of_ending_it() -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(after_close_stream="garbage"))
        provider = recognizer(dg.url)
        stream = await provider.open(RecognitionOptions())
        try:
            await send_words(stream)
            # Before the fix the reader died of the JSON error and the events simply ended: the
            # caller took a stream that lost its last words for one that ended as asked.
            with pytest.raises(ProviderError) as failed:
                await collect(stream)
        finally:
            await stream.aclose()
            await provider.aclose()
    assert failed.value.kind == "protocol"
