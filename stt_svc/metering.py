"""What each provider of a recognition stream was sent, for usage by provider and model.

``MeteredRecognizer`` sits directly in front of a provider (behind any gate), so it counts the
audio the provider really received and bills: a chain that fails over and replays audio to the
next link counts the replay for that link too. The stream's ``StreamUsage`` (in its options)
collects the counts; the servicer reports them as deltas (``take``) at each utterance end and
when the stream ends, so a stream the gateway cancels at hangup loses at most its tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from common.gen.voiceai.common.v1 import usage_pb2
from common.pricing import line
from stt_svc.providers.base import (
    ENGINE_RATE,
    RecognitionEvent,
    RecognitionOptions,
    Recognizer,
    RecognizeStream,
)

_BYTES_PER_MS = ENGINE_RATE * 2 // 1000


class StreamUsage:
    """Milliseconds of audio sent per (provider, model) in one stream, reported as deltas."""

    __slots__ = ("_bytes", "_reported")

    def __init__(self) -> None:
        self._bytes: dict[tuple[str, str, str], int] = {}
        self._reported: dict[tuple[str, str, str], int] = {}

    def add(self, provider: str, model: str, nbytes: int, key_label: str = "") -> None:
        """``nbytes`` of PCM16 16 kHz went to ``provider`` (paid with the ``key_label`` key)."""
        key = (provider, model, key_label)
        self._bytes[key] = self._bytes.get(key, 0) + nbytes

    def take(self) -> usage_pb2.Usage | None:
        """Usage since the last ``take`` (None when there is none)."""
        lines = []
        for key, total in self._bytes.items():
            new = total - self._reported.get(key, 0)
            ms = new // _BYTES_PER_MS
            if ms <= 0:
                continue
            self._reported[key] = self._reported.get(key, 0) + ms * _BYTES_PER_MS
            lines.append(line("stt", key[0], "second", ms, model=key[1], key_label=key[2]))
        if not lines:
            return None
        return usage_pb2.Usage(stt_seconds=sum(ln.quantity_milli for ln in lines) / 1000.0, lines=lines)


class MeteredStream:
    """A provider stream that counts what it is sent."""

    def __init__(self, inner: RecognizeStream, usage: StreamUsage, provider: str, model: str) -> None:
        self._inner = inner
        self._usage = usage
        self._who = (provider, model)

    async def push_audio(self, pcm16: bytes) -> None:
        self._usage.add(*self._who, len(pcm16), getattr(self._inner, "key_label", ""))
        await self._inner.push_audio(pcm16)

    async def finalize(self) -> None:
        await self._inner.finalize()

    async def end_input(self) -> None:
        await self._inner.end_input()

    def events(self) -> AsyncIterator[RecognitionEvent]:
        return self._inner.events()

    async def aclose(self) -> None:
        await self._inner.aclose()


class MeteredRecognizer:
    """A provider whose streams count their audio into the stream's ``StreamUsage``."""

    def __init__(self, inner: Recognizer, default_model: str = "") -> None:
        self.inner = inner
        self.name = inner.name
        self._default_model = default_model

    async def open(self, options: RecognitionOptions) -> RecognizeStream:
        """The provider's stream, metered when the stream has a ``StreamUsage``."""
        stream = await self.inner.open(options)
        if options.usage is None:
            return stream
        return MeteredStream(stream, options.usage, self.name, options.model or self._default_model)

    def __getattr__(self, attr: str) -> object:
        return getattr(self.inner, attr)


def provider_of(engine: object) -> object:
    """The provider itself under any meter or gate wrapped around it."""
    # Only a wrapper's own ``inner`` (its __getattr__ would find one on the provider too).
    while (inner := getattr(engine, "__dict__", {}).get("inner")) is not None:
        engine = inner
    return engine


def with_usage(options: RecognitionOptions) -> RecognitionOptions:
    """``options`` carrying a fresh ``StreamUsage``."""
    return replace(options, usage=StreamUsage())


__all__ = ["MeteredRecognizer", "MeteredStream", "StreamUsage", "provider_of", "with_usage"]
