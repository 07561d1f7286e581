"""Per-call audio bookkeeping on the hot path: when each caller frame arrived, and is it voice.

Both are O(1) per frame with no allocation beyond numpy's own scratch: the arrival times live
in a preallocated ring, and the energy detector keeps two floats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from common.audio import ALAW, MULAW, Format, alaw_to_pcm16, mulaw_to_pcm16


class AudioClock:
    """Maps caller-audio offsets (ms since the first frame) to the monotonic time they arrived.

    STT events carry audio offsets; turn timing needs wall time ("the caller stopped speaking
    at T"). Keeps the last ``window_s`` seconds at 10 ms resolution.
    """

    __slots__ = ("_bytes_per_ms", "_ring", "_size", "received_ms")

    def __init__(self, fmt: Format, window_s: int = 120) -> None:
        self._bytes_per_ms = fmt.bytes_for_ms(1000) / 1000.0
        self._size = window_s * 100
        self._ring = np.zeros(self._size, dtype=np.float64)
        self.received_ms = 0.0

    def on_audio(self, nbytes: int, now: float) -> None:
        first = int(self.received_ms) // 10
        self.received_ms += nbytes / self._bytes_per_ms
        last = max(first, (int(math.ceil(self.received_ms)) - 1) // 10)
        first = max(first, last - self._size + 1)
        for slot in range(first, last + 1):
            self._ring[slot % self._size] = now

    def arrival(self, offset_ms: float) -> float:
        """Monotonic time by which the audio up to ``offset_ms`` had arrived.

        ``offset_ms`` is an end boundary (as STT end times are): the answer is when the frame
        holding the millisecond just before it arrived. Clamped to what was received.
        """
        offset = min(max(offset_ms - 1.0, 0.0), self.received_ms - 1.0)
        oldest = max(0.0, self.received_ms - (self._size - 1) * 10)
        offset = max(offset, oldest)
        value = float(self._ring[int(offset) // 10 % self._size])
        return value or time.monotonic()


class EnergyVad:
    """Cheap voice-activity backstop: frame RMS against an adaptive noise floor.

    The STT's neural VAD is the primary detector; this one only needs to notice sustained
    silence so a turn can still end if the recognizer never reports the end of an utterance.
    """

    __slots__ = ("_decode", "_floor", "last_voice_at", "voiced")

    def __init__(self, fmt: Format) -> None:
        self._decode: Callable[[bytes], bytes] | None
        if fmt.encoding == MULAW:
            self._decode = mulaw_to_pcm16
        elif fmt.encoding == ALAW:
            self._decode = alaw_to_pcm16
        else:
            self._decode = None
        self._floor = 100.0
        self.voiced = False
        self.last_voice_at = 0.0

    def on_audio(self, data: bytes, now: float) -> bool:
        pcm = self._decode(data) if self._decode is not None else data
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        if samples.size == 0:
            return self.voiced
        rms = math.sqrt(float(samples.dot(samples)) / samples.size)
        # Floor follows quiet frames quickly and loud ones very slowly.
        self._floor += (rms - self._floor) * (0.05 if rms < self._floor else 0.001)
        self.voiced = rms > max(300.0, self._floor * 3.0)
        if self.voiced:
            self.last_voice_at = now
        return self.voiced
