"""ChainSynthesizer: the engine tts_svc serves with, composing its providers per stream.

Each stream runs on the chain its config names (``config.providers``, else the service default),
resolved against the providers this instance has configured (``common.providers.resolve_chain``).
The stream starts on the first link and stays on whichever link is serving it: a provider that
failed is not retried for that stream's later pieces.

When a provider fails (error, deadline, over its concurrency cap) the next link takes over, and
``record_fallback`` counts the switch. What the next link speaks, the *unsent remainder*, is
defined at piece granularity (a piece is a sentence or clause from ``tts_svc.segmenter``):

- pieces whose audio was completely sent are never spoken again;
- the failed piece is spoken again *from its beginning* by the next link, whether or not part
  of its audio had been sent. Providers give no word timings for streamed audio, so the words a
  partial piece covered are unknown; restarting the clause keeps every word (the caller hears
  it restart, its first chunk tagged with its text again) where skipping it would drop words.
  Audio already sent is never re-sent, and no later piece starts before the failed one is done;
- pieces not yet started are spoken by the new link in order.

Voices and models are provider-specific: ``voice`` and ``model`` belong to the chain's first
link. A link taken over by fallback speaks with its own default voice and model (an ElevenLabs
voice id means nothing to Deepgram): the one configured for it (``default_voices``, e.g. the
local engine's VOICEAI_TTS_DEFAULT_VOICE), else the engine's own. Language and rate carry over.

A link's failure is final for the stream when it says so (``ProviderError.fallback`` False: raised
as it is) or no link is left: ``ProviderBusy`` stays RESOURCE_EXHAUSTED; provider errors become
UNAVAILABLE naming each provider and what went wrong; any other engine error is raised unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence

from common.errors import ResourceExhausted, Unavailable
from common.providers import (
    KNOWN_PROVIDERS,
    Link,
    ProviderError,
    failure_kind,
    may_fall_back,
    record_failure,
    record_fallback,
    resolve_chain,
)
from tts_svc.providers.base import SynthesisOptions, SynthesisSession, Synthesizer, check_voice

SERVICE = "tts"
log = logging.getLogger(__name__)


class WholePieceSession:
    """A session over an engine with only ``synthesize``: each piece is one chunk."""

    def __init__(self, engine: Synthesizer, options: SynthesisOptions) -> None:
        self._engine = engine
        self._options = options
        self.sample_rate = engine.sample_rate

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        pcm = await self._engine.synthesize(text, self._options)
        if pcm:
            yield pcm

    async def aclose(self) -> None:
        return None


def open_session(engine: Synthesizer, options: SynthesisOptions) -> SynthesisSession:
    """A stream-scoped session of ``engine`` (its own, or whole pieces for a plain engine)."""
    opener = getattr(engine, "open_session", None)
    return opener(options) if opener is not None else WholePieceSession(engine, options)


class ChainSynthesizer:
    """Owns the configured providers by name and the default chain; one per process."""

    def __init__(
        self,
        providers: Mapping[str, Synthesizer],
        default_chain: Sequence[str] = ("local",),
        default_voices: Mapping[str, str] | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is needed")
        self.providers = dict(providers)
        self.default_chain = tuple(default_chain)
        # Per provider, the voice a stream gets when its config names none (or when the provider
        # took over by fallback); providers without one use their engine's own default.
        self.default_voices = dict(default_voices or {})
        # The local engine (if any) answers the Synthesizer attributes for callers that ask the
        # engine directly (warm-up, logs); streams get the rate of whichever link serves them.
        self._primary = self.providers.get("local") or next(iter(self.providers.values()))
        self.name = "+".join(p.name for p in self.providers.values())
        self.sample_rate = self._primary.sample_rate
        self.voices = self._primary.voices

    def links(self, options: SynthesisOptions) -> list[Link[Synthesizer]]:
        """The stream's chain; InvalidArgument / FailedPrecondition name the config to fix."""
        available = {n: p for n, p in self.providers.items() if _serves(p, options.tenant_id)}
        return resolve_chain(
            SERVICE, options.providers, self.default_chain, KNOWN_PROVIDERS[SERVICE], available
        )

    def link_options(
        self, link: Link[Synthesizer], options: SynthesisOptions, first: bool
    ) -> SynthesisOptions:
        """What a link is asked for: the stream's voice and model go to the first link only."""
        voice = options.voice if first else ""
        model = options.model if first else ""
        return dataclasses.replace(
            options, voice=voice or self.default_voices.get(link.name, ""), model=model
        )

    def validate(self, options: SynthesisOptions) -> None:
        """Voice, model and language are checked against the chain's first link only."""
        link = self.links(options)[0]
        options = self.link_options(link, options, first=True)
        own = getattr(link.engine, "validate", None)
        if own is not None:
            own(options)
        else:
            check_voice(link.engine, options.voice, options.language)

    def open_session(self, options: SynthesisOptions) -> ChainSession:
        return ChainSession(self, self.links(options), options)

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """Whole-piece synthesis through the chain (the Synthesizer protocol's own hook)."""
        session = self.open_session(options)
        try:
            return b"".join([pcm async for pcm in session.synthesize_stream(text)])
        finally:
            await session.aclose()

    def warm_up(self) -> None:
        for provider in self.providers.values():
            warm = getattr(provider, "warm_up", None)
            if warm is not None:
                warm()

    async def aclose(self) -> None:
        """At stop: providers close what they keep between streams (Aura-2's idle sockets get a
        polite Close, not a dropped connection; HTTP pools)."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def _serves(provider: Synthesizer, tenant_id: str) -> bool:
    """A cloud provider without a key for this tenant (nor a keyless self-hosted URL) is skipped."""
    serves = getattr(provider, "serves", None)
    return serves is None or bool(serves(tenant_id))


class ChainSession:
    """One stream's position in its chain and the serving link's session (see module docstring)."""

    def __init__(
        self, chain: ChainSynthesizer, links: list[Link[Synthesizer]], options: SynthesisOptions
    ) -> None:
        self._chain = chain
        self._links = links
        self._options = options
        self._index = 0
        self._session: SynthesisSession | None = None
        self._failures: list[str] = []
        self._closing: list[asyncio.Task[None]] = []  # failed links' sessions, closing
        # Pieces restarted on a new link after part of their audio went out (SynthesisStream
        # tags the restart's first chunk with the piece's text again).
        self.piece_restarts = 0

    @property
    def provider(self) -> str:
        """The link serving the stream now."""
        return self._links[self._index].name

    @property
    def model(self) -> str:
        """The model the serving link is asked for (empty: its default)."""
        return self._chain.link_options(self._links[self._index], self._options, not self._index).model

    @property
    def sample_rate(self) -> int:
        return self._current().sample_rate

    def _current(self) -> SynthesisSession:
        if self._session is None:
            link = self._links[self._index]
            options = self._chain.link_options(link, self._options, first=not self._index)
            self._session = open_session(link.engine, options)
        return self._session

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        while True:
            link = self._links[self._index]
            started = False
            try:
                async with contextlib.aclosing(self._current().synthesize_stream(text)) as chunks:
                    async for pcm in chunks:
                        started = True
                        yield pcm
                return
            except Exception as error:
                record_failure(SERVICE, link.name, error)
                await self._fall_back(link, error)
                if started:
                    self.piece_restarts += 1
                    log.warning("tts: %s failed mid-piece; %s restarts the piece", link.name, self.provider)

    async def _fall_back(self, failed: Link[Synthesizer], error: Exception) -> None:
        """Close the failed link's session and move on, or raise the stream's final error."""
        self._failures.append(f"{failed.name}: {failure_kind(error)}")
        session, self._session = self._session, None
        if session is not None:
            # Closed alongside the next link's first audio, not before it: a polite close of a
            # provider that stopped answering may take its whole close deadline.
            self._closing.append(asyncio.create_task(session.aclose(), name=f"tts-close-{failed.name}"))
        if not may_fall_back(error):
            raise error  # the provider says no other would do better (e.g. the request is wrong)
        if self._index + 1 >= len(self._links):
            if isinstance(error, ResourceExhausted):
                raise error  # the last link is over its cap: RESOURCE_EXHAUSTED with a retry hint
            if isinstance(error, ProviderError):
                raise Unavailable(
                    f"text-to-speech failed on every provider of the chain ({'; '.join(self._failures)});"
                    " retry shortly, or add another provider to the agent's tts_providers"
                ) from error
            raise error
        self._index += 1
        record_fallback(SERVICE, failed.name, self.provider, error)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                await session.aclose()
        finally:
            closing, self._closing = self._closing, []
            if closing:  # each is bounded by its provider's close deadline
                await asyncio.gather(*closing, return_exceptions=True)
