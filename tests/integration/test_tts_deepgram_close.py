"""Deepgram Aura sessions and sockets under cancellation and a peer that stops reading: every
wait is bounded, and a close cut short still frees the websocket and its cap slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from common.providers import EnvKeySource, ProviderError
from tests.doubles.deepgram_speak import DeepgramSpeakDouble, Fault
from tests.integration.test_tts_deepgram import FAST, KEYS, RATE, deepgram
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.deepgram_aura import DeepgramAura
from tts_svc.providers.speak_sockets import SpeakSocket

LONG = "This sentence is long enough to take several chunks of audio to speak in full as replies do."
HANG_S = 10.0  # a hang shows as this passing; the provider's own deadlines are far shorter


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - counters in the double and the limiter
            await asyncio.sleep(0.005)


async def cancel_soon(closing: asyncio.Task[None], after_s: float) -> None:
    await asyncio.sleep(after_s)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing


async def test_a_session_close_cut_short_by_cancellation_still_frees_the_socket() -> None:
    async with DeepgramSpeakDouble(chunk_ms=20) as dg:
        provider = deepgram(dg)
        dg.faults.append(Fault(ignore_clear=True))  # the close waits its deadline for Cleared
        session = provider.open_session(SynthesisOptions(sample_rate=RATE))
        async with contextlib.aclosing(session.synthesize_stream(LONG)) as chunks:
            async for _ in chunks:
                break  # abandoned mid-piece: audio in flight
        closing = asyncio.get_running_loop().create_task(session.aclose())
        await cancel_soon(closing, FAST.close_s / 3)  # cancelled while waiting for Cleared
        await session.aclose()  # the owner's next close must finish the job, not skip it
        try:
            await until(lambda: dg.open == 0)
            assert provider.limiter.in_use(await provider.key("")) == 0
        finally:
            await provider.aclose()


class _DeafSocket:
    """A speak socket whose peer stopped reading: every send waits for buffer space forever."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def _blocked(self, what: str) -> None:
        self.sent.append(what)
        await asyncio.Event().wait()

    async def send_text(self, _message: Any) -> None:
        await self._blocked("Speak")

    async def send_flush(self) -> None:
        await self._blocked("Flush")

    async def send_clear(self) -> None:
        await self._blocked("Clear")

    async def send_close(self) -> None:
        await self._blocked("Close")

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def test_a_send_the_peer_never_takes_misses_the_first_audio_deadline() -> None:
    provider = DeepgramAura(base_url="ws://127.0.0.1:9", deadlines=FAST, keys=EnvKeySource(KEYS))
    options = SynthesisOptions(sample_rate=RATE)
    session = provider.open_session(options)
    key = await provider.key("")
    assert key is not None
    deaf = _DeafSocket()
    # An idle socket of this key, voice and rate: the session takes it instead of connecting.
    params = (key.fingerprint, provider.model(options), RATE, None)
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(provider.limiter.slot(key))  # as a connected socket holds
    await provider.idle.put(SpeakSocket(deaf, stack, params))
    try:
        with pytest.raises(ProviderError) as failed:
            async with asyncio.timeout(HANG_S):  # before the fix: the Speak send never returned
                async for _ in session.synthesize_stream("Hello there."):
                    pass
        assert failed.value.kind == "timeout"
        assert deaf.sent == ["Speak", "Clear"]  # the polite close got no further: dropped
        assert provider.limiter.in_use(key) == 0  # its close timed out, yet the slot is back
    finally:
        await session.aclose()
        await provider.aclose()


async def test_expired_idle_sockets_all_close_though_the_stream_that_found_them_is_cancelled() -> None:
    provider = DeepgramAura(base_url="ws://127.0.0.1:9", deadlines=FAST, keys=EnvKeySource(KEYS), idle_s=0.01)
    key = await provider.key("")
    assert key is not None
    for voice in ("aura-2-thalia-en", "aura-2-orion-en", "aura-2-luna-en"):
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(provider.limiter.slot(key))
        await provider.idle.put(SpeakSocket(_DeafSocket(), stack, (key.fingerprint, voice, RATE, None)))
    assert provider.limiter.in_use(key) == 3
    await asyncio.sleep(0.02)  # all three idled past idle_s
    finding = asyncio.get_running_loop().create_task(provider.idle.take((key.fingerprint, "x", RATE, None)))
    await cancel_soon(finding, FAST.close_s / 3)  # cancelled while the expired ones close
    try:
        await until(lambda: provider.limiter.in_use(key) == 0)  # none of them left holding a slot
        assert len(provider.idle) == 0
    finally:
        await provider.aclose()


async def test_a_socket_that_sent_something_unreadable_is_closed_not_kept() -> None:
    async with DeepgramSpeakDouble(chunk_ms=20) as dg:
        provider = deepgram(dg)
        dg.faults.append(Fault(garbage_after_bytes=RATE))  # mid-piece, after some audio
        session = provider.open_session(SynthesisOptions(sample_rate=RATE))
        try:
            with pytest.raises(ProviderError) as failed:
                async for _ in session.synthesize_stream(LONG):
                    pass
        finally:
            await session.aclose()
        try:
            await until(lambda: dg.open == 0)  # before the fix: Cleared, then pooled for reuse
            assert len(provider.idle) == 0 and provider.limiter.in_use(await provider.key("")) == 0
        finally:
            await provider.aclose()
    assert failed.value.kind == "protocol"
