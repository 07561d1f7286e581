"""Small WAV helpers for the command line (PCM16 mono or stereo)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from common.audio import resample_once


def read_pcm16(path: str | Path, rate: int) -> bytes:
    """A WAV file as PCM16 mono at ``rate`` (channels mixed down, resampled)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        frames = w.readframes(w.getnframes())
        channels = w.getnchannels()
        src_rate = w.getframerate()
    samples = np.frombuffer(frames, dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample_once(samples.tobytes(), src_rate, rate)


def write_pcm16(path: str | Path, pcm: bytes, rate: int, channels: int = 1) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def stereo_timeline(left: list[tuple[float, bytes]], right: list[tuple[float, bytes]], rate: int) -> bytes:
    """Place timed PCM16 chunks ((seconds from start, pcm)) on two channels of one timeline."""
    end = 0.0
    for chunks in (left, right):
        for t, pcm in chunks:
            end = max(end, t + len(pcm) / 2 / rate)
    out = np.zeros((int(end * rate) + 1, 2), dtype=np.int16)
    for channel, chunks in enumerate((left, right)):
        for t, pcm in chunks:
            samples = np.frombuffer(pcm, dtype=np.int16)
            start = int(t * rate)
            out[start : start + len(samples), channel] = samples[: len(out) - start]
    return out.tobytes()
