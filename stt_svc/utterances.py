"""Voice-activity segmentation: per-window speech probabilities in, utterances out.

Pure and synchronous (the engine runs the neural VAD elsewhere and feeds probabilities here),
so the end-of-speech rules are unit-testable: hysteresis between a start and an end threshold,
a pre-roll so first syllables are kept, ``endpointing_ms`` of silence to end an utterance, a
minimum speech length (clicks are not utterances), and a cap on how much audio one final covers.

An utterance is one stretch of caller speech (SpeechStarted .. UtteranceEnd). It may be split
into several segments, each transcribed as one final: the length cap and an explicit finalize
cut a segment without ending the utterance, so a caller who keeps talking is not told (by an
UtteranceEnd followed by a new SpeechStarted) that they stopped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Started:
    """Speech began; ``offset_ms`` includes the pre-roll kept before the first voiced window."""

    offset_ms: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Audio to transcribe as one final (pre-roll included, trailing silence trimmed)."""

    pcm: bytes
    start_ms: int
    end_ms: int  # end of the last voiced window
    too_short: bool  # not enough voiced audio to be worth transcribing
    # Set when the utterance is over: an endpoint was detected (``speech_final``) or the input
    # ended. Unset for a cut (length cap, finalize): the utterance goes on.
    utterance_over: bool
    speech_final: bool
    last_voice_ms: int  # end of the last voiced window of the whole utterance


@dataclass(frozen=True, slots=True)
class Paused:
    """Silence has begun inside a segment: if it lasts, the segment ends exactly here.

    Lets the engine start transcribing before the endpoint is certain."""

    pcm: bytes
    start_ms: int
    end_ms: int


SegmentEvent = Started | Segment | Paused


class UtteranceTracker:
    """Owns the current segment's audio and the speech/silence state of one stream."""

    def __init__(
        self,
        *,
        rate: int = 16000,
        window: int = 512,
        endpointing_ms: int = 400,
        preroll_ms: int = 300,
        tail_ms: int = 150,  # <= speculate_ms, so an early transcription sees the same audio
        min_speech_ms: int = 200,
        max_segment_ms: int = 25_000,  # whisper reads 30 s at most; keep a margin
        speculate_ms: int = 160,
        start_threshold: float = 0.5,
        end_threshold: float = 0.35,
    ) -> None:
        self._rate = rate
        self._window_ms = window * 1000 / rate
        self._bytes_per_ms = rate * 2 / 1000
        self._endpointing_ms = endpointing_ms
        self._tail_bytes = rate * tail_ms // 1000 * 2
        self._min_speech_ms = min_speech_ms
        self._max_ms = max_segment_ms
        self._speculate_ms = speculate_ms if speculate_ms < endpointing_ms else None
        self._start = start_threshold
        self._end = end_threshold
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(preroll_ms / self._window_ms)))
        self._audio = bytearray()  # the current segment
        self._samples = 0  # stream position at the end of the last window
        self.in_speech = False
        self._seg_start_ms = 0.0
        self._last_voice_ms = 0.0  # absolute: survives cuts
        self._last_voice_byte = 0  # within the current segment; 0 = no voice in it yet
        self._silence_ms = 0.0
        self._speech_ms = 0.0  # voiced audio in the current segment
        self._was_cut = False  # an earlier segment of this utterance was already final

    @property
    def position_ms(self) -> int:
        return self._samples * 1000 // self._rate

    def utterance(self) -> tuple[bytes, int, int]:
        """Audio of the segment in progress (for interim hypotheses), its start and end."""
        return bytes(self._audio), int(self._seg_start_ms), int(self._last_voice_ms)

    def push(self, window_pcm: bytes, prob: float) -> list[SegmentEvent]:
        self._samples += len(window_pcm) // 2
        now_ms = self._samples * 1000 / self._rate
        if not self.in_speech:
            if prob < self._start:
                self._preroll.append(window_pcm)
                return []
            self.in_speech = True
            self._audio = bytearray(b"".join(self._preroll))
            self._preroll.clear()
            self._seg_start_ms = max(0.0, now_ms - self._window_ms - len(self._audio) / self._bytes_per_ms)
            self._audio += window_pcm
            self._speech_ms = self._window_ms
            self._silence_ms = 0.0
            self._was_cut = False
            self._last_voice_ms = now_ms
            self._last_voice_byte = len(self._audio)
            return [Started(int(self._seg_start_ms))]
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
            if crossed and self._silence_ms < self._endpointing_ms and not self._too_short():
                pcm = bytes(self._audio[: self._cut_byte()])
                return [Paused(pcm, int(self._seg_start_ms), int(self._last_voice_ms))]
        if self._silence_ms >= self._endpointing_ms:
            return [self._end_utterance(speech_final=True)]
        if now_ms - self._seg_start_ms >= self._max_ms:
            seg = self.cut()
            return [seg] if seg is not None else []
        return []

    def cut(self) -> Segment | None:
        """Finalize: the speech so far becomes a final; the utterance itself goes on."""
        if not self.in_speech or self._last_voice_byte == 0:
            return None  # nothing voiced since the last cut
        cut = self._cut_byte()
        seg = self._segment(bytes(self._audio[:cut]), utterance_over=False, speech_final=False)
        # The next segment starts where this one stopped; audio after the cut is kept.
        del self._audio[:cut]
        self._seg_start_ms += cut / self._bytes_per_ms
        self._last_voice_byte = 0
        self._speech_ms = 0.0
        self._was_cut = True
        return seg

    def force_end(self) -> Segment | None:
        """End of input: close the utterance in progress now."""
        return self._end_utterance(speech_final=False) if self.in_speech else None

    def _cut_byte(self) -> int:
        return min(len(self._audio), self._last_voice_byte + self._tail_bytes)

    def _too_short(self) -> bool:
        # A click is not an utterance; once part of an utterance was final, any voiced window
        # after it is worth transcribing.
        return self._speech_ms < (self._window_ms if self._was_cut else self._min_speech_ms)

    def _segment(self, pcm: bytes, *, utterance_over: bool, speech_final: bool) -> Segment:
        return Segment(
            pcm=pcm,
            start_ms=int(self._seg_start_ms),
            end_ms=int(self._last_voice_ms),
            too_short=self._last_voice_byte == 0 or self._too_short(),
            utterance_over=utterance_over,
            speech_final=speech_final,
            last_voice_ms=int(self._last_voice_ms),
        )

    def _end_utterance(self, speech_final: bool) -> Segment:
        seg = self._segment(
            bytes(self._audio[: self._cut_byte()]), utterance_over=True, speech_final=speech_final
        )
        self.in_speech = False
        self._audio = bytearray()
        self._silence_ms = self._speech_ms = 0.0
        self._last_voice_byte = 0
        return seg
