"""AudioOut: one stream's native PCM segments -> AudioChunk messages in the client's format.

Each segment is converted whole (resampled, then G.711-encoded when asked). A streaming
resampler would smooth nothing here: every segment is a separate synthesis that starts and
ends in silence, and a streaming one holds back its filter delay (22-56 ms from Piper's
22.05 kHz) that would then ride in the next segment's chunk or need an extra message before
each FlushDone. Whole-segment conversion keeps every segment's audio in its own chunks.
"""

from __future__ import annotations

from common.audio import ALAW, MULAW, Format, pcm16_to_alaw, pcm16_to_mulaw, resample_once
from common.gen.voiceai.tts.v1 import tts_pb2

MAX_CHUNK_MS = 1000  # one AudioChunk carries at most this much audio


class AudioOut:
    """Converts and chunks one stream's audio for the format its client asked for."""

    __slots__ = ("_max_bytes", "fmt", "native_rate")

    def __init__(self, native_rate: int, fmt: Format, max_chunk_ms: int = MAX_CHUNK_MS) -> None:
        self.native_rate = native_rate
        self.fmt = fmt
        step = fmt.bytes_for_ms(max_chunk_ms)
        self._max_bytes = step - step % fmt.bytes_per_sample

    def encode(self, pcm: bytes, rate: int = 0) -> bytes:
        """PCM16 at ``rate`` (0 = the native rate) -> the wire format."""
        pcm = resample_once(pcm, rate or self.native_rate, self.fmt.sample_rate)
        if self.fmt.encoding == MULAW:
            return pcm16_to_mulaw(pcm)
        if self.fmt.encoding == ALAW:
            return pcm16_to_alaw(pcm)
        return pcm

    def segment(
        self, pcm: bytes, text: str, rate: int = 0, provider: str = "", model: str = ""
    ) -> list[tts_pb2.AudioChunk]:
        """Chunks for one segment: at most ``max_chunk_ms`` each; only the first carries ``text``
        (and the provider/model that spoke it).

        Always at least one chunk, so a segment that yields no audio still reports its text.
        """
        audio = self.encode(pcm, rate)
        step = self._max_bytes
        pieces = [audio[j : j + step] for j in range(0, len(audio), step)] or [audio]
        chunks = [tts_pb2.AudioChunk(audio=piece, duration_ms=self._ms(piece)) for piece in pieces]
        if text:
            first = chunks[0]
            first.text = text
            first.provider = provider
            first.model = model
        return chunks

    def _ms(self, audio: bytes) -> int:
        return round(self.fmt.ms_for_bytes(len(audio)))
