"""SegmentedStream (VAD + batch transcriber -> streaming events), on synthetic audio.

The transcriber is a stand-in that reports which audio it was given; the detector is an energy
threshold; both run in real thread pools like the real ones. The real model and VAD are covered
by tests/integration/test_stt_service.py and tests/unit/test_stt_vad_real_audio.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stt_svc.providers.base import (
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from stt_svc.segmented import SegmentedStream, StreamResources, Transcript

RATE = 16000


def tone(ms: int) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes()


def quiet(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


class EnergyVad:
    """Speech = loud window."""

    def __init__(self) -> None:
        self.released = False

    def process(self, data: memoryview) -> float:
        x = np.frombuffer(data, dtype=np.float32)
        return 1.0 if float(np.sqrt(np.mean(x * x))) > 0.05 else 0.0

    def reset(self) -> None:
        pass


class ClipTranscriber:
    """Says how long the clip was ("N ms"); records every call and how many ran at once."""

    def __init__(self, delay_s: float = 0.0, text: str | None = None) -> None:
        self.delay_s = delay_s
        self.hold = threading.Event()  # while cleared, a transcription may not finish
        self.hold.set()
        self.text = text
        self.calls: list[tuple[int, bool]] = []  # (clip ms, words)
        self.running = {True: 0, False: 0}  # by words (finals) / no words (interims)
        self.max_running = {True: 0, False: 0}
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes, options: RecognitionOptions, words: bool) -> Transcript:
        ms = len(pcm) // 32
        with self._lock:
            self.calls.append((ms, words))
            self.running[words] += 1
            self.max_running[words] = max(self.max_running[words], self.running[words])
        try:
            time.sleep(self.delay_s)
            self.hold.wait(30)
        finally:
            with self._lock:
                self.running[words] -= 1
        text = f"{ms} ms" if self.text is None else self.text
        return Transcript(text, 0.9, (Word("clip", 0, ms, 0.9),) if words and text else ())


@pytest.fixture(scope="module")
def pools() -> Iterator[tuple[ThreadPoolExecutor, ThreadPoolExecutor]]:
    with ThreadPoolExecutor(2) as asr, ThreadPoolExecutor(2) as vad:
        yield asr, vad


def open_stream(
    pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
    transcriber: ClipTranscriber,
    *,
    interim: bool = False,
    endpointing_ms: int = 320,
    interim_interval_ms: int = 300,
) -> tuple[SegmentedStream, EnergyVad]:
    vad = EnergyVad()

    def release(v: object) -> None:
        vad.released = True

    res = StreamResources(transcriber, pools[0], pools[1], vad, release, interim_interval_ms, 200)
    options = RecognitionOptions(interim_results=interim, endpointing_ms=endpointing_ms)
    return SegmentedStream(res, options), vad


async def push(stream: SegmentedStream, audio: bytes, chunk_ms: int = 20, pace: float = 0.0) -> None:
    step = RATE * chunk_ms // 1000 * 2
    for i in range(0, len(audio), step):
        await stream.push_audio(audio[i : i + step])
        if pace:
            await asyncio.sleep(chunk_ms / 1000 / pace)


async def collect(stream: SegmentedStream) -> list[RecognitionEvent]:
    try:
        return [e async for e in stream.events()]
    finally:
        await stream.aclose()


async def test_speech_then_silence_gives_started_final_and_end_in_order(pools) -> None:  # type: ignore[no-untyped-def]
    asr = ClipTranscriber()
    stream, vad = open_stream(pools, asr)
    await push(stream, quiet(640) + tone(1000) + quiet(640))
    await stream.end_input()
    events = await collect(stream)
    assert [type(e) for e in events] == [SpeechStarted, Final, UtteranceEnd]
    started, final, end = events
    assert isinstance(started, SpeechStarted) and isinstance(final, Final) and isinstance(end, UtteranceEnd)
    assert 640 - 300 - 32 <= started.offset_ms <= 640 - 300 + 32  # 300 ms of pre-roll
    assert final.speech_final and final.start_ms == started.offset_ms
    assert abs(final.end_ms - 1640) <= 32 and end.last_word_end_ms == final.end_ms
    # pre-roll + speech + tail went to the transcriber, once: the speculative run was the final
    assert asr.calls == [(final.text and int(final.text.split()[0]), True)]
    assert 1250 <= asr.calls[0][0] <= 1550
    assert final.words[0].start_ms == final.start_ms  # word times are in stream audio
    assert vad.released


async def test_two_utterances_give_two_finals(pools) -> None:  # type: ignore[no-untyped-def]
    stream, _ = open_stream(pools, ClipTranscriber())
    await push(stream, tone(600) + quiet(800) + tone(900) + quiet(800))
    await stream.end_input()
    events = await collect(stream)
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "Final", "UtteranceEnd"] * 2
    first, second = (e for e in events if isinstance(e, Final))
    assert first.end_ms < second.start_ms


async def test_noise_without_words_gives_no_final(pools) -> None:  # type: ignore[no-untyped-def]
    stream, _ = open_stream(pools, ClipTranscriber(text=""))
    await push(stream, tone(800) + quiet(640))
    await stream.end_input()
    assert [type(e) for e in await collect(stream)] == [SpeechStarted, UtteranceEnd]


async def test_interims_are_skipped_not_queued_while_a_transcription_runs(pools) -> None:  # type: ignore[no-untyped-def]
    asr = ClipTranscriber(delay_s=0.25)
    stream, _ = open_stream(pools, asr, interim=True, interim_interval_ms=200)
    # 3 s of speech at 4x real time: 15 interim slots, but each transcription takes 250 ms.
    t0 = time.monotonic()
    await push(stream, tone(3000), pace=4.0)
    wall = time.monotonic() - t0
    await push(stream, quiet(640))
    await stream.end_input()
    events = await collect(stream)
    interims = [e for e in events if isinstance(e, Interim)]
    interim_calls = [c for c in asr.calls if not c[1]]
    # Skipped, not queued: no more interims than fit back to back in the time audio came in.
    assert 2 <= len(interim_calls) <= wall / asr.delay_s + 1, (asr.calls, wall)
    assert len(interims) >= 2
    assert asr.max_running[False] == 1  # interims never pile up (a final may run beside one)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "SpeechStarted" and kinds[-2:] == ["Final", "UtteranceEnd"]
    lengths = [int(e.text.split()[0]) for e in interims]
    assert lengths == sorted(lengths)  # each hypothesis covers more of the utterance


async def test_no_interims_when_not_asked(pools) -> None:  # type: ignore[no-untyped-def]
    asr = ClipTranscriber()
    stream, _ = open_stream(pools, asr, interim=False, interim_interval_ms=100)
    await push(stream, tone(2000) + quiet(640))
    await stream.end_input()
    assert not any(isinstance(e, Interim) for e in await collect(stream))
    assert all(words for _ms, words in asr.calls)


async def test_finalize_mid_speech_does_not_end_the_utterance(pools) -> None:  # type: ignore[no-untyped-def]
    stream, _ = open_stream(pools, ClipTranscriber())
    await push(stream, tone(800))
    await stream.finalize()
    await push(stream, tone(800) + quiet(640))
    await stream.end_input()
    events = await collect(stream)
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "Final", "Final", "UtteranceEnd"]
    cut, last = events[1], events[2]
    assert isinstance(cut, Final) and isinstance(last, Final)
    assert not cut.speech_final and last.speech_final and cut.end_ms <= last.start_ms


async def test_end_of_input_mid_speech_flushes_a_final(pools) -> None:  # type: ignore[no-untyped-def]
    stream, _ = open_stream(pools, ClipTranscriber())
    await push(stream, tone(900))
    await stream.end_input()
    events = await collect(stream)
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "Final", "UtteranceEnd"]
    assert isinstance(events[1], Final) and not events[1].speech_final


async def test_aclose_mid_transcription_stops_at_once(pools) -> None:  # type: ignore[no-untyped-def]
    asr = ClipTranscriber()
    asr.hold.clear()  # transcriptions cannot finish until the stream is closed
    stream, vad = open_stream(pools, asr, interim=True, interim_interval_ms=100)
    before = {t for t in asyncio.all_tasks() if not t.done()}
    await push(stream, tone(1500))
    for _ in range(200):  # an interim transcription is now running in a thread
        if asr.calls:
            break
        await asyncio.sleep(0.01)
    assert asr.calls
    await asyncio.wait_for(stream.aclose(), 2)  # does not wait for the thread (held for 30 s)
    asr.hold.set()
    assert [type(e) async for e in stream.events()] == [SpeechStarted]
    await stream.aclose()  # idempotent
    leaked = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert leaked == []
    for _ in range(200):  # a VAD batch still running at close returns the detector when done
        if vad.released:
            break
        await asyncio.sleep(0.01)
    assert vad.released


async def test_aclose_right_after_open_ends_events(pools) -> None:  # type: ignore[no-untyped-def]
    stream, vad = open_stream(pools, ClipTranscriber())
    await stream.aclose()  # before the stream's task ever ran
    assert [e async for e in stream.events()] == []
    await stream.push_audio(tone(100))  # returns at once: the stream is over
    assert vad.released


async def test_a_detector_still_running_at_close_goes_back_to_its_pool_only_when_done(pools) -> None:  # type: ignore[no-untyped-def]
    stream, vad = open_stream(pools, ClipTranscriber())
    hold, entered = threading.Event(), threading.Event()
    process = vad.process

    def slow_process(data: memoryview) -> float:
        entered.set()
        hold.wait(30)
        return process(data)

    vad.process = slow_process  # type: ignore[method-assign]
    await push(stream, tone(100))
    assert await asyncio.to_thread(entered.wait, 10)
    await stream.aclose()
    assert not vad.released  # another stream could otherwise get it while this thread uses it
    hold.set()
    for _ in range(200):
        if vad.released:
            break
        await asyncio.sleep(0.01)
    assert vad.released
