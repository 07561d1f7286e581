"""A Recognizer over a provider chain: a stream runs on the first provider that works, and moves
down the chain when one fails, without the caller noticing.

Rules (issue 5):
- A provider that fails to open (refused, over its cap, no key) -> the next one.
- A provider that fails after the stream began (dropped connection, missed deadline) -> the
  stream re-opens on the next provider and replays the audio no final has covered yet, kept in a
  bounded buffer (``common.replay.ReplayBuffer``, the one the gateway uses for instance failover;
  see there why both layers replay). The new provider's offsets are shifted onto the stream's timeline; finals and
  hypotheses for audio an earlier final covered are dropped, and a ``SpeechStarted`` inside an
  utterance already announced is not repeated, so the caller sees one well-formed sequence.
- Each switch is counted and logged (``record_fallback``); when no provider is left the stream
  ends with RESOURCE_EXHAUSTED (rate limits, caps) or UNAVAILABLE, naming the last failure.

A provider with several endpoints (self-hosted Deepgram URLs) says so with an ``attempts``
attribute; the chain may open it that many times, so a stream can move to a second endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from common.errors import FailedPrecondition, ResourceExhausted, Unavailable, VoiceAIError
from common.providers import (
    KNOWN_PROVIDERS,
    Link,
    ProviderError,
    may_fall_back,
    record_failure,
    record_fallback,
    resolve_chain,
)
from common.replay import ReplayBuffer
from common.tasks import cancel_and_wait
from stt_svc.providers.base import (
    ENGINE_RATE,
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    Recognizer,
    RecognizeStream,
    SpeechStarted,
    UtteranceEnd,
    Word,
)

log = logging.getLogger(__name__)

BYTES_PER_MS = ENGINE_RATE * 2 // 1000
REPLAY_CHUNK_BYTES = 1000 * BYTES_PER_MS  # replayed audio goes out in 1 s messages
MAX_EVENTS_QUEUED = 256  # a caller this far behind is not reading: the stream fails


class ChainRecognizer:
    """Owns this process's providers by name and the default chain."""

    name = "chain"

    def __init__(
        self, engines: Mapping[str, Recognizer], default: Sequence[str], replay_limit_ms: int = 20_000
    ) -> None:
        self.engines = dict(engines)
        self.default = tuple(default)
        self.replay_limit_ms = replay_limit_ms

    def warm_up(self) -> None:
        """Blocking: warm up the providers that need it (the local model)."""
        for engine in self.engines.values():
            warm = getattr(engine, "warm_up", None)
            if warm is not None:
                warm()

    async def aclose(self) -> None:
        """At stop: providers release what they keep between streams (Deepgram's HTTP pool)."""
        for engine in self.engines.values():
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()

    def attempts(self, options: RecognitionOptions) -> list[Link[Recognizer]]:
        links = resolve_chain("stt", options.providers, self.default, KNOWN_PROVIDERS["stt"], self.engines)
        return [link for link in links for _ in range(max(1, getattr(link.engine, "attempts", 1)))]

    async def open(self, options: RecognitionOptions) -> RecognizeStream:
        attempts = self.attempts(options)
        if len(attempts) == 1 and attempts[0].name == "local":
            return await attempts[0].engine.open(options)  # nothing to fall back to: no wrapper
        stream = ChainStream(attempts, options, self.replay_limit_ms)
        await stream.start()
        return stream


def _shift_words(words: tuple[Word, ...], off: int) -> tuple[Word, ...]:
    return tuple(Word(w.word, w.start_ms + off, w.end_ms + off, w.confidence) for w in words)


