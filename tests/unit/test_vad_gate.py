"""The VAD gate: pre-roll replayed at onset, hangover before closing, offsets mapped back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from stt_svc.providers.base import Final, RecognitionEvent, SpeechStarted, UtteranceEnd, Word
from stt_svc.vad_gate import FRAME_BYTES, GatedStream, GateSettings, Timeline, frames_voiced, mean_square_of


class Provider:
    """A provider stream that keeps what it was sent and replays scripted events."""

    def __init__(self, events: list[RecognitionEvent] | None = None) -> None:
        self.sent = bytearray()
        self.script = events or []

    async def push_audio(self, pcm16: bytes) -> None:
        self.sent += pcm16

    async def finalize(self) -> None: ...

    async def end_input(self) -> None: ...

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        for e in self.script:
            yield e

    async def aclose(self) -> None: ...


def tone(ms: int, marker: int) -> bytes:
    n = 16 * ms
    return (np.full(n, 4000 + marker, dtype=np.int16)).tobytes()


def quiet(ms: int, marker: int = 0) -> bytes:
    return np.full(16 * ms, marker, dtype=np.int16).tobytes()


async def test_pre_roll_then_speech_then_hangover_nothing_else() -> None:
    provider = Provider()
    gate = GatedStream(provider, GateSettings(pre_roll_ms=100, hangover_ms=200))
    lead = quiet(1000, 3)  # quiet but not digital silence: the pre-roll must be its last 100 ms
    speech = tone(300, 1)
    audio = lead + speech + quiet(1000, 5)
    for i in range(0, len(audio), 1000):  # odd chunk sizes: frames straddle pushes
        await gate.push_audio(audio[i : i + 1000])
    expected = lead[-100 * 32 :] + speech + quiet(200, 5)
    assert bytes(provider.sent) == expected
    assert gate.sent_ms == 600
    assert gate.timeline.to_stream(0) == 900 and gate.timeline.to_stream(150) == 1050


async def test_events_are_moved_back_onto_the_stream_timeline() -> None:
    provider = Provider(
        [
            SpeechStarted(100),
            Final("hi", 0.9, (Word("hi", 100, 300, 0.9),), 100, 300, True),
            UtteranceEnd(300),
            SpeechStarted(700),
        ]
    )
    gate = GatedStream(provider, GateSettings(pre_roll_ms=100, hangover_ms=200))
    gate.timeline.run_starts(0, 900)  # first run: stream 900 ms onwards
    gate.timeline.run_starts(600, 5000)  # second run: sent 600 ms = stream 5000 ms
    got = [e async for e in gate.events()]
    assert got[0] == SpeechStarted(1000)
    final = got[1]
    assert isinstance(final, Final) and (final.start_ms, final.end_ms) == (1000, 1200)
    assert final.words[0].start_ms == 1000 and final.words[0].end_ms == 1200
    assert got[2] == UtteranceEnd(1200) and got[3] == SpeechStarted(5100)


def test_level_threshold_per_frame() -> None:
    frames = quiet(20) + tone(20, 0) + quiet(20, 50)
    voiced = frames_voiced(frames, mean_square_of(-45.0))
    assert list(voiced) == [False, True, False] and len(frames) == 3 * FRAME_BYTES
    assert Timeline().to_stream(123) == 123  # nothing sent yet: identity
