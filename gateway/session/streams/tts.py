"""The synthesis hop as a typed stream: text in, ``SpeechEvent``s out.

The adapter is the only place that knows the ``voiceai.tts.v1`` messages; a reply writes text,
ends the input (the service flushes at the end of input) and reads ``SpeechAudio`` chunks until
``SpeechFlushed``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.audio import Format
from common.discovery import ChannelPool
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from gateway import call_trace
from gateway.agents import Agent
from gateway.session.instances import TrackedCall
from gateway.session.streams._context import call_metadata


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Synthesized audio in the caller's format; ``text`` is set on the first chunk of a piece."""

    text: str
    audio: bytes
    # The provider and model that spoke this piece (set with ``text``, on a piece's first chunk).
    provider: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class SpeechFlushed:
    """Every text written before the end of input (or a flush) has been spoken."""


SpeechEvent = SpeechAudio | SpeechFlushed
_FLUSHED = SpeechFlushed()


def synthesis_config(agent: Agent, fmt: Format) -> tts_pb2.SynthesisConfig:
    """The synthesis config for ``agent``'s voice in the caller's format."""
    return tts_pb2.SynthesisConfig(
        voice=agent.voice,
        audio_format=fmt.to_proto(),
        language_code=agent.language_code,
        providers=list(agent.tts_providers),
        model=agent.tts_model,
    )


class TtsStream:
    """One StreamingSynthesize call with its config sent: write text, end input, read events."""

    __slots__ = ("_call",)

    def __init__(self, call: TrackedCall) -> None:
        self._call = call

    async def write_text(self, text: str) -> None:
        """More text to speak (at most 4 KiB of UTF-8 per write)."""
        await self._call.write(tts_pb2.StreamingSynthesizeRequest(text=text))

    async def end_input(self) -> None:
        """No more text: the service speaks what it has and ends with ``SpeechFlushed``."""
        await self._call.done_writing()

    async def events(self) -> AsyncIterator[SpeechEvent]:
        """Audio chunks as they are synthesized, then ``SpeechFlushed`` (the stream ends there)."""
        async for resp in self._call:
            kind = resp.WhichOneof("event")
            if kind == "audio":
                a = resp.audio
                yield SpeechAudio(a.text, a.audio, a.provider, a.model)
            elif kind == "flush_done":
                yield _FLUSHED
                return


@contextlib.asynccontextmanager
async def open_tts_stream(pool: ChannelPool, config: tts_pb2.SynthesisConfig) -> AsyncIterator[TtsStream]:
    """A StreamingSynthesize call with ``config`` sent, cancelled on exit."""
    async with pool.lease() as lease:
        span = call_trace.client_span("tts.StreamingSynthesize", lease.address)
        call = TrackedCall(
            tts_pb2_grpc.TextToSpeechServiceStub(lease.channel).StreamingSynthesize(
                metadata=call_trace.with_traceparent(call_metadata("tts"), span)
            ),
            pool.service,
            lease.address,
        )
        error: BaseException | None = None
        try:
            await call.write(tts_pb2.StreamingSynthesizeRequest(config=config))
            yield TtsStream(call)
        except BaseException as e:
            error = e
            raise
        finally:
            call.cancel()
            call_trace.end_client(span, error)