class ChainStream:
    """One stream over a chain: owns the current provider stream, the replay buffer and the pump."""

    def __init__(
        self, attempts: list[Link[Recognizer]], options: RecognitionOptions, replay_limit_ms: int
    ) -> None:
        self._attempts = attempts
        self._next = 0
        self._options = options
        self._buffer = ReplayBuffer(replay_limit_ms * BYTES_PER_MS)
        self._current: RecognizeStream | None = None
        self._current_name = ""
        self._offset_ms = 0  # where the current provider's offset 0 sits on the stream timeline
        self._lock = asyncio.Lock()  # audio and switches take turns: a replay is never interleaved
        self._final_end_ms = -1  # end of the last final sent
        self._in_utterance = False
        self._finalize_pending = False
        self._input_ended = False
        self._out: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._pump: asyncio.Task[None] | None = None
        self._ended = False

    @property
    def provider(self) -> str:
        return self._current_name

    async def start(self) -> None:
        await self._open_next(None)
        self._pump = asyncio.get_running_loop().create_task(self._run(), name="stt-chain")

    # ------------------------------------------------------------------ RecognizeStream
    async def push_audio(self, pcm16: bytes) -> None:
        async with self._lock:
            if self._ended:
                return
            self._buffer.append(pcm16)
            assert self._current is not None
            with contextlib.suppress(Exception):  # a failed provider: the pump switches and replays
                await self._current.push_audio(pcm16)

    async def finalize(self) -> None:
        async with self._lock:
            self._finalize_pending = True
            if self._current is not None and not self._ended:
                with contextlib.suppress(Exception):
                    await self._current.finalize()

    async def end_input(self) -> None:
        async with self._lock:
            self._input_ended = True
            if self._current is not None and not self._ended:
                with contextlib.suppress(Exception):
                    await self._current.end_input()

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._out.get()) is not None:
            yield event
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        await cancel_and_wait(self._pump)
        self._end()
        if self._current is not None:
            await self._current.aclose()

    # ------------------------------------------------------------------ switching
    async def _open_next(self, error: BaseException | None) -> None:
        """Open the next provider that opens (counting each switch); raise if none does."""
        failed = self._current_name
        while self._next < len(self._attempts):
            link = self._attempts[self._next]
            self._next += 1
            if error is not None:
                record_fallback("stt", failed or "?", link.name, error)
            try:
                stream = await link.engine.open(self._options)
            except Exception as e:
                record_failure("stt", link.name, e)
                if not may_fall_back(e):
                    raise
                error, failed = e, link.name
                continue
            self._current, self._current_name = stream, link.name
            return
        assert error is not None
        raise _give_up(error)

    async def _replay(self) -> None:
        """Send the new provider the audio no final covers, then what the caller already asked."""
        assert self._current is not None
        since = self._buffer.aligned_start(BYTES_PER_MS)  # from a whole ms: offsets stay integral
        self._offset_ms = since // BYTES_PER_MS
        for piece in self._buffer.pieces(since, REPLAY_CHUNK_BYTES):
            await self._current.push_audio(piece)
        if self._finalize_pending:
            await self._current.finalize()
        if self._input_ended:
            await self._current.end_input()

    async def _switch(self, error: BaseException) -> None:
        """The next provider, with the uncovered audio replayed; one that fails during the
        replay is passed over like one that failed to open."""
        while True:
            await self._open_next(error)
            try:
                await self._replay()
                return
            except Exception as e:
                record_failure("stt", self._current_name, e)
                if not may_fall_back(e):
                    raise
                assert self._current is not None
                await self._current.aclose()
                error = e

    async def _run(self) -> None:
        try:
            while True:
                stream = self._current
                assert stream is not None
                error = await self._drain(stream)
                if error is None:
                    return
                record_failure("stt", self._current_name, error)
                if not may_fall_back(error):
                    raise error
                await stream.aclose()  # first: a push blocked on it returns, freeing the lock
                async with self._lock:
                    await self._switch(error)
        except Exception as e:
            self._failure = e
        finally:
            self._end()

    async def _drain(self, stream: RecognizeStream) -> BaseException | None:
        """Forward ``stream``'s events; None when it ended as asked, else why it failed."""
        events = aiter(stream.events())
        while True:
            try:
                event = await anext(events)
            except StopAsyncIteration:
                if self._input_ended:
                    return None
                return ProviderError(
                    f"stt provider {self._current_name} ended the stream early", kind="disconnect"
                )
            except Exception as e:
                return e
            self._forward(event)  # outside the try: a slow reader is not a provider failure

    def _forward(self, event: RecognitionEvent) -> None:
        off = self._offset_ms
        if isinstance(event, Final):
            end = event.end_ms + off
            if end <= self._final_end_ms:
                return  # an earlier provider's final covers it
            self._final_end_ms = end
            self._finalize_pending = False
            self._buffer.release(end * BYTES_PER_MS, exact=True)
            if off:
                event = Final(
                    event.text,
                    event.confidence,
                    _shift_words(event.words, off),
                    event.start_ms + off,
                    end,
                    event.speech_final,
                )
        elif isinstance(event, Interim):
            if event.end_ms + off <= self._final_end_ms:
                return
            if off:
                event = Interim(event.text, event.start_ms + off, event.end_ms + off)
        elif isinstance(event, SpeechStarted):
            if self._in_utterance:
                return  # a replay re-detects speech the caller was already told about
            self._in_utterance = True
            if off:
                event = SpeechStarted(event.offset_ms + off)
        elif isinstance(event, UtteranceEnd):
            if not self._in_utterance:
                return
            self._in_utterance = False
            if off:
                event = UtteranceEnd(event.last_word_end_ms + off)
        if self._out.qsize() >= MAX_EVENTS_QUEUED:
            raise ResourceExhausted("recognition results are not being read; the stream was closed")
        self._out.put_nowait(event)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._out.put_nowait(None)


def _give_up(error: BaseException) -> BaseException:
    """The error a caller gets when no provider is left: a status it can act on."""
    if isinstance(error, ProviderError):
        if error.kind == "rate_limited":
            return ResourceExhausted(
                f"every STT provider in the chain is unavailable; the last was rate limited: {error}",
                retry_after_s=error.retry_after_s,
                quota_subject="stt.provider_rate_limit",
            )
        if error.kind in ("no_key", "auth"):  # configuration an operator must fix
            return FailedPrecondition(f"no STT provider in the chain could be used; the last: {error}")
        return Unavailable(f"every STT provider in the chain failed; the last: {error}")
    if isinstance(error, VoiceAIError):
        return error  # over cap (RESOURCE_EXHAUSTED), bad options (INVALID_ARGUMENT), ...
    return Unavailable(f"every STT provider in the chain failed; the last: {type(error).__name__}")
