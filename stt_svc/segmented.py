"""Streaming recognition from a batch transcriber: a VAD cuts the stream, utterances are transcribed.

``SegmentedStream`` implements ``RecognizeStream`` for any engine that can only transcribe whole
clips (local Whisper). The event loop only moves bytes: voice detection runs in one executor and
transcription in another (both release the GIL), so speech-start and end-of-speech detection
never wait behind a transcription.

Scheduling rules (each says why):
- Interims: at most one per ``interim_interval_ms`` of audio, and only when no transcription of
  this stream is running. An interim that cannot start now is skipped, never queued: a queued
  hypothesis is stale when it lands and would delay the final.
- Finals never wait for an interim (a running one is left to finish and its result dropped).
- When silence begins the segment is transcribed speculatively; if no speech follows before the
  endpoint, that transcription is the final, so the final lands about ``endpointing_ms`` after
  speech end instead of ``endpointing_ms`` + transcription time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from common.errors import ResourceExhausted
from common.tasks import cancel_and_wait
from stt_svc.providers.base import (
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from stt_svc.utterances import Paused, Segment, SegmentEvent, Started, UtteranceTracker

log = logging.getLogger(__name__)

WINDOW = 512  # samples per VAD window at 16 kHz (32 ms), Silero's size
WINDOW_BYTES = WINDOW * 2
INBOX_CHUNKS = 64  # audio messages buffered before push_audio waits (backpressure to the reader)
MAX_INTERIMS_QUEUED = 4  # a client this far behind gets no more interims (they would be stale)
MAX_EVENTS_QUEUED = 256  # a client this far behind is not reading: the stream fails
_FINALIZE = object()
_END = object()


class Transcript(NamedTuple):
    """What a transcriber heard in one clip; word times are ms from the start of the clip.

    A tuple so callers may unpack ``text, confidence, words``."""

    text: str
    confidence: float
    words: tuple[Word, ...]


class Transcriber(Protocol):
    """Transcribes whole clips of PCM16 16 kHz; blocking, safe to call from several threads."""

    def transcribe(self, pcm: bytes, options: RecognitionOptions, words: bool) -> Transcript: ...


class VoiceDetector(Protocol):
    """Speech probability of one ``WINDOW`` of float32 samples; stateful, one per stream."""

    def process(self, data: memoryview) -> float: ...

    def reset(self) -> None: ...


def speech_probabilities(vad: VoiceDetector, pcm: bytes) -> list[float]:
    """One probability per whole window of ``pcm`` (PCM16). Blocking: run it in an executor."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    samples *= 1.0 / 32768.0
    rows = samples.reshape(-1, WINDOW)
    # A writable float32 memoryview goes straight to the C side; a numpy array would be copied
    # element by element in Python (~120 us per window, with the GIL held).
    return [vad.process(memoryview(row.data)) for row in rows]


@dataclass(frozen=True, slots=True)
class StreamResources:
    """What a stream borrows from its engine: the transcriber, the pools and its VAD."""

    transcriber: Transcriber
    asr_pool: Executor
    vad_pool: Executor
    vad: VoiceDetector
    release_vad: Callable[[VoiceDetector], None]
    interim_interval_ms: int = 700
    min_speech_ms: int = 200


