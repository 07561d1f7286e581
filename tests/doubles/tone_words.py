"""An STT double that really transcribes what it is sent: each word is a tone of its own pitch.

``speak(words)`` renders words as tones (word k at 400 + 100*k Hz, 160 ms, 40 ms gaps), and
``ToneWordsStt`` hears them back from the audio alone, 20 ms at a time, whatever the message
boundaries: so a test can tell whether audio was lost, sent twice or sent out of order (the
transcript would be missing, repeating or reordering words). Offsets are from the start of
each stream, like a real recognizer's; the final comes ``endpointing_ms`` (from the config)
after the last voiced frame, as stt_svc's does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from tests.doubles.mesh_services import StreamCounter

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]
WORD_MS = 160
GAP_MS = 40
FRAME_MS = 20
MIN_WORD_FRAMES = 3  # a shorter run of one pitch is a click, not a word


def pitch(word: str) -> float:
    return 400.0 + 100.0 * WORDS.index(word)


def speak(words: list[str], rate: int = 16000, amplitude: int = 8000) -> bytes:
    """PCM16 audio of ``words``: one tone per word, a short gap after each."""
    t = np.arange(rate * WORD_MS // 1000) / rate
    gap = np.zeros(rate * GAP_MS // 1000)
    parts = []
    for word in words:
        parts += [amplitude * np.sin(2 * np.pi * pitch(word) * t), gap]
    return np.concatenate(parts).astype(np.int16).tobytes()


class _Ear:
    """Hears words in 20 ms frames of PCM16; returns the events each frame causes."""

    def __init__(self, rate: int, endpointing_ms: int) -> None:
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self.endpointing_ms = endpointing_ms
        self.pos_ms = 0
        self.in_speech = False
        self.start_ms = 0
        self.last_voice_ms = 0
        self.words: list[str] = []
        self.run: tuple[int, int] = (-1, 0)  # (word index, frames)

    def _close_run(self) -> None:
        index, frames = self.run
        if index >= 0 and frames >= MIN_WORD_FRAMES:
            self.words.append(WORDS[index])
        self.run = (-1, 0)

    def hear(self, samples: np.ndarray) -> list[stt_pb2.StreamingRecognizeResponse]:
        out: list[stt_pb2.StreamingRecognizeResponse] = []
        start = self.pos_ms
        self.pos_ms += FRAME_MS
        if float(np.sqrt(np.mean(samples**2))) > 1000:
            spectrum = np.abs(np.fft.rfft(samples))
            freq = float(np.argmax(spectrum)) * self.rate / len(samples)
            index = min(len(WORDS) - 1, max(0, round((freq - 400.0) / 100.0)))
            if not self.in_speech:
                self.in_speech, self.start_ms, self.words = True, start, []
                out.append(
                    stt_pb2.StreamingRecognizeResponse(speech_started=stt_pb2.SpeechStarted(offset_ms=start))
                )
            if self.run[0] == index:
                self.run = (index, self.run[1] + 1)
            else:
                self._close_run()
                self.run = (index, 1)
            self.last_voice_ms = self.pos_ms
            if self.run[1] == MIN_WORD_FRAMES:
                heard = [*self.words, WORDS[index]]
                out.append(
                    stt_pb2.StreamingRecognizeResponse(interim=stt_pb2.Hypothesis(text=" ".join(heard)))
                )
            return out
        self._close_run()
        if self.in_speech and self.pos_ms - self.last_voice_ms >= self.endpointing_ms:
            self.in_speech = False
            end = self.last_voice_ms
            final = stt_pb2.FinalResult(
                text=" ".join(self.words), start_ms=self.start_ms, end_ms=end, speech_final=True
            )
            out.append(stt_pb2.StreamingRecognizeResponse(final=final))
            out.append(
                stt_pb2.StreamingRecognizeResponse(utterance_end=stt_pb2.UtteranceEnd(last_word_end_ms=end))
            )
        return out


class ToneWordsStt(stt_pb2_grpc.SpeechToTextServiceServicer):
    """LINEAR16 only. ``finals`` lists every final this instance sent, across its streams."""

    def __init__(self) -> None:
        self.streams = StreamCounter()
        self.finals: list[str] = []

    async def StreamingRecognize(
        self, request_iterator, context
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:  # type: ignore[no-untyped-def]  # noqa: N802
        self.streams.enter()
        try:
            first = await anext(aiter(request_iterator))
            cfg = first.config
            ear = _Ear(cfg.audio_format.sample_rate_hertz, cfg.endpointing_ms or 300)
            pending = np.zeros(0, dtype=np.float32)
            async for req in request_iterator:
                if req.WhichOneof("request") != "audio":
                    continue
                pcm = np.frombuffer(req.audio, dtype=np.int16).astype(np.float32)
                pending = np.concatenate([pending, pcm])
                while len(pending) >= ear.frame:
                    frame, pending = pending[: ear.frame], pending[ear.frame :]
                    for resp in ear.hear(frame):
                        if resp.WhichOneof("event") == "final":
                            self.finals.append(resp.final.text)
                        yield resp
        finally:
            self.streams.leave()
