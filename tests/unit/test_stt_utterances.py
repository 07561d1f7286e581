"""UtteranceTracker: hysteresis, pre-roll, endpointing, minimum length and the length cap."""

from __future__ import annotations

from stt_svc.utterances import Ended, Paused, Started, UtteranceTracker

W = b"\x01\x00" * 512  # one 32 ms window


def run(tracker: UtteranceTracker, probs: list[float]) -> list[object]:
    out: list[object] = []
    for p in probs:
        out += tracker.push(W, p)
    return out


def test_speech_then_silence_makes_one_utterance_with_preroll() -> None:
    t = UtteranceTracker(endpointing_ms=320, preroll_ms=96)
    events = run(t, [0.0] * 10 + [0.9] * 20 + [0.1] * 10)
    started, paused, ended = events
    # Silence began: the engine may transcribe early; the utterance then ends exactly there.
    assert isinstance(paused, Paused) and (paused.pcm, paused.start_ms, paused.end_ms) == (
        ended.pcm,
        ended.start_ms,
        ended.end_ms,
    )
    assert isinstance(started, Started) and isinstance(ended, Ended)
    assert started.offset_ms == 320 - 96  # three windows of pre-roll before the first voiced one
    assert ended.speech_final and not ended.too_short
    assert ended.end_ms == 30 * 32
    # pre-roll + speech + 150 ms tail (trailing silence trimmed)
    assert len(ended.pcm) == (3 + 20) * len(W) + 16000 * 150 // 1000 * 2


def test_hysteresis_keeps_an_utterance_through_soft_sounds() -> None:
    t = UtteranceTracker(endpointing_ms=320)
    events = run(t, [0.9] * 5 + [0.4] * 20 + [0.9] * 5 + [0.0] * 12)
    assert [type(e).__name__ for e in events] == ["Started", "Paused", "Ended"]


def test_short_clicks_are_marked_too_short() -> None:
    t = UtteranceTracker(endpointing_ms=320, min_speech_ms=200)
    events = run(t, [0.9] * 2 + [0.0] * 12)
    assert isinstance(events[-1], Ended) and events[-1].too_short


def test_length_cap_and_force_end() -> None:
    t = UtteranceTracker(max_utterance_ms=640)
    events = run(t, [0.9] * 25)
    assert any(isinstance(e, Ended) and not e.speech_final for e in events)
    t2 = UtteranceTracker()
    run(t2, [0.9] * 10)
    forced = t2.force_end()
    assert forced is not None and not forced.speech_final
    assert t2.force_end() is None
