"""SpeechToTextService servicer: config, then audio in; speech events out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio

from common.audio import LINEAR16, MULAW, Decoder, validate_format
from common.errors import InvalidArgument
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.streams import first_config
from common.tasks import cancel_and_wait
from stt_svc.providers.base import (
    ENGINE_RATE,
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    Recognizer,
    SpeechStarted,
    UtteranceEnd,
)

INPUT_RATES: dict[int, frozenset[int]] = {
    LINEAR16: frozenset({8000, 16000, 48000}),
    MULAW: frozenset({8000}),
}
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 100
R = stt_pb2.StreamingRecognizeResponse


def to_proto(event: RecognitionEvent) -> stt_pb2.StreamingRecognizeResponse:
    if isinstance(event, Final):
        return R(
            final=stt_pb2.FinalResult(
                text=event.text,
                confidence=event.confidence,
                words=[
                    stt_pb2.WordInfo(
                        word=w.word, start_ms=w.start_ms, end_ms=w.end_ms, confidence=w.confidence
                    )
                    for w in event.words
                ],
                start_ms=event.start_ms,
                end_ms=event.end_ms,
                speech_final=event.speech_final,
            )
        )
    if isinstance(event, Interim):
        return R(interim=stt_pb2.Hypothesis(text=event.text, start_ms=event.start_ms, end_ms=event.end_ms))
    if isinstance(event, SpeechStarted):
        return R(speech_started=stt_pb2.SpeechStarted(offset_ms=event.offset_ms))
    if isinstance(event, UtteranceEnd):
        return R(utterance_end=stt_pb2.UtteranceEnd(last_word_end_ms=event.last_word_end_ms))
    raise TypeError(event)


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServiceServicer):
    """StreamingRecognize over one Recognizer engine."""

    def __init__(self, engine: Recognizer, default_endpointing_ms: int = 400) -> None:
        self._engine = engine
        self._default_endpointing_ms = default_endpointing_ms

    def _options(self, cfg: stt_pb2.RecognitionConfig) -> RecognitionOptions:
        if len(cfg.keyterms) > MAX_KEYTERMS:
            raise InvalidArgument(f"config.keyterms has {len(cfg.keyterms)} terms; at most {MAX_KEYTERMS}")
        for i, term in enumerate(cfg.keyterms):
            if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
                raise InvalidArgument(f"config.keyterms[{i}] must be 1-{MAX_KEYTERM_CHARS} characters")
        if cfg.endpointing_ms and not 100 <= cfg.endpointing_ms <= 5000:
            raise InvalidArgument("config.endpointing_ms must be 100..5000 (0 = service default)")
        return RecognitionOptions(
            language=cfg.language_code or "en-US",
            interim_results=cfg.interim_results,
            keyterms=tuple(cfg.keyterms),
            endpointing_ms=cfg.endpointing_ms or self._default_endpointing_ms,
            model=cfg.model,
        )

    async def StreamingRecognize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        first, requests = await first_config(request_iterator)
        fmt = validate_format(first.config.audio_format, field="config.audio_format", rates=INPUT_RATES)
        options = self._options(first.config)
        decoder = Decoder(fmt, ENGINE_RATE)
        max_bytes = fmt.bytes_for_ms(1000)
        stream = await self._engine.open(options)
        failure: list[BaseException] = []

        async def read() -> None:
            try:
                async for req in requests:
                    which = req.WhichOneof("request")
                    if which == "audio":
                        n = len(req.audio)
                        if n > max_bytes:
                            raise InvalidArgument(
                                f"audio message of {fmt.ms_for_bytes(n):.0f} ms is over the 1000 ms limit;"
                                " send smaller chunks (20-100 ms is typical)"
                            )
                        if n % fmt.bytes_per_sample:
                            raise InvalidArgument(
                                f"LINEAR16 audio must be whole 16-bit samples; got {n} bytes"
                            )
                        await stream.push_audio(decoder.decode(req.audio))
                    elif which == "finalize":
                        await stream.finalize()
                    elif which == "config":
                        raise InvalidArgument("'config' may only be sent once, as the first message")
                    else:
                        raise InvalidArgument("empty request: set one of audio or finalize")
            except Exception as e:  # reported through the response stream
                failure.append(e)
            finally:
                await stream.end_input()

        reader = asyncio.get_running_loop().create_task(read(), name="stt-read")
        try:
            async for event in stream.events():
                if failure:
                    break
                yield to_proto(event)
            if failure:
                raise failure[0]
        finally:
            await cancel_and_wait(reader)
            await stream.aclose()
