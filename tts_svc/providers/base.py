"""The Synthesizer Protocol every tts_svc engine implements.

An engine fills one hook, ``synthesize`` (one piece of text -> PCM16 at its native rate);
``tts_svc.stream.SynthesisStream`` owns segmentation, ordering, pipelining and cancellation,
and the servicer converts the audio to the format the client asked for.

Streaming engines (cloud providers, and the chain that composes them) also offer
``open_session(options)``: a stream-scoped ``SynthesisSession`` whose ``synthesize_stream``
yields a piece's audio as it arrives. It is per stream, not per piece, because what streaming
providers keep between pieces belongs to one stream: an open websocket (Deepgram speaks many
pieces over one connection) and, for the chain, which provider the stream has fallen back to.
``SynthesisStream`` uses the session when the engine has one and ``synthesize`` otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from common.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class SynthesisOptions:
    """How one stream is spoken (validated by the servicer against the engine)."""

    voice: str = ""  # "" = the engine's default voice
    language: str = ""  # BCP-47; "" = the voice's own language
    speaking_rate: float = 1.0  # 0.5..2; 1 = the voice's natural pace
    # Provider chain of the stream (config.providers); () = the service's default chain.
    providers: tuple[str, ...] = ()
    model: str = ""  # provider-specific model; "" = the provider's default
    tenant_id: str = ""  # whose provider key is used ("" = the deployment's key)
    # The client's PCM rate: a provider that can produce it natively is asked for it, so its
    # streamed chunks need no resampling. 0 = no preference.
    sample_rate: int = 0


class SynthesisSession(Protocol):
    """One stream's connection to a streaming engine: pieces in order, one at a time."""

    # PCM16 rate of the audio ``synthesize_stream`` yields (may differ per session).
    sample_rate: int

    def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        """PCM16 mono chunks (even lengths) for one piece, yielded as they arrive.

        Ends when the piece is complete. Closing the iterator early (the stream was cancelled)
        must leave the session either reusable (the provider confirmed it dropped the rest) or
        closed; it must never deliver the abandoned piece's audio into a later one.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection and any concurrency slot; bounded in time, idempotent."""
        ...


class Synthesizer(Protocol):
    """A synthesis engine: one per process (model loaded once), shared by all its streams.

    Optional members, looked up with ``getattr``: ``language`` (BCP-47 the voices speak; a
    stream asking for another primary language is refused), a blocking ``warm_up()`` run
    before the service reports SERVING, ``open_session(options) -> SynthesisSession`` (see the
    module docstring) and ``validate(options)`` (raises InvalidArgument/FailedPrecondition for
    options this engine cannot serve; when present it replaces the servicer's voice check).
    """

    name: str
    # PCM16 rate of every piece this engine returns.
    sample_rate: int
    # Names accepted in SynthesisOptions.voice ("" always means the default).
    voices: tuple[str, ...]

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """PCM16 mono at ``sample_rate`` for one sentence or clause.

        Must not block the event loop, and must stop its work promptly when cancelled.
        """
        ...


def _primary_language(tag: str) -> str:
    """'en-US', 'en_us', 'EN' -> 'en'."""
    return tag.replace("_", "-").split("-")[0].lower()


def check_voice(engine: Synthesizer, voice: str, language: str) -> None:
    """Refuse a voice the engine lacks, or a language its voices do not speak (InvalidArgument)."""
    if voice and voice not in engine.voices:
        raise InvalidArgument(
            f"voice {voice!r} is not available; use one of: {', '.join(engine.voices)}"
            " (or leave it empty for the default)"
        )
    spoken = getattr(engine, "language", "")
    if language and spoken and _primary_language(language) != _primary_language(spoken):
        raise InvalidArgument(
            f"language_code {language!r} is not spoken by the {engine.name} voices;"
            f" use {spoken} or leave it empty"
        )
