"""WAV files in and out of the CLI: any PCM WAV in, PCM16 out, and the two-sided call recording."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.wav import WavError, read_pcm16, stereo_timeline, write_pcm16


def tone(rate: int, seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * hz * t)


def write_raw(path: Path, frames: bytes, width: int, channels: int, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def as_int16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def test_pcm16_round_trip_is_exact(tmp_path: Path) -> None:
    pcm = (tone(16000, 0.5) * 32767).astype("<i2").tobytes()
    path = write_pcm16(tmp_path / "sub" / "a.wav", pcm, 16000)  # creates the folder
    assert read_pcm16(path, 16000) == pcm
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)


@pytest.mark.parametrize("src_rate,rate", [(44100, 16000), (8000, 16000), (22050, 48000), (48000, 8000)])
def test_any_rate_is_resampled_to_the_call_rate(tmp_path: Path, src_rate: int, rate: int) -> None:
    pcm = (tone(src_rate, 1.0) * 32767).astype("<i2").tobytes()
    out = as_int16(read_pcm16(write_pcm16(tmp_path / "a.wav", pcm, src_rate), rate))
    assert abs(len(out) - rate) <= 2  # one second stays one second
    # Still a 440 Hz tone at the new rate.
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(np.argmax(spectrum) * rate / len(out) - 440) < 3


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_sample_widths_are_converted_to_pcm16(tmp_path: Path, width: int) -> None:
    x = tone(16000, 0.1, amp=0.25)
    if width == 1:
        frames = np.round(x * 128 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.round(x * (1 << 23)).astype(np.int32)
        frames = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    else:
        frames = np.round(x * (1 << (8 * width - 1))).astype(f"<i{width}").tobytes()
    out = as_int16(read_pcm16(write_raw(tmp_path / "a.wav", frames, width, 1, 16000), 16000))
    expected = np.round(x * 32768)
    tolerance = 260 if width == 1 else 1  # 8-bit keeps 8 bits
    assert np.max(np.abs(out - expected)) <= tolerance


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    left = (tone(16000, 0.1) * 20000).astype(np.int16)
    right = np.zeros_like(left)
    frames = np.stack([left, right], axis=1).tobytes()
    out = as_int16(read_pcm16(write_raw(tmp_path / "s.wav", frames, 2, 2, 16000), 16000))
    assert len(out) == len(left)
    assert np.max(np.abs(out.astype(np.int32) - left.astype(np.int32) // 2)) <= 1


def test_unusable_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="no such file"):
        read_pcm16(tmp_path / "missing.wav", 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"ID3 this is an mp3, honest")
    with pytest.raises(WavError, match="not a PCM WAV file.*convert"):
        read_pcm16(junk, 16000)
    with pytest.raises(WavError, match="holds no audio"):
        read_pcm16(write_raw(tmp_path / "empty.wav", b"", 2, 1, 16000), 16000)
    with pytest.raises(WavError, match="is a folder"):
        read_pcm16(tmp_path, 16000)


def test_stereo_timeline_puts_each_side_where_it_happened() -> None:
    rate = 1000  # 1 sample per ms keeps the arithmetic readable
    caller = [(0.0, b"\x01\x00" * 100)]  # caller speaks 0-100 ms
    agent = [(0.5, b"\x02\x00" * 100)]  # agent answers at 500 ms
    out = as_int16(stereo_timeline(caller, agent, rate)).reshape(-1, 2)
    assert len(out) == 600
    assert set(out[:100, 0]) == {1} and set(out[100:, 0]) == {0}
    assert set(out[:500, 1]) == {0} and set(out[500:, 1]) == {2}


def test_stereo_timeline_closes_jitter_gaps_but_keeps_real_pauses() -> None:
    rate = 1000
    frame = b"\x05\x00" * 20  # 20 ms frames
    # Received 3 ms late, 2 ms early, then after a real pause of 300 ms.
    agent = [(0.0, frame), (0.023, frame), (0.038, frame), (0.360, frame)]
    out = as_int16(stereo_timeline([], agent, rate)).reshape(-1, 2)[:, 1]
    assert set(out[:60]) == {5}  # the first three frames play seamlessly: no click, none cut
    assert set(out[60:360]) == {0}  # the pause stays
    assert set(out[360:380]) == {5}


def test_stereo_timeline_of_nothing_is_empty() -> None:
    assert stereo_timeline([], [], 16000) == b""
