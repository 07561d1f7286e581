"""The Recognizer Protocol every stt_svc engine implements, and the typed events it yields.

Audio in is PCM16 mono at 16 kHz (the servicer converts); offsets are ms of stream audio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

ENGINE_RATE = 16000


@dataclass(frozen=True, slots=True)
class RecognitionOptions:
    language: str = "en"
    interim_results: bool = True
    keyterms: tuple[str, ...] = ()
    endpointing_ms: int = 400
    model: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    offset_ms: int


@dataclass(frozen=True, slots=True)
class Interim:
    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    confidence: float
    words: tuple[Word, ...]
    start_ms: int
    end_ms: int
    speech_final: bool


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    last_word_end_ms: int


RecognitionEvent = SpeechStarted | Interim | Final | UtteranceEnd


class RecognizeStream(Protocol):
    """One stream: push audio, finalize/end, iterate events, close."""

    async def push_audio(self, pcm16: bytes) -> None: ...

    async def finalize(self) -> None: ...

    async def end_input(self) -> None: ...

    def events(self) -> AsyncIterator[RecognitionEvent]: ...

    async def aclose(self) -> None: ...


class Recognizer(Protocol):
    """Opens recognition streams; shared by all streams of the process."""

    name: str

    async def open(self, options: RecognitionOptions) -> RecognizeStream: ...
