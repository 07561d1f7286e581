"""TextToSpeechService servicer: config, then text and flushes in; tagged audio chunks out.

Thin: validation, limits and protobuf <-> stream events. Segmenting, ordering and pipelining
live in ``tts_svc.stream``; conversion to the client's format in ``tts_svc.audio_out``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc.aio

from common import context
from common.audio import ALAW, LINEAR16, MULAW, validate_format
from common.engine_metrics import TTS_CHARACTERS, TTS_FIRST_AUDIO
from common.errors import InvalidArgument, ResourceExhausted, VoiceAIError
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.streams import RequestPump, first_config, refuse
from tts_svc.audio_out import AudioOut
from tts_svc.providers.base import SynthesisOptions, Synthesizer, check_voice
from tts_svc.stream import AudioSegment, SynthesisStream

OUTPUT_RATES: dict[int, frozenset[int]] = {
    LINEAR16: frozenset({8000, 16000, 22050, 24000, 48000}),
    MULAW: frozenset({8000}),
    ALAW: frozenset({8000}),
}
MAX_TEXT_BYTES = 4096  # per text message, as the proto documents
MAX_PENDING_CHARS = 64 * 1024
MIN_RATE, MAX_RATE = 0.5, 2.0
R = tts_pb2.StreamingSynthesizeResponse


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServiceServicer):
    """StreamingSynthesize over one Synthesizer engine."""

    def __init__(
        self,
        engine: Synthesizer,
        default_voice: str = "",
        max_pending_chars: int = MAX_PENDING_CHARS,
        max_text_bytes: int = MAX_TEXT_BYTES,
    ) -> None:
        self._engine = engine
        self._default_voice = default_voice
        self._max_pending = max_pending_chars
        self._max_text_bytes = max_text_bytes

    def options(self, cfg: tts_pb2.SynthesisConfig, sample_rate: int = 0) -> SynthesisOptions:
        """Validate a stream's config against this engine; raises InvalidArgument naming the fix."""
        voice = cfg.voice or self._default_voice
        validate = getattr(self._engine, "validate", None)
        if validate is None:
            check_voice(self._engine, voice, cfg.language_code)
        rate = cfg.speaking_rate or 1.0
        if not MIN_RATE <= rate <= MAX_RATE:  # also rejects NaN
            raise InvalidArgument(
                f"config.speaking_rate {cfg.speaking_rate:g} is out of range: use {MIN_RATE}..{MAX_RATE},"
                " or 0 for normal speed"
            )
        options = SynthesisOptions(
            voice=voice,
            language=cfg.language_code,
            speaking_rate=rate,
            providers=tuple(cfg.providers),
            model=cfg.model,
            tenant_id=context.tenant_id(),
            sample_rate=sample_rate,
        )
        if validate is not None:
            validate(options)  # the engine's own checks (a chain checks against its first provider)
        return options

    async def StreamingSynthesize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
        try:
            first, requests = await first_config(request_iterator)
            fmt = validate_format(first.config.audio_format, field="config.audio_format", rates=OUTPUT_RATES)
            options = self.options(first.config, fmt.sample_rate)
        except VoiceAIError as e:
            await refuse(aiter(request_iterator), e, name="tts-refuse")
        stream = SynthesisStream(self._engine, options)
        out = AudioOut(self._engine.sample_rate, fmt)

        first_text_at = 0.0  # metrics hook (issue 16): first audio is timed from the first text

        async def apply(req: tts_pb2.StreamingSynthesizeRequest) -> None:
            nonlocal first_text_at
            if first_text_at == 0.0 and req.text:
                first_text_at = time.perf_counter()
            self._apply(req, stream)

        async def half_closed() -> None:
            stream.flush()  # speak the rest, then the events end
            stream.end_input()

        # Bad input ends the stream at once (on_failure closes it); the error is raised below.
        pump = RequestPump(
            requests, apply, on_half_close=half_closed, on_failure=stream.aclose, name="tts-read"
        )
        try:
            try:
                async for event in stream:
                    if isinstance(event, AudioSegment):
                        if first_text_at > 0.0:  # once per stream
                            TTS_FIRST_AUDIO.labels(self._engine.name).observe(
                                time.perf_counter() - first_text_at
                            )
                            first_text_at = -1.0
                        for chunk in out.segment(
                            event.pcm, event.text, event.rate, event.provider, event.model
                        ):
                            yield R(audio=chunk)
                    else:
                        TTS_CHARACTERS.labels(self._engine.name).inc(event.characters)
                        yield R(flush_done=tts_pb2.FlushDone(characters=event.characters))
            except Exception as e:  # the engine failed: same way out as bad input
                await pump.fail(e)
            if pump.failure is not None:
                await pump.settle()
                raise pump.failure
        finally:
            # Runs on client cancellation too: nothing of this stream outlives the RPC.
            await pump.aclose()
            await stream.aclose()

    def _apply(self, req: tts_pb2.StreamingSynthesizeRequest, stream: SynthesisStream) -> None:
        which = req.WhichOneof("request")
        if which == "text":
            text = req.text
            # A str has at most 4 UTF-8 bytes per character: short texts need no encoding to check.
            if len(text) * 4 > self._max_text_bytes and len(text.encode()) > self._max_text_bytes:
                raise InvalidArgument(
                    f"text message of {len(text.encode())} bytes is over the {self._max_text_bytes}-byte"
                    " limit; split it into several messages"
                )
            if text:
                stream.push_text(text)
        elif which == "flush":
            stream.flush()
        elif which == "config":
            raise InvalidArgument("'config' may only be sent once, as the first message")
        else:
            raise InvalidArgument("empty request: set one of text or flush")
        if stream.pending_chars > self._max_pending:
            raise ResourceExhausted(
                f"over {self._max_pending} characters are waiting to be synthesized; read the audio"
                " before sending more text"
            )
