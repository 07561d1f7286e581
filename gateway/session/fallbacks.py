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
import time

import grpc.aio

from common.audio import Format
from common.errors import VoiceAIError
from gateway.agents import Agent
from gateway.session.floor import ActiveReply, Floor
from gateway.session.reply import PhraseCache, SpokenText
from gateway.session.runtime import CallRuntime, Timers
from gateway.session.services import MeshClients, describe_rpc_error
from gateway.session.timing import FILLERS
from gateway.turn_failures import TurnFailures

log = logging.getLogger(__name__)


class NeverSilent:
    """The call's fallback speech: filler, stuck reply, apology, fixed phrases (see module docstring)."""

    def __init__(
        self,
        *,
        agent: Agent,
        fmt: Format,
        clients: MeshClients,
        phrases: PhraseCache,
        floor: Floor,
        runtime: CallRuntime,
        timers: Timers,
        failures: TurnFailures | None = None,
    ) -> None:
        self._agent = agent
        self._failures = failures  # consecutive failed turns: the last apology is a closing line
        self._profile = agent.turn_taking
        self._fmt = fmt
        self._clients = clients
        self._phrases = phrases
        self._floor = floor
        self._runtime = runtime
        self._timers = timers

    async def warm_phrases(self) -> None:
        """Synthesize the filler and the apology ahead of need."""
        for text in (self._profile.filler_phrase, self._profile.apology_phrase):
            try:
                await self._phrases.warm(self._clients, self._agent, self._fmt, text)
            except (grpc.aio.AioRpcError, VoiceAIError) as e:
                log.warning("could not pre-synthesize a fallback phrase: %s", describe_rpc_error("tts", e))

    def watch(self, active: ActiveReply, speech_end_at: float) -> None:
        """Say the filler if ``active`` has no audio out within the budget of the speech end."""
        budget = self._profile.no_response_budget_ms / 1000.0
        self._timers.schedule(
            "no-response", speech_end_at + budget - time.monotonic(), self._no_response, active
        )

    def stand_down(self) -> None:
        """The reply finished or was cut off: no filler, no stuck check."""
        self._timers.cancel("no-response")
        self._timers.cancel("stuck")

    def apologize(self, active: ActiveReply) -> None:
        """Replace ``active``'s speech with the apology (the turn failed)."""
        if self._floor.active is not active:
            return
        self._floor.playout.clear()
        active.spoken = SpokenText()
        closing = self._failures.failed(active.turn) if self._failures is not None else None
        self.speak_phrase(closing or self._profile.apology_phrase, active.turn, reuse=active)

    def speak_phrase(self, text: str, turn: int, reuse: ActiveReply | None = None) -> ActiveReply:
        """Speak a fixed phrase (greeting, apology, an announcement) as the agent's current reply."""
        active = reuse or ActiveReply(turn, None)
        self._floor.active = active
        active.spoken.text = text
        playout = self._floor.playout

        async def speak() -> None:
            pieces = self._phrases.get(self._agent, self._fmt, text)
            if pieces is None:
                pieces = await self._phrases.warm(self._clients, self._agent, self._fmt, text)
            self._runtime.usage.tts_characters += len(text)
            for piece_text, audio in pieces:
                active.spoken.segments.append(playout.queue_whole(piece_text, audio, turn))
            playout.finish_reply(turn)

        if reuse is not None and reuse.task is not None and reuse.task is not asyncio.current_task():
            reuse.task.cancel()
        active.task = self._runtime.spawn(speak(), f"phrase{turn}")
        return active

    def _no_response(self, active: ActiveReply) -> None:
        self._timers.fired("no-response")
        if self._floor.active is not active or active.timer is None or active.timer.has("first_audio_out"):
            return
        waiting = next(
            (s for s in ("llm_first_token", "tts_first_audio") if not active.timer.has(s)),
            "playout",
        )
        log.warning(
            "turn %d: no agent audio %d ms after the caller stopped (waiting for %s); saying the filler",
            active.turn,
            self._profile.no_response_budget_ms,
            waiting,
        )
        pieces = self._phrases.get(self._agent, self._fmt, self._profile.filler_phrase)
        if pieces:
            active.timer.timings.filler_spoken = True
            FILLERS.inc()
            self._floor.playout.push_front(pieces, active.turn)
        # A reply that still has no audio a while after the filler is stuck: cancel it rather
        # than wait on it forever (at least 3 s more, so a slow but healthy LLM can finish).
        self._timers.schedule(
            "stuck", max(self._profile.no_response_budget_ms / 1000.0, 3.0), self._stuck, active
        )

    def _stuck(self, active: ActiveReply) -> None:
        self._timers.fired("stuck")
        if (
            self._floor.active is active
            and active.timer is not None
            and not active.timer.has("tts_first_audio")
        ):
            log.warning("turn %d: reply produced no audio in time; cancelling it", active.turn)
            if active.task is not None:
                active.task.cancel()
            self.apologize(active)
