"""Never silent: fixed phrases spoken as the agent's reply, and the fallbacks that use them.

The filler plays when no agent audio has gone out ``no_response_budget_ms`` after the caller
stopped; a reply still without audio a while later is cancelled and the apology plays; any
failure of a turn also apologises and the call goes on. Filler and apology are synthesized at
call start (``PhraseCache``), so a fallback never waits on TTS. The greeting is spoken the same
way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc.aio

from common.audio import Format
from common.errors import VoiceAIError
from gateway.agents import Agent, TurnTakingProfile
from gateway.session.playout import Playout
from gateway.session.reply import PhraseCache, SpokenText
from gateway.session.runtime import CallBase
from gateway.session.services import MeshClients, describe_rpc_error
from gateway.session.timing import FILLERS, TurnTimer
from gateway.turn_failures import TurnFailures

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ActiveReply:
    """The agent's current turn: what it is saying and the task producing it."""

    turn: int
    timer: TurnTimer | None
    spoken: SpokenText = field(default_factory=SpokenText)
    task: asyncio.Task[None] | None = None
    record: bool = True
    played: asyncio.Event = field(default_factory=asyncio.Event)  # finished or cut off


class NeverSilent(CallBase):
    """The fallback half of a call's turn-taking (see module docstring); ``CallSession`` sets the
    attributes below and decides when a turn starts and ends."""

    agent: Agent
    profile: TurnTakingProfile
    fmt: Format
    clients: MeshClients
    phrases: PhraseCache
    playout: Playout
    _active: ActiveReply | None
    failures: TurnFailures

    async def _warm_phrases(self) -> None:
        for text in (self.profile.filler_phrase, self.profile.apology_phrase):
            try:
                await self.phrases.warm(self.clients, self.agent, self.fmt, text)
            except (grpc.aio.AioRpcError, VoiceAIError) as e:
                log.warning("could not pre-synthesize a fallback phrase: %s", describe_rpc_error("tts", e))

    def _no_response(self, active: ActiveReply) -> None:
        self._timers.pop("no-response", None)
        if self._active is not active or active.timer is None or active.timer.has("first_audio_out"):
            return
        waiting = next(
            (s for s in ("llm_first_token", "tts_first_audio") if not active.timer.has(s)),
            "playout",
        )
        log.warning(
            "turn %d: no agent audio %d ms after the caller stopped (waiting for %s); saying the filler",
            active.turn,
            self.profile.no_response_budget_ms,
            waiting,
        )
        pieces = self.phrases.get(self.agent, self.fmt, self.profile.filler_phrase)
        if pieces:
            active.timer.timings.filler_spoken = True
            FILLERS.inc()
            self._enqueue_front(pieces, active.turn)
        # A reply that still has no audio a while after the filler is stuck: cancel it rather
        # than wait on it forever (at least 3 s more, so a slow but healthy LLM can finish).
        self._schedule("stuck", max(self.profile.no_response_budget_ms / 1000.0, 3.0), self._stuck, active)

    def _stuck(self, active: ActiveReply) -> None:
        self._timers.pop("stuck", None)
        if self._active is active and active.timer is not None and not active.timer.has("tts_first_audio"):
            log.warning("turn %d: reply produced no audio in time; cancelling it", active.turn)
            if active.task is not None:
                active.task.cancel()
            self._apologize(active)

    def _apologize(self, active: ActiveReply) -> None:
        if self._active is not active:
            return
        self.playout.clear()
        active.spoken = SpokenText()
        closing = self.failures.failed(active.turn)  # hook: failed turns (issue 15)
        self._speak_phrase(closing or self.profile.apology_phrase, active.turn, reuse=active)

    def _enqueue_front(self, pieces: list[tuple[str, bytes]], turn: int) -> None:
        queued = self.playout.clear()
        for text, audio in pieces:
            seg = self.playout.start_segment(text, turn)
            seg.complete = True
            self.playout.append(seg, audio)
        for seg in queued:
            self.playout.requeue(seg)

    def _speak_phrase(self, text: str, turn: int, reuse: ActiveReply | None = None) -> None:
        """Speak a fixed phrase (greeting, apology) as the agent's current reply."""
        active = reuse or ActiveReply(turn, None)
        self._active = active
        active.spoken.text = text

        async def speak() -> None:
            pieces = self.phrases.get(self.agent, self.fmt, text)
            if pieces is None:
                pieces = await self.phrases.warm(self.clients, self.agent, self.fmt, text)
            self.usage.tts_characters += len(text)
            for piece_text, audio in pieces:
                seg = self.playout.start_segment(piece_text, turn)
                seg.complete = True
                active.spoken.segments.append(seg)
                self.playout.append(seg, audio)
            self.playout.finish_reply(turn)

        if reuse is not None and reuse.task is not None and reuse.task is not asyncio.current_task():
            reuse.task.cancel()
        active.task = self._spawn(speak(), f"phrase{turn}")
