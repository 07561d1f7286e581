"""The recognition hop as a typed stream: caller audio in, ``SttEvent``s out.

The adapter is the only place that knows the ``voiceai.stt.v1`` messages; the call sees
``SpeechStarted``, ``Interim``, ``Final`` and ``UtteranceEnd``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc.aio

from common.audio import Format
from common.discovery import ChannelPool
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from gateway import call_trace
from gateway.session.streams._context import call_metadata


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The recognizer heard the caller start speaking at ``offset_ms`` of the stream."""

    offset_ms: int


@dataclass(frozen=True, slots=True)
class Interim:
    """A tentative transcript of the current utterance."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """A final transcript up to ``end_ms``; ``speech_final`` when the caller stopped speaking."""

    text: str
    end_ms: int
    speech_final: bool


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """The recognizer closed the utterance; the last word ended at ``last_word_end_ms``."""

    last_word_end_ms: int


SttEvent = SpeechStarted | Interim | Final | UtteranceEnd


class SttStream:
    """One StreamingRecognize call: open, send audio, finalize, end input, read events, close."""

    def __init__(self, pool: ChannelPool) -> None:
        self._pool = pool
        self._ctx: Any = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self.address = ""  # the instance it runs on, once open
        self._span: Any = None  # its client span when the call is traced
        # stt_svc's usage reports (audio sent per provider/model/key), for the call's usage fold.
        self.on_usage: Callable[[usage_pb2.Usage], None] | None = None

    async def open(
        self,
        fmt: Format,
        language: str,
        keyterms: tuple[str, ...],
        endpointing_ms: int,
        providers: tuple[str, ...] = (),
        model: str = "",
    ) -> None:
        """Lease an instance, open the stream and send its config."""
        self._ctx = self._pool.lease()
        lease = await self._ctx.__aenter__()
        self.address = lease.address
        self._span = call_trace.client_span("stt.StreamingRecognize", lease.address)
        self._call = stt_pb2_grpc.SpeechToTextServiceStub(lease.channel).StreamingRecognize(
            metadata=call_trace.with_traceparent(call_metadata("stt"), self._span)
        )
        config = stt_pb2.RecognitionConfig(
            language_code=language,
            audio_format=fmt.to_proto(),
            interim_results=True,
            keyterms=list(keyterms),
            endpointing_ms=endpointing_ms,
            providers=list(providers),
            model=model,
        )
        await self._call.write(stt_pb2.StreamingRecognizeRequest(config=config))

    async def send(self, audio: bytes) -> None:
        """Send caller audio in the stream's format."""
        assert self._call is not None
        await self._call.write(stt_pb2.StreamingRecognizeRequest(audio=audio))

    async def finalize(self) -> None:
        """Ask the recognizer for a final of what it has heard so far."""
        assert self._call is not None
        await self._call.write(stt_pb2.StreamingRecognizeRequest(finalize=stt_pb2.Finalize()))

    async def end_input(self) -> None:
        """Half-close: no more audio (the recognizer closes the open utterance)."""
        if self._call is not None:
            with contextlib.suppress(grpc.aio.UsageError, grpc.aio.AioRpcError):
                await self._call.done_writing()

    async def events(self) -> AsyncIterator[SttEvent]:
        """The recognizer's events, typed, until the stream ends."""
        assert self._call is not None
        async for resp in self._call:
            kind = resp.WhichOneof("event")
            if kind == "final":
                f = resp.final
                yield Final(f.text.strip(), int(f.end_ms), f.speech_final)
            elif kind == "interim":
                yield Interim(resp.interim.text.strip())
            elif kind == "speech_started":
                yield SpeechStarted(int(resp.speech_started.offset_ms))
            elif kind == "utterance_end":
                yield UtteranceEnd(int(resp.utterance_end.last_word_end_ms))
            elif kind == "usage" and self.on_usage is not None:
                self.on_usage(resp.usage)

    async def close(self) -> None:
        """Cancel the call explicitly and give the instance lease back."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        span, self._span = self._span, None
        call_trace.end_client(span)
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.__aexit__(None, None, None)
