"""The Recognizer Protocol every stt_svc engine implements, and the typed events it yields.

Audio in is PCM16 mono at 16 kHz (the servicer converts); offsets are ms of stream audio.

Stream lifecycle (one per call)::

    stream = await recognizer.open(options)
    await stream.push_audio(pcm)   # any number of times; may wait (backpressure)
    await stream.finalize()        # optional: close the current segment with a final now
    await stream.end_input()       # no more audio: finals for buffered speech, then events end
    async for event in stream.events(): ...
    await stream.aclose()          # always (in ``finally``): stops all work, ends events()

Per utterance the events are ``SpeechStarted``, ``Interim``* (when asked for), ``Final``+ and
``UtteranceEnd``. A ``Final`` with ``speech_final=False`` (finalize, length cap) does not end the
utterance; the one with ``speech_final=True`` does, and ``UtteranceEnd`` follows it. Noise
yields no ``Final`` (an utterance of noise may still show ``SpeechStarted`` .. ``UtteranceEnd``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stt_svc.metering import StreamUsage

ENGINE_RATE = 16000


@dataclass(frozen=True, slots=True)
class RecognitionOptions:
    """How one stream is recognized (validated by the servicer)."""

    language: str = "en-US"  # BCP-47
    interim_results: bool = True
    keyterms: tuple[str, ...] = ()
    endpointing_ms: int = 400  # silence after speech that ends an utterance
    model: str = ""  # engine-specific; "" = the engine's default
    providers: tuple[str, ...] = ()  # the chain to run on, in order; () = the service default
    redact_pii: bool = False  # ask the engine to redact PII where it can (Deepgram: `redact`)
    # What the stream's providers were sent (stt_svc/metering.py, issue 17); None: not metered.
    usage: StreamUsage | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Voice activity began at ``offset_ms`` of stream audio."""

    offset_ms: int


@dataclass(frozen=True, slots=True)
class Interim:
    """A hypothesis for speech still in progress; a later one or the final replaces it."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Word:
    """One recognized word and where it was heard."""

    word: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Final:
    """Text for ``start_ms``..``end_ms`` of stream audio that will not change."""

    text: str
    confidence: float  # 0..1; 0 when the engine gives none
    words: tuple[Word, ...]
    start_ms: int
    end_ms: int
    speech_final: bool  # an endpoint was detected: this final ends the caller's utterance


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """The caller stopped speaking; ``last_word_end_ms`` is where the last speech ended."""

    last_word_end_ms: int


RecognitionEvent = SpeechStarted | Interim | Final | UtteranceEnd


class RecognizeStream(Protocol):
    """One recognition stream: owns its buffered audio, its tasks and its event queue."""

    async def push_audio(self, pcm16: bytes) -> None:
        """Queue PCM16 mono 16 kHz audio (any length); waits when the engine is behind."""
        ...

    async def finalize(self) -> None:
        """Emit a final for speech buffered so far; the utterance itself may go on."""
        ...

    async def end_input(self) -> None:
        """No more audio: finish buffered speech, then ``events()`` ends."""
        ...

    def events(self) -> AsyncIterator[RecognitionEvent]:
        """The stream's events in order; raises if the engine failed."""
        ...

    async def aclose(self) -> None:
        """Stop all work now (idempotent); undelivered events are dropped and ``events()`` ends."""
        ...


class Recognizer(Protocol):
    """A recognition engine; one per process, shared by all its streams."""

    name: str

    async def open(self, options: RecognitionOptions) -> RecognizeStream:
        """Start a stream; raises ``InvalidArgument`` for options this engine cannot honour."""
        ...
