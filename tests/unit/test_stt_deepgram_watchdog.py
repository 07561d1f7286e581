"""DeepgramStream's deadlines with a scripted socket: a send that Deepgram never takes (its read
side stuck, its write side still answering) must still end in a timeout, not a hang."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.providers import ProviderError
from stt_svc.providers.base import RecognitionOptions
from stt_svc.providers.deepgram_stream import DeepgramStream, StreamTimings

HANG_S = 10.0  # a hang shows as this passing; the stream's deadlines are far shorter


class _Transport:
    def abort(self) -> None:
        pass


class _Websocket:
    """Frames from Deepgram, as the test puts them."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.transport = _Transport()

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            yield await self.frames.get()


class _StuckReader:
    """The SDK socket's sends, as when Deepgram stops reading: every send waits forever."""

    def __init__(self) -> None:
        self._websocket = _Websocket()

    async def _stuck(self, *_args: Any) -> None:
        await asyncio.Event().wait()

    send_media = send_finalize = send_close_stream = send_keep_alive = _stuck


async def test_a_send_still_waiting_keeps_the_inactivity_deadline_after_a_reply() -> None:
    socket = _StuckReader()
    timings = StreamTimings(first_result_s=0.3, inactivity_s=0.3, keepalive_s=30.0)
    stream = DeepgramStream(
        socket,  # type: ignore[arg-type]
        contextlib.AsyncExitStack(),
        RecognitionOptions(),
        timings,
        lambda: None,
    )
    pushing = asyncio.get_running_loop().create_task(stream.push_audio(bytes(640)))
    try:
        await asyncio.sleep(0)  # the send is under way (and never returns)
        # Deepgram answers something (results for earlier audio): the reply disarms the deadline.
        socket._websocket.frames.put_nowait(json.dumps({"type": "SpeechStarted", "timestamp": 0.1}))
        with pytest.raises(ProviderError) as failed:
            async with asyncio.timeout(HANG_S):  # before the fix: nothing re-armed it
                async for _ in stream.events():
                    pass
        assert failed.value.kind == "timeout"
    finally:
        pushing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pushing
        await stream.aclose()
