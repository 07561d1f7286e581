"""TextToSpeechService servicer: config, then text and flushes in; tagged audio chunks out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio

from common.audio import (
    ALAW,
    LINEAR16,
    MULAW,
    Format,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    resample_once,
    validate_format,
)
from common.errors import InvalidArgument
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.streams import first_config
from common.tasks import cancel_and_wait
from tts_svc.providers.base import SynthesisOptions, Synthesizer
from tts_svc.stream import AudioSegment, FlushDone, SynthesisStream

OUTPUT_RATES: dict[int, frozenset[int]] = {
    LINEAR16: frozenset({8000, 16000, 22050, 24000, 48000}),
    MULAW: frozenset({8000}),
    ALAW: frozenset({8000}),
}
MAX_TEXT_BYTES = 4096
MAX_CHUNK_MS = 1000


def encode(pcm: bytes, native_rate: int, fmt: Format) -> bytes:
    """Native PCM16 -> the requested wire format (whole segment: no resampler tail held back)."""
    pcm = resample_once(pcm, native_rate, fmt.sample_rate)
    if fmt.encoding == MULAW:
        return pcm16_to_mulaw(pcm)
    if fmt.encoding == ALAW:
        return pcm16_to_alaw(pcm)
    return pcm


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServiceServicer):
    """StreamingSynthesize over one Synthesizer engine."""

    def __init__(self, engine: Synthesizer, default_voice: str = "", max_pending_chars: int = 65536) -> None:
        self._engine = engine
        self._default_voice = default_voice
        self._max_pending = max_pending_chars

    def _options(self, cfg: tts_pb2.SynthesisConfig) -> SynthesisOptions:
        voice = cfg.voice or self._default_voice
        if voice and voice not in self._engine.voices:
            raise InvalidArgument(
                f"voice {voice!r} is not available; use one of: {', '.join(self._engine.voices)}"
            )
        rate = cfg.speaking_rate or 1.0
        if not 0.5 <= rate <= 2.0:
            raise InvalidArgument("speaking_rate must be between 0.5 and 2 (0 = normal)")
        return SynthesisOptions(voice=voice, language=cfg.language_code, speaking_rate=rate)

    async def StreamingSynthesize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
        first, requests = await first_config(request_iterator)
        fmt = validate_format(first.config.audio_format, field="config.audio_format", rates=OUTPUT_RATES)
        stream = SynthesisStream(self._engine, self._options(first.config), self._max_pending)
        failure: list[BaseException] = []

        async def read() -> None:
            try:
                async for req in requests:
                    which = req.WhichOneof("request")
                    if which == "text":
                        if len(req.text.encode()) > MAX_TEXT_BYTES:
                            raise InvalidArgument(
                                f"text message of {len(req.text.encode())} bytes is over the {MAX_TEXT_BYTES}-byte"
                                " limit; split it into several messages"
                            )
                        stream.push_text(req.text)
                    elif which == "flush":
                        stream.flush()
                    elif which == "config":
                        raise InvalidArgument("'config' may only be sent once, as the first message")
                    else:
                        raise InvalidArgument("empty request: set one of text or flush")
                stream.flush()
            except Exception as e:  # reported through the response stream below
                failure.append(e)
            finally:
                stream.end_input()

        reader = asyncio.get_running_loop().create_task(read(), name="tts-read")
        max_chunk = fmt.bytes_for_ms(MAX_CHUNK_MS)
        try:
            async for event in stream.events():
                if failure:
                    break
                if isinstance(event, FlushDone):
                    yield tts_pb2.StreamingSynthesizeResponse(
                        flush_done=tts_pb2.FlushDone(characters=event.characters)
                    )
                    continue
                yield_text = event.text
                for chunk in _split(encode(event.pcm, self._engine.sample_rate, fmt), max_chunk, fmt):
                    yield tts_pb2.StreamingSynthesizeResponse(
                        audio=tts_pb2.AudioChunk(
                            audio=chunk, text=yield_text, duration_ms=round(fmt.ms_for_bytes(len(chunk)))
                        )
                    )
                    yield_text = ""
            if failure:
                raise failure[0]
        finally:
            await cancel_and_wait(reader)
            await stream.aclose()


def _split(audio: bytes, max_bytes: int, fmt: Format) -> list[bytes]:
    if len(audio) <= max_bytes:
        return [audio] if audio else [b""]
    step = max_bytes - max_bytes % fmt.bytes_per_sample
    return [audio[i : i + step] for i in range(0, len(audio), step)]


__all__ = ["AudioSegment", "TextToSpeechServicer"]
