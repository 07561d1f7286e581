"""Zero-cost Recognizer for benchmarks: energy instead of a model, a fixed phrase as the text.

Speech is any 20 ms of audio whose RMS passes a threshold (one numpy reduction per push);
``VOICEAI_FAKE_STT_FINAL_MS`` after the configured endpointing silence it reports a final.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np

from stt_svc.providers.base import Final, RecognitionEvent, RecognitionOptions, SpeechStarted, UtteranceEnd

TEXT = "hello there"


class ZeroCostStream:
    def __init__(self, options: RecognitionOptions, final_s: float) -> None:
        self._endpointing_ms = options.endpointing_ms
        self._final_s = final_s
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._pos_ms = 0.0
        self._in_speech = False
        self._start_ms = 0
        self._last_voice_ms = 0.0
        self._timers: list[asyncio.TimerHandle] = []

    async def push_audio(self, pcm16: bytes) -> None:
        samples = np.frombuffer(pcm16, dtype=np.int16)
        start_ms = self._pos_ms
        self._pos_ms += len(samples) / 16.0
        blocks = samples[: samples.size - samples.size % 160].reshape(-1, 160)  # 10 ms blocks
        loud_blocks = np.flatnonzero(np.abs(blocks).mean(axis=1) > 500) if blocks.size else blocks
        loud = len(loud_blocks) > 0
        if loud:
            # Like a real recognizer's word timings: where the sound ends, not where the chunk does.
            self._last_voice_ms = start_ms + (int(loud_blocks[-1]) + 1) * 10
            if not self._in_speech:
                self._in_speech = True
                self._start_ms = int(self._pos_ms - len(samples) / 16.0)
                self._events.put_nowait(SpeechStarted(self._start_ms))
        elif self._in_speech and self._pos_ms - self._last_voice_ms >= self._endpointing_ms:
            self._end(True)

    def _end(self, speech_final: bool) -> None:
        self._in_speech = False
        end = int(self._last_voice_ms)
        events = [Final(TEXT, 1.0, (), self._start_ms, end, speech_final), UtteranceEnd(end)]
        if self._final_s:
            handle = asyncio.get_running_loop().call_later(self._final_s, self._emit, events)
            self._timers.append(handle)
        else:
            self._emit(events)

    def _emit(self, events: list[RecognitionEvent]) -> None:
        for e in events:
            self._events.put_nowait(e)

    async def finalize(self) -> None:
        if self._in_speech:
            self._end(False)

    async def end_input(self) -> None:
        await self.finalize()
        await asyncio.sleep(self._final_s)
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (e := await self._events.get()) is not None:
            yield e

    async def aclose(self) -> None:
        for t in self._timers:
            t.cancel()


class ZeroCostRecognizer:
    name = "zero-cost-fake"

    def __init__(self) -> None:
        self._final_s = int(os.environ.get("VOICEAI_FAKE_STT_FINAL_MS", "0")) / 1000.0

    async def open(self, options: RecognitionOptions) -> ZeroCostStream:
        return ZeroCostStream(options, self._final_s)
