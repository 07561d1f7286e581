"""UtteranceTracker: hysteresis, pre-roll, endpointing, minimum length, cuts and the length cap."""

from __future__ import annotations

from collections.abc import Sequence

from stt_svc.utterances import Paused, Segment, Started, UtteranceTracker

W = b"\x01\x00" * 512  # one 32 ms window
WMS = 32


def run(tracker: UtteranceTracker, probs: list[float]) -> list[object]:
    out: list[object] = []
    for p in probs:
        out += tracker.push(W, p)
    return out


def kinds(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_speech_then_silence_makes_one_utterance_with_preroll() -> None:
    t = UtteranceTracker(endpointing_ms=320, preroll_ms=96)
    events = run(t, [0.0] * 10 + [0.9] * 20 + [0.1] * 10)
    started, paused, ended = events
    assert isinstance(started, Started) and isinstance(paused, Paused) and isinstance(ended, Segment)
    # Silence began: the engine may transcribe early; the utterance then ends exactly there.
    assert (paused.pcm, paused.start_ms, paused.end_ms) == (ended.pcm, ended.start_ms, ended.end_ms)
    assert started.offset_ms == 10 * WMS - 96  # three windows of pre-roll before the first voiced one
    assert ended.start_ms == started.offset_ms
    assert ended.speech_final and ended.utterance_over and not ended.too_short
    assert ended.end_ms == ended.last_voice_ms == 30 * WMS
    # pre-roll + speech + 150 ms tail (the rest of the trailing silence is trimmed)
    assert len(ended.pcm) == (3 + 20) * len(W) + 16000 * 150 // 1000 * 2
    assert not t.in_speech


def test_endpoint_waits_for_the_configured_silence() -> None:
    t = UtteranceTracker(endpointing_ms=640)
    events = run(t, [0.9] * 10 + [0.0] * 19)
    assert kinds(events) == ["Started", "Paused"]  # 608 ms of silence: not yet
    assert kinds(t.push(W, 0.0)) == ["Segment"]  # 640 ms


def test_hysteresis_keeps_an_utterance_through_soft_sounds() -> None:
    t = UtteranceTracker(endpointing_ms=320)
    events = run(t, [0.9] * 5 + [0.4] * 20 + [0.9] * 5 + [0.0] * 12)
    assert kinds(events) == ["Started", "Paused", "Segment"]
    # ...but a soft sound alone does not start one.
    assert run(UtteranceTracker(), [0.4] * 30) == []


def test_short_clicks_are_marked_too_short_and_not_speculated() -> None:
    t = UtteranceTracker(endpointing_ms=320, min_speech_ms=200)
    events = run(t, [0.9] * 2 + [0.0] * 12)
    assert kinds(events) == ["Started", "Segment"]
    assert isinstance(events[-1], Segment) and events[-1].too_short and events[-1].utterance_over


def test_speech_resuming_in_the_pause_continues_the_utterance() -> None:
    t = UtteranceTracker(endpointing_ms=480)
    events = run(t, [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 15)
    assert kinds(events) == ["Started", "Paused", "Paused", "Segment"]
    paused_again, ended = events[2], events[3]
    assert isinstance(paused_again, Paused) and isinstance(ended, Segment)
    assert paused_again.end_ms == ended.end_ms == 28 * WMS


def test_finalize_cuts_a_final_but_the_utterance_goes_on() -> None:
    t = UtteranceTracker(endpointing_ms=320, tail_ms=0)
    run(t, [0.9] * 10)
    cut = t.cut()
    assert cut is not None and not cut.utterance_over and not cut.speech_final
    assert (cut.start_ms, cut.end_ms, len(cut.pcm)) == (0, 10 * WMS, 10 * len(W))
    assert t.cut() is None  # nothing new to finalize
    events = run(t, [0.9] * 10 + [0.0] * 10)
    assert "Started" not in kinds(events)  # still the same utterance
    ended = events[-1]
    assert isinstance(ended, Segment) and ended.utterance_over and ended.speech_final
    assert (ended.start_ms, ended.end_ms, len(ended.pcm)) == (10 * WMS, 20 * WMS, 10 * len(W))


def test_finalize_in_the_pause_leaves_only_the_utterance_end() -> None:
    t = UtteranceTracker(endpointing_ms=320)
    run(t, [0.9] * 10 + [0.0] * 3)
    assert t.cut() is not None
    ended = run(t, [0.0] * 7)[-1]
    assert isinstance(ended, Segment) and ended.utterance_over and ended.too_short
    assert ended.last_voice_ms == 10 * WMS


def test_length_cap_cuts_without_ending_the_utterance() -> None:
    t = UtteranceTracker(max_segment_ms=640)
    events = run(t, [0.9] * 45)
    cuts = [e for e in events if isinstance(e, Segment)]
    assert kinds(events).count("Started") == 1
    assert len(cuts) == 2 and all(not c.utterance_over and not c.speech_final for c in cuts)
    assert cuts[0].end_ms == cuts[1].start_ms == 20 * WMS
    assert t.in_speech


def test_force_end_closes_the_utterance() -> None:
    t = UtteranceTracker()
    run(t, [0.9] * 10)
    forced = t.force_end()
    assert forced is not None and forced.utterance_over and not forced.speech_final
    assert t.force_end() is None
    assert UtteranceTracker().force_end() is None
