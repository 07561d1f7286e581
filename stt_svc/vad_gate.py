"""VAD-gated cloud recognition: a cloud provider bills every second of audio it is sent, so
while the caller is silent its stream gets no audio (the provider's stream keeps itself open
with KeepAlive messages, as ``DeepgramStream`` does when no audio flows).

The gate's one job is deciding which audio goes to the provider:

- Closed, it keeps the last ``pre_roll_ms`` of audio; the first voiced frame opens it and the
  pre-roll goes out first, so the first syllable is never cut.
- Open, everything goes out, until ``hangover_ms`` of unvoiced audio in a row closes it. The
  hangover outlasts the provider's endpointing and utterance-end windows, so the provider sees
  the silence it needs to end the utterance: the final is not delayed.
- Offsets in the provider's events are on the provider's (gapped) timeline; the gate maps them
  back to the stream's, so the caller's side never knows audio was held back.

Voice is detected per 20 ms frame by energy (``threshold_dbfs``): cheap (O(1) per frame on the
loop, no model) and biased towards sending, so noise can cost money but never words.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np

from stt_svc.providers.base import (
    ENGINE_RATE,
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    Recognizer,
    RecognizeStream,
    SpeechStarted,
    UtteranceEnd,
)

FRAME_MS = 20
FRAME_BYTES = ENGINE_RATE * 2 * FRAME_MS // 1000


@dataclass(frozen=True, slots=True)
class GateSettings:
    """How the gate decides (see the module docstring)."""

    threshold_dbfs: float = -45.0
    pre_roll_ms: int = 400
    # Unvoiced audio still sent after speech: the provider's endpointing + utterance-end window.
    hangover_ms: int = 1500


def frames_voiced(pcm: memoryview | bytes, threshold_mean_square: float) -> np.ndarray:
    """Per 20 ms frame of whole-frame PCM16 ``pcm``: is its level at or over the threshold."""
    samples = np.frombuffer(pcm, dtype=np.int16).reshape(-1, FRAME_BYTES // 2).astype(np.float32)
    result: np.ndarray = np.einsum("ij,ij->i", samples, samples) / samples.shape[1] >= threshold_mean_square
    return result


def mean_square_of(dbfs: float) -> float:
    """The PCM16 mean square of a level in dBFS (what ``frames_voiced`` compares with)."""
    return (32768.0 * 10 ** (dbfs / 20)) ** 2


def frame_dbfs(frame: bytes) -> float:
    """RMS level of PCM16 ``frame`` in dB below full scale (-inf for digital silence)."""
    samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
    rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


class Timeline:
    """Maps provider-timeline ms (audio actually sent) to stream-timeline ms."""

    __slots__ = ("_sent", "_stream")

    def __init__(self) -> None:
        self._sent: list[int] = []  # where each sent run starts, provider timeline
        self._stream: list[int] = []  # where it starts, stream timeline

    def run_starts(self, sent_ms: int, stream_ms: int) -> None:
        """A new run of sent audio begins."""
        self._sent.append(sent_ms)
        self._stream.append(stream_ms)

    def to_stream(self, sent_ms: int) -> int:
        """The stream-timeline ms of provider-timeline ``sent_ms``."""
        i = bisect.bisect_right(self._sent, sent_ms) - 1
        if i < 0:
            return sent_ms
        return self._stream[i] + sent_ms - self._sent[i]


class GatedStream:
    """One stream's gate in front of a provider stream (a RecognizeStream itself)."""

    def __init__(self, inner: RecognizeStream, settings: GateSettings) -> None:
        self._inner = inner
        self._settings = settings
        self._pre_roll: deque[bytes] = deque(maxlen=max(1, settings.pre_roll_ms // FRAME_MS))
        self._partial = b""
        self._open = False
        self._quiet_ms = 0
        self._threshold = mean_square_of(settings.threshold_dbfs)
        self._stream_ms = 0  # stream audio seen
        self._sent_ms = 0  # audio sent to the provider
        self.timeline = Timeline()

    @property
    def sent_ms(self) -> int:
        """Milliseconds of audio the provider has been sent."""
        return self._sent_ms

    async def push_audio(self, pcm16: bytes) -> None:
        data = self._partial + pcm16 if self._partial else pcm16
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        if not whole:
            return
        out = bytearray()
        # One numpy pass per push for every whole frame in it, not one per frame.
        voiced = frames_voiced(memoryview(data)[:whole], self._threshold)
        for n, i in enumerate(range(0, whole, FRAME_BYTES)):
            self._frame(data[i : i + FRAME_BYTES], bool(voiced[n]), out)
        if out:
            await self._inner.push_audio(bytes(out))

    def _frame(self, frame: bytes, voiced: bool, out: bytearray) -> None:
        if not self._open and voiced:
            self._open = True
            self._quiet_ms = 0
            held = len(self._pre_roll) * FRAME_MS
            self.timeline.run_starts(self._sent_ms, self._stream_ms - held)
            for past in self._pre_roll:
                out += past
            self._sent_ms += held
            self._pre_roll.clear()
        if self._open:
            out += frame
            self._sent_ms += FRAME_MS
            self._quiet_ms = 0 if voiced else self._quiet_ms + FRAME_MS
            if self._quiet_ms >= self._settings.hangover_ms:
                self._open = False
        else:
            self._pre_roll.append(frame)
        self._stream_ms += FRAME_MS

    async def finalize(self) -> None:
        await self._inner.finalize()

    async def end_input(self) -> None:
        if self._open and self._partial:
            await self._inner.push_audio(self._partial)
            self._sent_ms += len(self._partial) * 1000 // (ENGINE_RATE * 2)
        self._partial = b""
        await self._inner.end_input()

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        async for event in self._inner.events():
            yield self._mapped(event)

    def _mapped(self, event: RecognitionEvent) -> RecognitionEvent:
        t = self.timeline.to_stream
        if isinstance(event, SpeechStarted):
            return SpeechStarted(t(event.offset_ms))
        if isinstance(event, Interim):
            return Interim(event.text, t(event.start_ms), t(event.end_ms))
        if isinstance(event, Final):
            words = tuple(replace(w, start_ms=t(w.start_ms), end_ms=t(w.end_ms)) for w in event.words)
            return replace(event, words=words, start_ms=t(event.start_ms), end_ms=t(event.end_ms))
        if isinstance(event, UtteranceEnd):
            return UtteranceEnd(t(event.last_word_end_ms))
        return event

    async def aclose(self) -> None:
        await self._inner.aclose()


class GatedRecognizer:
    """A cloud Recognizer whose streams send only voiced audio (plus pre-roll and hangover)."""

    def __init__(self, inner: Recognizer, settings: GateSettings | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.settings = settings or GateSettings()

    async def open(self, options: RecognitionOptions) -> GatedStream:
        """The provider's stream behind a gate; the hangover covers the stream's endpointing."""
        settings = self.settings
        floor = options.endpointing_ms + 500
        if settings.hangover_ms < floor:
            settings = replace(settings, hangover_ms=floor)
        return GatedStream(await self.inner.open(options), settings)

    def __getattr__(self, attr: str) -> object:
        # Everything else (warm_up, aclose, serves, limits) is the provider's own.
        return getattr(self.inner, attr)


__all__ = [
    "FRAME_BYTES",
    "GateSettings",
    "GatedRecognizer",
    "GatedStream",
    "Timeline",
    "frame_dbfs",
    "frames_voiced",
    "mean_square_of",
]
