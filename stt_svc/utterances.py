"""Voice-activity segmentation: per-window speech probabilities in, utterances out.

Pure and synchronous (the engine runs the neural VAD elsewhere and feeds probabilities here),
so the end-of-speech rules are unit-testable: hysteresis between a start and an end threshold,
a pre-roll so first syllables are kept, ``endpointing_ms`` of silence to end an utterance, a
minimum speech length (clicks are not utterances), and a cap on utterance length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Started:
    offset_ms: int


@dataclass(frozen=True, slots=True)
class Ended:
    pcm: bytes  # the utterance, pre-roll included, trailing silence trimmed
    start_ms: int
    end_ms: int  # end of the last voiced window
    speech_final: bool  # False when cut by the length cap or a finalize request
    too_short: bool


@dataclass(frozen=True, slots=True)
class Paused:
    """Silence has begun inside an utterance: if it lasts, the utterance ends exactly here.

    Lets the engine start transcribing before the endpoint is certain."""

    pcm: bytes
    start_ms: int
    end_ms: int


SegmentEvent = Started | Ended | Paused


class UtteranceTracker:
    """Owns the current utterance's audio and the speech/silence state."""

    def __init__(
        self,
        *,
        rate: int = 16000,
        window: int = 512,
        endpointing_ms: int = 400,
        preroll_ms: int = 300,
        tail_ms: int = 150,  # <= speculate_ms, so an early transcription sees the same audio
        min_speech_ms: int = 200,
        max_utterance_ms: int = 25_000,
        speculate_ms: int = 160,
        start_threshold: float = 0.5,
        end_threshold: float = 0.35,
    ) -> None:
        self._rate = rate
        self._window = window
        self._window_ms = window * 1000 / rate
        self._endpointing_ms = endpointing_ms
        self._tail_bytes = rate * tail_ms // 1000 * 2
        self._min_speech_ms = min_speech_ms
        self._max_ms = max_utterance_ms
        self._speculate_ms = speculate_ms if speculate_ms < endpointing_ms else None
        self._start = start_threshold
        self._end = end_threshold
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(preroll_ms / self._window_ms)))
        self._audio = bytearray()
        self._samples = 0  # stream position at the end of the last window
        self.in_speech = False
        self._start_ms = 0
        self._last_voice_ms = 0.0
        self._last_voice_byte = 0
        self._silence_ms = 0.0
        self._speech_ms = 0.0

    @property
    def position_ms(self) -> int:
        return self._samples * 1000 // self._rate

    def utterance(self) -> tuple[bytes, int, int]:
        """Audio of the utterance in progress (for interim hypotheses), its start and end."""
        return bytes(self._audio), self._start_ms, int(self._last_voice_ms)

    def push(self, window_pcm: bytes, prob: float) -> list[SegmentEvent]:
        self._samples += len(window_pcm) // 2
        now_ms = self._samples * 1000 / self._rate
        if not self.in_speech:
            if prob >= self._start:
                self.in_speech = True
                preroll = b"".join(self._preroll)
                self._preroll.clear()
                self._audio = bytearray(preroll)
                self._audio += window_pcm
                self._start_ms = max(
                    0, int(now_ms - self._window_ms) - len(preroll) * 1000 // (2 * self._rate)
                )
                self._speech_ms = self._window_ms
                self._silence_ms = 0.0
                self._last_voice_ms = now_ms
                self._last_voice_byte = len(self._audio)
                return [Started(self._start_ms)]
            self._preroll.append(window_pcm)
            return []
        self._audio += window_pcm
        if prob >= self._end:
            self._silence_ms = 0.0
            self._speech_ms += self._window_ms
            self._last_voice_ms = now_ms
            self._last_voice_byte = len(self._audio)
        else:
            self._silence_ms += self._window_ms
            spec = self._speculate_ms
            crossed = spec is not None and self._silence_ms - self._window_ms < spec <= self._silence_ms
            if crossed and self._silence_ms < self._endpointing_ms and self._speech_ms >= self._min_speech_ms:
                cut = min(len(self._audio), self._last_voice_byte + self._tail_bytes)
                return [Paused(bytes(self._audio[:cut]), self._start_ms, int(self._last_voice_ms))]
        if self._silence_ms >= self._endpointing_ms:
            return [self._close(speech_final=True)]
        if now_ms - self._start_ms >= self._max_ms:
            return [self._close(speech_final=False)]
        return []

    def force_end(self) -> Ended | None:
        """Close the utterance in progress now (finalize or end of input)."""
        return self._close(speech_final=False) if self.in_speech else None

    def _close(self, speech_final: bool) -> Ended:
        cut = min(len(self._audio), self._last_voice_byte + self._tail_bytes)
        event = Ended(
            pcm=bytes(self._audio[:cut]),
            start_ms=self._start_ms,
            end_ms=int(self._last_voice_ms),
            speech_final=speech_final,
            too_short=self._speech_ms < self._min_speech_ms,
        )
        self.in_speech = False
        self._audio = bytearray()
        self._silence_ms = self._speech_ms = 0.0
        return event
