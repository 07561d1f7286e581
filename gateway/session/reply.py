"""Agent speech for one turn: LLM tokens piped into TTS as they arrive, audio into playout.

The TTS stream is opened alongside the LLM stream, every token delta is forwarded at once,
and the TTS service cuts at sentence/clause boundaries; so the caller hears the first
sentence while the LLM is still writing the rest. Both hops are typed stream objects
(``session.streams``); nothing here sees a protobuf.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common import context
from common.audio import Format
from gateway.agents import Agent
from gateway.phrase_store import RedisPhraseStore, phrase_key
from gateway.session.events import Usage
from gateway.session.history import HistoryEntry
from gateway.session.playout import Playout, Segment
from gateway.session.services import MeshClients
from gateway.session.streams import (
    LlmStream,
    ReplyDone,
    SpeechAudio,
    TokenText,
    TtsStream,
    chat_request,
    open_llm_stream,
    open_tts_stream,
    synthesis_config,
)
from gateway.session.timing import TurnTimer

# Characters per TTS text message: 4 bytes of UTF-8 each at most, under the service's 4 KiB.
MAX_TEXT_CHARS = 1000


@dataclass(slots=True)
class SpokenText:
    """What one reply produced: the full text and the segments queued for playout."""

    text: str = ""
    segments: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class ReplyTurn:
    """One agent reply to speak: what it answers, where its audio goes, what it measures and fills."""

    clients: MeshClients
    agent: Agent
    history: Sequence[HistoryEntry]
    fmt: Format
    playout: Playout
    turn: int
    timer: TurnTimer
    usage: Usage
    spoken: SpokenText


class TextSink(Protocol):
    """Where a ``TextWriter`` writes (a ``TtsStream``)."""

    async def write_text(self, text: str) -> None:
        """More text to speak."""

    async def end_input(self) -> None:
        """No more text."""


class TextWriter:
    """Writes LLM text into a TTS stream as it arrives, then ends the stream's input (the
    service flushes at the end of input). Text that arrives while a write is in flight goes out
    together in the next write: a burst of tokens costs one message, not one per token, and no
    token waits longer than the write already in flight."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._ended = False

    def push(self, text: str) -> None:
        """Queue ``text`` for the next write."""
        self._pending.append(text)
        self._wake.set()

    def end(self) -> None:
        """No more text: end the input once what is queued has gone out."""
        self._ended = True
        self._wake.set()

    async def run(self) -> None:
        """Write until ended and drained, then end the sink's input."""
        while True:
            if self._pending:
                await self._sink.write_text(self._take())
            elif self._ended:
                break
            else:
                self._wake.clear()
                await self._wake.wait()
        await self._sink.end_input()

    def _take(self) -> str:
        """Pending text up to MAX_TEXT_CHARS (the service limits a message to 4 KiB of UTF-8)."""
        pending = self._pending
        n, size = 0, 0
        while n < len(pending) and (n == 0 or size + len(pending[n]) <= MAX_TEXT_CHARS):
            size += len(pending[n])
            n += 1
        text = "".join(pending[:n])
        del pending[:n]
        return text


async def speak_reply(reply: ReplyTurn) -> None:
    """Generate and speak the agent's reply for ``reply.turn``; fills ``reply.spoken`` as it goes."""
    request = chat_request(reply.agent, reply.history)
    # LLM first: its first token is on the critical path, the TTS setup is not. Yielding once
    # lets grpc's task that sends the request run before this turn sets up its TTS stream: when
    # many turns start together, every LLM request goes out before any TTS stream is opened.
    async with open_llm_stream(reply.clients.llm, request) as llm:
        await asyncio.sleep(0)
        async with open_tts_stream(reply.clients.tts, synthesis_config(reply.agent, reply.fmt)) as tts:
            await _pipe_reply(reply, llm, tts)
    if reply.spoken.segments:
        reply.spoken.segments[-1].complete = True
    reply.playout.finish_reply(reply.turn)


