"""SynthesisStream: streamed text in, ordered audio segments out, around one engine hook.

Text is segmented as it arrives (``tts_svc.segmenter``) and each complete piece is queued for
synthesis at once. One runner task per stream synthesizes the pieces strictly in order, one at
a time, and hands each result to a one-slot queue: piece k+1 is synthesized while piece k is
being sent, and a stream whose client reads slowly stops synthesizing (at most one finished
piece waits for the reader, plus the one the runner holds). One job at a time per stream also
keeps a long reply from filling the shared engine pool ahead of other streams' first sentences.

A flush is a marker in the same queue, so its FlushDone follows the audio of everything before
it. ``aclose()`` cancels the runner: the piece being synthesized is abandoned (the engine must
stop its executor job as soon as it can) and queued pieces never start.

An engine with ``open_session`` (a streaming provider, or the provider chain) gets one session
per stream, opened at the first piece and closed when the runner ends: each piece's audio is
passed on chunk by chunk as it arrives (first chunk tagged with the piece's text, the rest
untagged), so the client hears a long sentence start before it is fully synthesized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from common.errors import EngineError, VoiceAIError
from common.tasks import cancel_and_wait
from tts_svc.providers.base import SynthesisOptions, SynthesisSession, Synthesizer
from tts_svc.segmenter import Segmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AudioSegment:
    """Audio for one piece of text (a sentence or clause), or the next part of it when streamed
    (``text`` empty): PCM16 mono at ``rate`` (0 = the engine's ``sample_rate``)."""

    pcm: bytes
    text: str
    rate: int = 0
    # With ``text``: which provider (and model) synthesized the piece, for usage by provider.
    # Not part of a segment's identity (tests compare audio and text): who spoke is metadata.
    provider: str = field(default="", compare=False)
    model: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class FlushDone:
    """Everything pushed before the matching ``flush()`` has been yielded as audio.

    ``characters`` counts all text pushed into the stream up to that flush.
    """

    characters: int


SynthesisEvent = AudioSegment | FlushDone


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str


class _End:
    """End of input (in the work queue) or of the stream (in the event queue)."""


_END: Final = _End()


class SynthesisStream:
    """One client stream's text -> ordered audio pipeline (see module docstring).

    Lifecycle: ``push_text``/``flush`` any number of times (never block), ``end_input`` once,
    ``async for event in stream`` (AudioSegment / FlushDone in input order), ``aclose()`` always.
    """

    def __init__(
        self,
        engine: Synthesizer,
        options: SynthesisOptions,
        segmenter: Segmenter | None = None,
        *,
        name: str = "tts-synthesis",
    ) -> None:
        self._engine = engine
        self._options = options
        self._segmenter = segmenter or Segmenter()
        self._name = name
        self._work: deque[_Piece | FlushDone | _End] = deque()
        self._work_added = asyncio.Event()
        # One slot: the runner waits for the reader before synthesizing further ahead.
        self._events: asyncio.Queue[SynthesisEvent | _End | Exception] = asyncio.Queue(maxsize=1)
        self._runner: asyncio.Task[None] | None = None
        self._queued_chars = 0
        self._characters = 0
        self._input_ended = False
        self._closed = False
        self._finished = False

    # ------------------------------------------------------------------ input

    @property
    def pending_chars(self) -> int:
        """Text waiting to be synthesized (buffered or queued), plus one per pending flush.

        The servicer bounds this: a client that sends text faster than it reads audio is stopped.
        """
        return self._segmenter.pending + self._queued_chars

    def push_text(self, text: str) -> None:
        """More text to speak (any size, e.g. one LLM token). Never blocks."""
        self._check_open()
        self._characters += len(text)
        for piece in self._segmenter.push(text):
            self._queued_chars += len(piece)
            self._queue(_Piece(piece))

    def flush(self) -> None:
        """Speak everything pushed so far, even an unfinished sentence; then a FlushDone."""
        self._check_open()
        rest = self._segmenter.flush()
        if rest:
            self._queued_chars += len(rest)
            self._queue(_Piece(rest))
        self._queued_chars += 1
        self._queue(FlushDone(self._characters))

    def end_input(self) -> None:
        """No more text: iteration ends after the events for what was pushed and flushed."""
        self._check_open()
        self._input_ended = True
        self._queue(_END)

    def _check_open(self) -> None:
        if self._input_ended or self._closed:
            raise RuntimeError("the stream's input has ended")

    def _queue(self, item: _Piece | FlushDone | _End) -> None:
        self._work.append(item)
        self._work_added.set()
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    # ------------------------------------------------------------------ work

    async def _run(self) -> None:
        session: SynthesisSession | None = None
        try:
            while True:
                while not self._work:
                    self._work_added.clear()
                    await self._work_added.wait()
                item = self._work.popleft()
                if isinstance(item, _End):
                    await self._events.put(_END)
                    return
                if isinstance(item, FlushDone):
                    self._queued_chars -= 1
                    await self._events.put(item)
                    continue
                open_session = getattr(self._engine, "open_session", None)
                if open_session is None:
                    pcm = await self._engine.synthesize(item.text, self._options)
                    self._queued_chars -= len(item.text)
                    name = getattr(self._engine, "name", "")
                    await self._events.put(AudioSegment(pcm, item.text, 0, name, self._options.model))
                    continue
                if session is None:
                    session = open_session(self._options)
                await self._stream_piece(session, item.text)
        except Exception as error:  # delivered to the reader, which raises it
            log.error("speech synthesis failed in %s", self._name, exc_info=error)
            await self._events.put(error)
        finally:
            if session is not None:
                await session.aclose()  # bounded by the session; runs on cancellation too

    async def _stream_piece(self, session: SynthesisSession, text: str) -> None:
        tag = text  # only the piece's first chunk carries its text
        # A chain that restarts the piece on another provider counts it: tag the restart too.
        restarts = getattr(session, "piece_restarts", 0)
        # aclosing: a cancelled stream closes the piece's iterator now, not at garbage collection,
        # so the session learns at once that the rest of the piece was abandoned.
        async with contextlib.aclosing(session.synthesize_stream(text)) as chunks:
            async for pcm in chunks:
                now = getattr(session, "piece_restarts", 0)
                if now != restarts:
                    tag, restarts = text, now
                await self._events.put(self._segment(session, pcm, tag))
                tag = ""
        self._queued_chars -= len(text)
        if tag:  # no audio at all: still report the text, as the whole-piece path does
            await self._events.put(self._segment(session, b"", tag))

    def _segment(self, session: SynthesisSession, pcm: bytes, tag: str) -> AudioSegment:
        if not tag:
            return AudioSegment(pcm, tag, session.sample_rate)
        provider = getattr(session, "provider", "") or getattr(self._engine, "name", "")
        model = getattr(session, "model", self._options.model)
        return AudioSegment(pcm, tag, session.sample_rate, provider, model)

    # ------------------------------------------------------------------ output

    def __aiter__(self) -> SynthesisStream:
        return self

    async def __anext__(self) -> SynthesisEvent:
        """The next event in input order; raises ``EngineError`` (without the text) on failure."""
        if self._finished:
            raise StopAsyncIteration
        item = await self._events.get()
        if isinstance(item, _End):
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self._finished = True
            if isinstance(item, VoiceAIError):
                raise item  # the engine's own status (e.g. a remote's UNAVAILABLE), written to be shown
            raise EngineError(f"speech synthesis failed ({type(item).__name__})") from item
        return item

    async def aclose(self) -> None:
        """Stop all work now (idempotent): queued pieces never start, iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._work.clear()
        await cancel_and_wait(self._runner)
        # Wake a reader waiting in __anext__; nothing else will be produced.
        while not self._events.empty():
            self._events.get_nowait()
        self._events.put_nowait(_END)
