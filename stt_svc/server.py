"""SpeechToTextService servicer: config, then audio in; speech events out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc.aio

from common.audio import LINEAR16, MULAW, Decoder, validate_format
from common.engine_metrics import STT_AUDIO_SECONDS, final_metrics
from common.errors import InvalidArgument, VoiceAIError
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.streams import RequestPump, first_config, refuse
from stt_svc.metering import StreamUsage
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

RATES = frozenset({8000, 16000, 48000})
INPUT_RATES: dict[int, frozenset[int]] = {LINEAR16: RATES, MULAW: RATES}  # as the proto documents
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 100
MAX_CHUNK_MS = 1000
# Below ~100 ms a pause between words would end the utterance (and the VAD window is 32 ms).
MIN_ENDPOINTING_MS = 100
MAX_ENDPOINTING_MS = 5000
R = stt_pb2.StreamingRecognizeResponse
log = logging.getLogger(__name__)


def to_proto(event: RecognitionEvent) -> stt_pb2.StreamingRecognizeResponse:
    """A recognition event as the response that carries it."""
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
    """StreamingRecognize over one Recognizer engine: validation and protobuf <-> events only."""

    def __init__(self, engine: Recognizer, default_endpointing_ms: int = 400) -> None:
        self._engine = engine
        self._default_endpointing_ms = default_endpointing_ms

    def _options(self, cfg: stt_pb2.RecognitionConfig) -> RecognitionOptions:
        if len(cfg.keyterms) > MAX_KEYTERMS:
            raise InvalidArgument(f"config.keyterms has {len(cfg.keyterms)} terms; at most {MAX_KEYTERMS}")
        for i, term in enumerate(cfg.keyterms):
            if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
                raise InvalidArgument(
                    f"config.keyterms[{i}] has {len(term)} characters; each must be 1-{MAX_KEYTERM_CHARS}"
                    " (not blank)"
                )
        if cfg.endpointing_ms and not MIN_ENDPOINTING_MS <= cfg.endpointing_ms <= MAX_ENDPOINTING_MS:
            raise InvalidArgument(
                f"config.endpointing_ms {cfg.endpointing_ms} is out of range: use"
                f" {MIN_ENDPOINTING_MS}..{MAX_ENDPOINTING_MS}, or 0 for the service default"
            )
        return RecognitionOptions(
            language=cfg.language_code or "en-US",
            interim_results=cfg.interim_results,
            keyterms=tuple(t.strip() for t in cfg.keyterms),
            endpointing_ms=cfg.endpointing_ms or self._default_endpointing_ms,
            model=cfg.model,
            providers=tuple(cfg.providers),
            redact_pii=cfg.redact_pii,
        )

    async def StreamingRecognize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        try:
            first, requests = await first_config(request_iterator)
            fmt = validate_format(first.config.audio_format, field="config.audio_format", rates=INPUT_RATES)
            meter = StreamUsage()  # issue 17: what each provider was sent (stt_svc/metering.py)
            options = replace(self._options(first.config), usage=meter)
            stream = await self._engine.open(options)
        except VoiceAIError as e:
            await refuse(aiter(request_iterator), e, name="stt-refuse")
        decoder = Decoder(fmt, ENGINE_RATE)
        max_bytes = fmt.bytes_for_ms(MAX_CHUNK_MS)
        received = 0  # bytes of audio, for the closing log line

        async def handle(req: stt_pb2.StreamingRecognizeRequest) -> None:
            nonlocal received
            which = req.WhichOneof("request")
            if which == "audio":
                n = len(req.audio)
                if n > max_bytes:
                    raise InvalidArgument(
                        f"audio message of {fmt.ms_for_bytes(n):.0f} ms is over the {MAX_CHUNK_MS} ms"
                        " limit; send smaller chunks (20-100 ms is typical)"
                    )
                if n % fmt.bytes_per_sample:
                    raise InvalidArgument(
                        f"LINEAR16 audio must be whole 16-bit samples (an even number of bytes); got {n} bytes"
                    )
                received += n
                await stream.push_audio(decoder.decode(req.audio))
            elif which == "finalize":
                await stream.finalize()
            elif which == "config":
                raise InvalidArgument("'config' may only be sent once, as the first message")
            else:
                raise InvalidArgument("empty request: set one of audio or finalize")

        # Half-close: finals for buffered speech, then the events end. Bad input closes the
        # stream at once (its events end) and the error is raised below.
        pump = RequestPump(
            requests, handle, on_half_close=stream.end_input, on_failure=stream.aclose, name="stt-read"
        )
        finals = 0
        engine = self._engine.name
        try:
            try:
                async for event in stream.events():
                    if isinstance(event, Final):  # metrics hook (issue 16)
                        finals += 1
                        final_metrics(engine, (fmt.ms_for_bytes(received) - event.end_ms) / 1000.0)
                    yield to_proto(event)
                    if isinstance(event, UtteranceEnd) and (used := meter.take()) is not None:
                        yield stt_pb2.StreamingRecognizeResponse(usage=used)
                if (used := meter.take()) is not None:  # the stream's tail
                    yield stt_pb2.StreamingRecognizeResponse(usage=used)
            except Exception as e:  # the engine failed: same way out as bad input
                await pump.fail(e)
            if pump.failure is not None:
                await pump.settle()
                raise pump.failure
        finally:
            # Runs on client cancellation too: nothing of this stream outlives the RPC.
            await pump.aclose()
            await stream.aclose()
            STT_AUDIO_SECONDS.labels(engine).inc(fmt.ms_for_bytes(received) / 1000.0)
            log.info(
                "recognition stream closed: %s, %.1f s of audio, %d finals",
                fmt.describe(),
                fmt.ms_for_bytes(received) / 1000.0,
                finals,
            )