async def _pipe_reply(reply: ReplyTurn, llm: LlmStream, tts: TtsStream) -> None:
    """LLM tokens into TTS as they arrive; TTS audio into playout."""
    writer = TextWriter(tts)

    async def pipe_tokens() -> None:
        timer, spoken, usage = reply.timer, reply.spoken, reply.usage
        async for event in llm.events():
            if isinstance(event, TokenText):
                timer.mark("llm_first_token")
                spoken.text += event.text
                usage.tts_characters += len(event.text)
                writer.push(event.text)
            elif isinstance(event, ReplyDone):
                usage.llm_prompt_tokens += event.prompt_tokens
                usage.llm_completion_tokens += event.completion_tokens
                if event.usage is not None:  # per provider/model/key, priced by tenant_svc
                    usage.lines.llm(reply.turn, event.usage)
        writer.end()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(pipe_tokens(), name=f"turn{reply.turn}-llm")
        tg.create_task(writer.run(), name=f"turn{reply.turn}-text")
        tg.create_task(_play_tts(reply, tts), name=f"turn{reply.turn}-tts")


async def _play_tts(reply: ReplyTurn, tts: TtsStream) -> None:
    """Read TTS audio until the flush is done, queueing segments for playout."""
    playout, turn, timer, spoken, usage, fmt = (
        reply.playout,
        reply.turn,
        reply.timer,
        reply.spoken,
        reply.usage,
        reply.fmt,
    )
    seg: Segment | None = None
    async for event in tts.events():
        if not isinstance(event, SpeechAudio):
            continue  # SpeechFlushed: the events end after it
        timer.mark("tts_first_audio")
        if event.text or seg is None:
            if seg is not None:
                seg.complete = True
            seg = playout.start_segment(event.text, turn)
            spoken.segments.append(seg)
        playout.append(seg, event.audio)
        seconds = fmt.ms_for_bytes(len(event.audio)) / 1000.0
        usage.tts_seconds += seconds
        usage.lines.tts_chunk(turn, event.text, event.provider, event.model, seconds)


async def synthesize_text(
    clients: MeshClients, agent: Agent, fmt: Format, text: str, usage: Usage | None = None
) -> list[tuple[str, bytes]]:
    """Whole-text synthesis (greeting, filler, apology) into (text, audio) pieces."""
    pieces: list[tuple[str, bytearray]] = []
    async with open_tts_stream(clients.tts, synthesis_config(agent, fmt)) as tts:
        await tts.write_text(text)
        await tts.end_input()  # the service flushes at the end of input
        async for event in tts.events():
            if isinstance(event, SpeechAudio):
                if event.text or not pieces:
                    pieces.append((event.text, bytearray()))
                pieces[-1][1].extend(event.audio)
                if usage is not None:  # the phrase's synthesis, by provider
                    seconds = fmt.ms_for_bytes(len(event.audio)) / 1000.0
                    usage.lines.tts_chunk(0, event.text, event.provider, event.model, seconds)
    if usage is not None:
        usage.tts_characters += len(text)
        usage.tts_seconds += sum(fmt.ms_for_bytes(len(a)) for _, a in pieces) / 1000.0
    return [(t, bytes(a)) for t, a in pieces]


class PhraseCache:
    """Synthesized audio of short fixed phrases (greeting, filler, apology), per voice and format.

    A filler must play the instant the no-response budget runs out, so it cannot wait on TTS.
    Bounded; oldest entries go first.
    """

    def __init__(self, max_entries: int = 256, shared: RedisPhraseStore | None = None) -> None:
        self._entries: dict[str, list[tuple[str, bytes]]] = {}
        self._max = max_entries
        self._shared = shared  # issue 17: phrase audio shared by all pods (gateway/phrase_store.py)

    @staticmethod
    def _key(agent: Agent, fmt: Format, text: str) -> str:
        return phrase_key(context.tenant_id(), agent, fmt, text)

    def get(self, agent: Agent, fmt: Format, text: str) -> list[tuple[str, bytes]] | None:
        """The cached pieces of ``text`` in ``agent``'s voice and ``fmt``, if synthesized."""
        return self._entries.get(self._key(agent, fmt, text))

    async def warm(
        self, clients: MeshClients, agent: Agent, fmt: Format, text: str
    ) -> list[tuple[str, bytes]]:
        """The pieces of ``text``, synthesized now unless cached."""
        key = self._key(agent, fmt, text)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        if self._shared is not None:
            pieces = await self._shared.fetch_or_make(key, lambda: synthesize_text(clients, agent, fmt, text))
        else:
            pieces = await synthesize_text(clients, agent, fmt, text)
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = pieces
        return pieces
