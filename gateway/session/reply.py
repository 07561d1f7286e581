"""Agent speech for one turn: LLM tokens piped into TTS as they arrive, audio into playout.

The TTS stream is opened alongside the LLM stream, every token delta is forwarded at once,
and the TTS service cuts at sentence/clause boundaries; so the caller hears the first
sentence while the LLM is still writing the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc.aio

from common import context
from common.audio import Format
from common.gen.voiceai.llm.v1 import llm_pb2
from common.gen.voiceai.tts.v1 import tts_pb2
from gateway.agents import Agent
from gateway.phrase_store import RedisPhraseStore, phrase_key
from gateway.session.events import Usage
from gateway.session.history import HistoryEntry
from gateway.session.playout import Playout, Segment
from gateway.session.services import MeshClients, llm_stream, text_request, tts_stream
from gateway.session.timing import TurnTimer

_ROLES = {"user": llm_pb2.ROLE_USER, "assistant": llm_pb2.ROLE_ASSISTANT}
# Characters per TTS text message: 4 bytes of UTF-8 each at most, under the service's 4 KiB.
MAX_TEXT_CHARS = 1000


@dataclass(slots=True)
class SpokenText:
    """What one reply produced: the full text and the segments queued for playout."""

    text: str = ""
    segments: list[Segment] = field(default_factory=list)


def chat_request(agent: Agent, history: Sequence[HistoryEntry]) -> llm_pb2.StreamChatRequest:
    messages = [llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=agent.system_prompt)]
    for entry in history:
        messages.append(
            llm_pb2.ChatMessage(role=_ROLES[entry.role], content=entry.text, interrupted=entry.interrupted)
        )
    return llm_pb2.StreamChatRequest(
        messages=messages,
        model=agent.llm_model,
        max_tokens=agent.max_tokens,
        context_token_budget=agent.context_token_budget,
        responder_rules=agent.responder_rules,
        providers=list(agent.llm_providers),
    )


def synthesis_config(agent: Agent, fmt: Format) -> tts_pb2.SynthesisConfig:
    return tts_pb2.SynthesisConfig(
        voice=agent.voice,
        audio_format=fmt.to_proto(),
        language_code=agent.language_code,
        providers=list(agent.tts_providers),
        model=agent.tts_model,
    )


async def _play_tts(
    call: object,
    playout: Playout,
    turn: int,
    timer: TurnTimer | None,
    spoken: SpokenText,
    usage: Usage,
    fmt: Format,
) -> None:
    """Read TTS audio until the flush is done, queueing segments for playout."""
    seg: Segment | None = None
    async for resp in call:  # type: ignore[attr-defined]
        kind = resp.WhichOneof("event")
        if kind == "audio":
            chunk = resp.audio
            if timer is not None:
                timer.mark("tts_first_audio")
            if chunk.text or seg is None:
                if seg is not None:
                    seg.complete = True
                seg = playout.start_segment(chunk.text, turn)
                spoken.segments.append(seg)
            playout.append(seg, chunk.audio)
            seconds = fmt.ms_for_bytes(len(chunk.audio)) / 1000.0
            usage.tts_seconds += seconds
            usage.lines.tts_chunk(turn, chunk.text, chunk.provider, chunk.model, seconds)  # issue 17
        elif kind == "flush_done":
            return


class TextWriter:
    """Writes LLM text into a TTS stream as it arrives, then ends the stream's input (the
    service flushes at the end of input). Text that arrives while a write is in flight goes out
    together in the next write: a burst of tokens costs one message, not one per token, and no
    token waits longer than the write already in flight."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._ended = False

    def push(self, text: str) -> None:
        self._pending.append(text)
        self._wake.set()

    def end(self) -> None:
        self._ended = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            if self._pending:
                await self._call.write(text_request(self._take()))
            elif self._ended:
                break
            else:
                self._wake.clear()
                await self._wake.wait()
        await self._call.done_writing()

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


async def speak_reply(
    clients: MeshClients,
    agent: Agent,
    history: Sequence[HistoryEntry],
    fmt: Format,
    playout: Playout,
    turn: int,
    timer: TurnTimer,
    usage: Usage,
    spoken: SpokenText,
) -> None:
    """Generate and speak the agent's reply for ``turn``; fills ``spoken`` as it goes."""
    request = chat_request(agent, history)
    # LLM first: its first token is on the critical path, the TTS setup is not. Yielding once
    # lets grpc's task that sends the request run before this turn sets up its TTS stream: when
    # many turns start together, every LLM request goes out before any TTS stream is opened.
    async with llm_stream(clients.llm, request) as llm_call:
        await asyncio.sleep(0)
        async with tts_stream(clients.tts, synthesis_config(agent, fmt)) as tts_call:
            await _pipe_reply(llm_call, tts_call, playout, turn, timer, usage, spoken, fmt)
    if spoken.segments:
        spoken.segments[-1].complete = True
    playout.finish_reply(turn)


async def _pipe_reply(
    llm_call: grpc.aio.UnaryStreamCall,
    tts_call: grpc.aio.StreamStreamCall,
    playout: Playout,
    turn: int,
    timer: TurnTimer,
    usage: Usage,
    spoken: SpokenText,
    fmt: Format,
) -> None:
    """LLM tokens into TTS as they arrive; TTS audio into playout."""
    writer = TextWriter(tts_call)

    async def pipe_tokens() -> None:
        async for resp in llm_call:
            kind = resp.WhichOneof("event")
            if kind == "delta":
                text = resp.delta.text
                if not text:
                    continue
                timer.mark("llm_first_token")
                spoken.text += text
                usage.tts_characters += len(text)
                writer.push(text)
            elif kind == "done":
                u = resp.done.usage
                usage.llm_prompt_tokens += u.llm_prompt_tokens
                usage.llm_completion_tokens += u.llm_completion_tokens
                usage.lines.llm(turn, u)  # issue 17: per provider/model/key
        writer.end()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(pipe_tokens(), name=f"turn{turn}-llm")
        tg.create_task(writer.run(), name=f"turn{turn}-text")
        tg.create_task(
            _play_tts(tts_call, playout, turn, timer, spoken, usage, fmt),
            name=f"turn{turn}-tts",
        )


async def synthesize_text(
    clients: MeshClients, agent: Agent, fmt: Format, text: str, usage: Usage | None = None
) -> list[tuple[str, bytes]]:
    """Whole-text synthesis (greeting, filler, apology) into (text, audio) pieces."""
    pieces: list[tuple[str, bytearray]] = []
    async with tts_stream(clients.tts, synthesis_config(agent, fmt)) as call:
        await call.write(text_request(text))
        await call.done_writing()  # the service flushes at the end of input
        async for resp in call:
            kind = resp.WhichOneof("event")
            if kind == "audio":
                if resp.audio.text or not pieces:
                    pieces.append((resp.audio.text, bytearray()))
                pieces[-1][1].extend(resp.audio.audio)
                if usage is not None:  # issue 17: the phrase's synthesis, by provider
                    a = resp.audio
                    usage.lines.tts_chunk(
                        0, a.text, a.provider, a.model, fmt.ms_for_bytes(len(a.audio)) / 1000.0
                    )
            elif kind == "flush_done":
                break
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
        return self._entries.get(self._key(agent, fmt, text))

    async def warm(
        self, clients: MeshClients, agent: Agent, fmt: Format, text: str
    ) -> list[tuple[str, bytes]]:
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
