"""The real Silero VAD + UtteranceTracker on real speech (Piper), noise and silence.

Checks the boundaries the rest of the service depends on: utterances start before the first
audible sample (pre-roll keeps first syllables), end within a window or two of the last one,
a pause between sentences splits them, and line noise is not speech.
"""

from __future__ import annotations

import numpy as np
import pytest

from stt_svc.segmented import WINDOW_BYTES, speech_probabilities
from stt_svc.utterances import Segment, Started, UtteranceTracker
from stt_svc.vad import new_vad
from tests.audio_helpers import silence_pcm, synthesize_pcm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vad():  # type: ignore[no-untyped-def]
    return new_vad(16000)


def audible_span_ms(pcm: bytes, offset_ms: float) -> tuple[float, float]:
    """First and last sample louder than a whisper, in ms of the stream."""
    x = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    loud = np.flatnonzero(x > 300)
    return offset_ms + loud[0] / 16.0, offset_ms + loud[-1] / 16.0


def segment(vad, pcm: bytes, endpointing_ms: int = 400) -> list[object]:  # type: ignore[no-untyped-def]
    vad.reset()
    whole = len(pcm) // WINDOW_BYTES * WINDOW_BYTES
    probs = speech_probabilities(vad, pcm[:whole])
    tracker = UtteranceTracker(endpointing_ms=endpointing_ms)
    events: list[object] = []
    for i, p in enumerate(probs):
        events += tracker.push(pcm[i * WINDOW_BYTES : (i + 1) * WINDOW_BYTES], p)
    return events


def test_two_sentences_split_by_a_pause(vad) -> None:  # type: ignore[no-untyped-def]
    one = synthesize_pcm("Please book me a table for two.", 16000)
    two = synthesize_pcm("Tomorrow at seven.", 16000)
    lead, gap = silence_pcm(600), silence_pcm(1200)
    audio = lead + one + gap + two + silence_pcm(800)
    truth = [
        audible_span_ms(one, len(lead) / 32),
        audible_span_ms(two, (len(lead) + len(one) + len(gap)) / 32),
    ]
    events = segment(vad, audio)
    starts = [e for e in events if isinstance(e, Started)]
    ends = [e for e in events if isinstance(e, Segment)]
    assert len(starts) == 2 and len(ends) == 2, events
    for (first, last), started, ended in zip(truth, starts, ends, strict=True):
        assert ended.utterance_over and ended.speech_final and not ended.too_short
        # Pre-roll: the segment begins ~300 ms before the VAD fired, so before the first sound.
        assert first - 450 <= started.offset_ms <= first - 100, (first, started)
        assert abs(ended.end_ms - last) <= 100, (last, ended)
        # The transcribed audio covers the whole sentence (plus a short tail).
        assert ended.start_ms + len(ended.pcm) / 32 >= last


def test_endpointing_decides_whether_a_pause_ends_the_utterance(vad) -> None:  # type: ignore[no-untyped-def]
    first = synthesize_pcm("My number is five five five,", 16000)
    second = synthesize_pcm("one two three four.", 16000)
    audio = first + silence_pcm(200) + second + silence_pcm(900)
    pause = audible_span_ms(second, len(first) / 32 + 200)[0] - audible_span_ms(first, 0)[1]
    assert 450 < pause < 650  # Piper's own pauses around the 200 ms we added

    def utterances(endpointing_ms: int) -> int:
        return sum(isinstance(e, Segment) for e in segment(vad, audio, endpointing_ms))

    assert utterances(800) == 1
    assert utterances(300) == 2


def test_silence_and_line_noise_are_not_speech(vad) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    hiss = rng.normal(0, 150, 16000 * 3).astype(np.int16).tobytes()
    hum = (np.sin(2 * np.pi * 60 * np.arange(16000 * 2) / 16000) * 2000).astype(np.int16).tobytes()
    assert segment(vad, silence_pcm(2000) + hiss + hum) == []