class SegmentedStream:
    """One recognition stream: owns its tracker, its audio inbox, its tasks and its events."""

    def __init__(self, res: StreamResources, options: RecognitionOptions) -> None:
        self._res = res
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._tracker = UtteranceTracker(
            endpointing_ms=options.endpointing_ms, min_speech_ms=res.min_speech_ms
        )
        self._inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=INBOX_CHUNKS)
        # Unbounded by type; bounded by _emit (interims dropped first, then the stream fails).
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._pending = bytearray()  # audio short of a whole VAD window
        self._interim_task: asyncio.Task[None] | None = None
        # A transcription started when silence began: (segment start, segment end, task).
        self._speculative: tuple[int, int, asyncio.Task[Transcript]] | None = None
        self._last_interim_ms = 0
        self._generation = 0  # bumped by every final: an interim older than it is stale
        self._closed = False  # aclose() ran: the VAD is (or will be) back in its pool
        self._vad_job: concurrent.futures.Future[list[float]] | None = None
        self._ended = False  # the end marker is in the event queue
        self._task = self._loop.create_task(self._run(), name="stt-stream")

    # ------------------------------------------------------------------ RecognizeStream
    async def push_audio(self, pcm16: bytes) -> None:
        if not self._task.done():  # after the end or a failure, audio has nowhere to go
            await self._inbox.put(pcm16)

    async def finalize(self) -> None:
        if not self._task.done():
            await self._inbox.put(_FINALIZE)

    async def end_input(self) -> None:
        if not self._task.done():
            await self._inbox.put(_END)

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event
        if self._task.done() and not self._task.cancelled() and (exc := self._task.exception()):
            raise exc

    async def aclose(self) -> None:
        spec = self._speculative[2] if self._speculative is not None else None
        # A transcription already running in a thread finishes there; its result is unused.
        await cancel_and_wait(self._task, self._interim_task, spec)
        self._end_events()  # also when _run was cancelled before it ever started
        if not self._closed:
            self._closed = True
            job = self._vad_job
            if job is not None and not job.done():
                # Cancelling the await does not stop the thread: the detector goes back to the
                # pool only when its last batch is done, or two streams could share it.
                job.add_done_callback(lambda _job: self._res.release_vad(self._res.vad))
            else:
                self._res.release_vad(self._res.vad)

    # ------------------------------------------------------------------ the pipeline
    async def _run(self) -> None:
        try:
            while True:
                item = await self._inbox.get()
                if item is _END:
                    await self._on_segment(self._tracker.force_end())
                    return
                if item is _FINALIZE:
                    await self._on_segment(self._tracker.cut())
                    continue
                assert isinstance(item, bytes)
                self._pending += item
                if len(self._pending) < WINDOW_BYTES:
                    continue
                n = len(self._pending) // WINDOW_BYTES * WINDOW_BYTES
                batch = bytes(self._pending[:n])
                del self._pending[:n]
                self._vad_job = self._res.vad_pool.submit(speech_probabilities, self._res.vad, batch)
                probs = await asyncio.wrap_future(self._vad_job)
                for i, prob in enumerate(probs):
                    window = batch[i * WINDOW_BYTES : (i + 1) * WINDOW_BYTES]
                    for seg in self._tracker.push(window, prob):
                        await self._on_segment(seg)
                self._maybe_interim()
        finally:
            self._end_events()

    def _end_events(self) -> None:
        if not self._ended:
            self._ended = True
            self._events.put_nowait(None)

    def _emit(self, event: RecognitionEvent) -> None:
        backlog = self._events.qsize()
        if isinstance(event, Interim) and backlog >= MAX_INTERIMS_QUEUED:
            return
        if backlog >= MAX_EVENTS_QUEUED:
            raise ResourceExhausted("recognition results are not being read; the stream was closed")
        self._events.put_nowait(event)

    async def _on_segment(self, seg: SegmentEvent | None) -> None:
        if seg is None:
            return
        if isinstance(seg, Started):
            self._last_interim_ms = seg.offset_ms
            self._emit(SpeechStarted(seg.offset_ms))
        elif isinstance(seg, Paused):
            self._drop_speculative()
            task = self._loop.create_task(self._transcribe(seg.pcm, True), name="stt-speculative")
            self._speculative = (seg.start_ms, seg.end_ms, task)
        else:
            await self._final(seg)

    async def _final(self, seg: Segment) -> None:
        self._generation += 1
        spec, self._speculative = self._speculative, None
        if not seg.too_short:
            if spec is not None and spec[:2] == (seg.start_ms, seg.end_ms):
                # No speech since the silence began: the early transcription is the final one.
                result = await spec[2]
            else:
                if spec is not None:
                    spec[2].cancel()
                result = await self._transcribe(seg.pcm, True)
            if result.text:
                words = tuple(
                    Word(w.word, w.start_ms + seg.start_ms, w.end_ms + seg.start_ms, w.confidence)
                    for w in result.words
                )
                self._emit(
                    Final(result.text, result.confidence, words, seg.start_ms, seg.end_ms, seg.speech_final)
                )
        if seg.utterance_over:
            self._emit(UtteranceEnd(seg.last_voice_ms))

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative[2].cancel()
            self._speculative = None

    def _busy(self) -> bool:
        if self._interim_task is not None and not self._interim_task.done():
            return True
        return self._speculative is not None and not self._speculative[2].done()

    def _maybe_interim(self) -> None:
        if not self._options.interim_results or not self._tracker.in_speech or self._busy():
            return
        now_ms = self._tracker.position_ms  # audio time: independent of how fast audio arrives
        if now_ms - self._last_interim_ms < self._res.interim_interval_ms:
            return
        self._last_interim_ms = now_ms
        pcm, start_ms, end_ms = self._tracker.utterance()
        self._interim_task = self._loop.create_task(
            self._interim(pcm, start_ms, end_ms, self._generation), name="stt-interim"
        )

    async def _interim(self, pcm: bytes, start_ms: int, end_ms: int, generation: int) -> None:
        try:
            result = await self._transcribe(pcm, False)
        except Exception:  # an interim is best-effort; the final reports real failures
            log.warning("interim transcription failed", exc_info=True)
            return
        if result.text and generation == self._generation and not self._task.done():
            self._emit(Interim(result.text, start_ms, end_ms))

    async def _transcribe(self, pcm: bytes, words: bool) -> Transcript:
        return await self._loop.run_in_executor(
            self._res.asr_pool, self._res.transcriber.transcribe, pcm, self._options, words
        )
