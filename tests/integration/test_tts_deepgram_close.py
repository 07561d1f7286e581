"""Deepgram Aura sessions and sockets under cancellation and a peer that stops reading: every
wait is bounded, and a close cut short still frees the websocket and its cap slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tests.doubles.deepgram_speak import DeepgramSpeakDouble, Fault
from tests.integration.test_tts_deepgram import FAST, RATE, deepgram
from tts_svc.providers.base import SynthesisOptions

LONG = "This sentence is long enough to take several chunks of audio to speak in full as replies do."


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
            assert provider.limiter.in_use(provider.key("")) == 0
        finally:
            await provider.aclose()
