"""WAV files for the command line: caller recordings in, agent and whole-call recordings out.

Inside the CLI all audio is PCM16 (signed 16-bit little-endian); these helpers convert at the edge.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.audio import resample_once

# A chunk that starts this soon after the previous one ended continues it seamlessly: receive
# jitter must not leave clicks (gaps or overlaps of a few samples) in the recording.
_CONTIGUOUS_S = 0.05


class WavError(ValueError):
    """A WAV file that cannot be used, with what to do about it."""


def read_pcm16(path: str | Path, rate: int) -> bytes:
    """A PCM WAV file (8/16/24/32-bit, any rate, any channels) as PCM16 mono at ``rate``."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, src_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WavError(f"{path}: is a folder, not a WAV file") from None
    except (wave.Error, EOFError) as e:
        # Also float and WAVE_FORMAT_EXTENSIBLE files, which the wave module cannot read.
        raise WavError(f"{path}: not a PCM WAV file ({e}); convert it, e.g. with sox or ffmpeg") from None
    samples = _to_float(frames, width, path)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        raise WavError(f"{path}: the file holds no audio")
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return resample_once(pcm, src_rate, rate)


def _to_float(frames: bytes, width: int, path: str | Path) -> np.ndarray:
    """Samples scaled to [-1, 1) whatever their width (8-bit WAV is unsigned, the rest signed)."""
    if width == 1:
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    if width == 3:
        b = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)  # sign-extend 24 bits
        return v.astype(np.float64) / float(1 << 23)
    if width == 4:
        return np.frombuffer(frames, dtype="<i4").astype(np.float64) / float(1 << 31)
    raise WavError(f"{path}: {width * 8}-bit samples are not supported; use 8, 16, 24 or 32-bit PCM")


def write_pcm16(path: str | Path, pcm: bytes, rate: int, channels: int = 1) -> Path:
    """Write PCM16 (interleaved when ``channels`` > 1) to ``path``, creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out


def stereo_timeline(
    left: Sequence[tuple[float, bytes]], right: Sequence[tuple[float, bytes]], rate: int
) -> bytes:
    """Two tracks of timed PCM16 chunks ``(seconds from the start, pcm)`` as one stereo buffer.

    A chunk that starts within 50 ms of where its track's previous chunk ended is placed right
    after it, so arrival jitter does not chop the audio; a later one starts where it was timed.
    """
    tracks = [_place(chunks, rate) for chunks in (left, right)]
    length = max((start + len(s) for track in tracks for start, s in track), default=0)
    out = np.zeros((length, 2), dtype=np.int16)
    for channel, track in enumerate(tracks):
        for start, samples in track:
            out[start : start + len(samples), channel] = samples
    return out.tobytes()


def _place(chunks: Sequence[tuple[float, bytes]], rate: int) -> list[tuple[int, np.ndarray]]:
    placed: list[tuple[int, np.ndarray]] = []
    cursor = 0  # where the previous chunk ended, in samples
    for at_s, pcm in sorted(chunks, key=lambda c: c[0]):
        samples = np.frombuffer(pcm, dtype="<i2")
        start = max(0, round(at_s * rate))
        if start < cursor + _CONTIGUOUS_S * rate:
            start = cursor
        placed.append((start, samples))
        cursor = start + len(samples)
    return placed
