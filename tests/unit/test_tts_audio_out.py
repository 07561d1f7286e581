"""AudioOut: native PCM segments -> wire chunks (format, size, text tags, nothing held back)."""

from __future__ import annotations

import numpy as np
import pytest

from common.audio import ALAW, LINEAR16, MULAW, Format, alaw_to_pcm16, mulaw_to_pcm16, resample_once
from tts_svc.audio_out import AudioOut

NATIVE = 22050


def tone(seconds: float, freq: float = 440.0, amp: int = 8000, rate: int = NATIVE) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def decode(fmt: Format, audio: bytes) -> np.ndarray:
    if fmt.encoding == MULAW:
        audio = mulaw_to_pcm16(audio)
    elif fmt.encoding == ALAW:
        audio = alaw_to_pcm16(audio)
    return np.frombuffer(audio, dtype=np.int16)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(
    "fmt",
    [
        Format(MULAW, 8000),
        Format(ALAW, 8000),
        Format(LINEAR16, 8000),
        Format(LINEAR16, 16000),
        Format(LINEAR16, 22050),
        Format(LINEAR16, 24000),
        Format(LINEAR16, 48000),
    ],
)
def test_segments_give_all_their_audio_in_the_requested_format(fmt: Format) -> None:
    out = AudioOut(NATIVE, fmt)
    segments = [tone(0.7), tone(2.3), tone(0.05)]
    for pcm in segments:  # each segment's audio is all in its own chunks: nothing held back
        got = b"".join(c.audio for c in out.segment(pcm, "x"))
        assert abs(len(got) / fmt.bytes_per_sample - len(pcm) / 2 * fmt.sample_rate / NATIVE) <= 1
    chunks = [c for i, pcm in enumerate(segments) for c in out.segment(pcm, f"piece {i}")]
    audio = b"".join(c.audio for c in chunks)
    assert all(len(c.audio) <= fmt.bytes_for_ms(1000) for c in chunks)  # <= 1 s per message
    assert all(len(c.audio) % fmt.bytes_per_sample == 0 for c in chunks)
    assert [c.text for c in chunks if c.text] == ["piece 0", "piece 1", "piece 2"]
    assert abs(sum(c.duration_ms for c in chunks) - fmt.ms_for_bytes(len(audio))) <= len(chunks)
    pcm = decode(fmt, audio)
    assert abs(dominant_hz(pcm, fmt.sample_rate) - 440) < 5
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert abs(rms - 8000 / np.sqrt(2)) < 300  # level kept (G.711 is within a few percent)


def test_a_long_segment_is_split_and_only_its_first_chunk_carries_the_text() -> None:
    out = AudioOut(NATIVE, Format(LINEAR16, 16000))
    chunks = out.segment(tone(3.5), "a long sentence")
    assert [c.text for c in chunks] == ["a long sentence", "", "", ""]
    assert [c.duration_ms for c in chunks[:3]] == [1000, 1000, 1000]


def test_a_segment_without_audio_still_reports_its_text() -> None:
    out = AudioOut(NATIVE, Format(MULAW, 8000))
    chunks = out.segment(b"", "...")
    assert [(c.text, c.audio) for c in chunks] == [("...", b"")]


def test_converted_audio_matches_resampling_the_whole_segment() -> None:
    fmt = Format(LINEAR16, 24000)
    pcm = tone(1.0) + tone(1.0, 300)
    got = b"".join(c.audio for c in AudioOut(NATIVE, fmt).segment(pcm, "a"))
    assert got == resample_once(pcm, NATIVE, 24000)


def test_no_resampling_means_nothing_is_held_back() -> None:
    out = AudioOut(NATIVE, Format(LINEAR16, NATIVE))
    pcm = tone(0.3)
    assert out.segment(pcm, "x")[0].audio == pcm
