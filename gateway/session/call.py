"""CallSession: one call from connect to hang-up, whatever transport carries it.

The call is composed of parts that each own their state and timers: ``CallerInput`` (the
caller's audio and the STT stream), ``TurnTaking`` (when the caller's turn is over),
``BargeIn`` (the caller talking over the agent), ``NeverSilent`` (filler, apology, fixed
phrases) and ``CallRuntime`` (tasks, timers, counters, the end). The session wires them
together and runs one agent reply per turn (``reply_failover``: LLM tokens piped into TTS);
every task it starts is cancelled in ``run``'s ``finally``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from common.audio import silence
from common.errors import Unavailable, VoiceAIError
from common.tasks import cancel_and_wait
from gateway import call_trace
from gateway.agents import Agent
from gateway.session.barge_in import BargeIn
from gateway.session.caller_input import CallerInput
from gateway.session.events import (
    AgentSpeech,
    CallEnded,
    CallerAudio,
    CallerDtmf,
    CallerHangup,
    CallerTranscript,
    CallStarted,
    CallTransport,
    ClearAudio,
    EndReason,
    Usage,
)
from gateway.session.fallbacks import NeverSilent
from gateway.session.floor import ActiveReply, Floor
from gateway.session.history import ConversationStore, HistoryEntry
from gateway.session.playout import Pacer, Playout, Segment, heard_text
from gateway.session.reply import PhraseCache, ReplyTurn
from gateway.session.reply_failover import speak_with_failover
from gateway.session.runtime import CallRuntime
from gateway.session.services import MeshClients, describe_failure
from gateway.session.streams import Final, Interim, SpeechStarted, SttEvent, UtteranceEnd
from gateway.session.timing import TurnTimer
from gateway.session.turn_taking import TurnTaking
from gateway.usage_quota import CallBudget, end_after_turn

__all__ = ["CallSession", "SessionSettings", "heard_text"]
from gateway.turn_failures import DEFAULT_LIMIT, TurnFailures

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Process-wide knobs (per-agent behaviour lives in ``TurnTakingProfile``)."""

    stt_chunk_ms: int = 100  # caller audio is batched toward STT, flushed at speech start/end
    stt_quiet_chunk_ms: int = 500  # batches once the line has been quiet for a while
    max_call_s: float = 3600.0
    stt_reopen_attempts: int = 2
    failed_turns_limit: int = DEFAULT_LIMIT  # issue 15: consecutive failed turns end the call


class CallSession:
    """One call: caller audio in, turn-taking, agent replies out (see module docstring)."""

    usage_budget: CallBudget | None = None  # issue 17: monthly usage limits (gateway/usage_quota.py)

    def __init__(
        self,
        *,
        tenant_id: str,
        call_id: str,
        agent: Agent,
        transport: CallTransport,
        clients: MeshClients,
        pacer: Pacer,
        store: ConversationStore,
        phrases: PhraseCache,
        settings: SessionSettings | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.agent = agent
        self.transport = transport
        self.fmt = transport.caller_format
        self.clients = clients
        self.store = store
        self.settings = settings or SessionSettings()
        self.runtime = CallRuntime(call_id)
        self._timers = self.runtime.timers()
        self.input = CallerInput(
            self.fmt,
            clients,
            agent,
            self.runtime.usage,
            chunk_ms=self.settings.stt_chunk_ms,
            quiet_chunk_ms=self.settings.stt_quiet_chunk_ms,
            reopen_attempts=self.settings.stt_reopen_attempts,
        )
        self.playout = Playout(
            self.fmt.bytes_for_ms(20),
            transport.send_audio,
            self._on_segment_start,
            self._on_reply_done,
            pad=silence(self.fmt, 20)[:1],
        )
        self._pacer = pacer
        pacer.attach(self.playout)
        profile = agent.turn_taking
        self.floor = Floor(self.playout)
        self.turns = TurnTaking(
            profile, self.floor, self.runtime.timers(), self.input.clock, self.input.vad, self._start_reply
        )
        self.barge_in = BargeIn(profile, self.floor, self.turns.caller, self.runtime.timers(), self._cut_off)
        # Consecutive failed turns end the call with a closing line (SERVICE_ERROR).
        self.failures = TurnFailures(transport.send_event, self.settings.failed_turns_limit)
        self.never_silent = NeverSilent(
            agent=agent,
            fmt=self.fmt,
            clients=clients,
            phrases=phrases,
            floor=self.floor,
            runtime=self.runtime,
            timers=self.runtime.timers(),
            failures=self.failures,
        )

    @property
    def call_id(self) -> str:
        """The call's id."""
        return self.runtime.call_id

    @property
    def usage(self) -> Usage:
        """What the call has used so far."""
        return self.runtime.usage

    @property
    def turn(self) -> int:
        """The agent's latest turn number (0 before the first reply)."""
        return self.runtime.turn

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> CallEnded:
        """Run the call to its end; returns why it ended. Raises VoiceAIError for bad input."""
        ended = self.runtime.start()
        try:
            await self.input.open()
            self.transport.send_event(CallStarted(self.call_id, self.agent.agent_id))
            self.runtime.spawn(self._read_caller(), "caller-in")
            self.runtime.spawn(self._read_stt(), "stt-in")
            self.runtime.spawn(self.never_silent.warm_phrases(), "warm-phrases")
            if self.agent.greeting:
                self.never_silent.speak_phrase(self.agent.greeting, turn=0)
            self._timers.schedule("max-duration", self.settings.max_call_s, self._max_duration)
            return await ended
        finally:
            # Stop every source of new work synchronously, before the first await below.
            self.runtime.close()
            self._pacer.forget(self.playout)
            self.playout.pacer = None
            self.playout.clear()
            active = self.floor.take()
            # The rest must finish even if this task is cancelled again meanwhile (a client
            # that vanishes can cancel the handler more than once): run it shielded.
            cleanup = asyncio.get_running_loop().create_task(
                self._release(active), name=f"call-cleanup:{self.call_id[:8]}"
            )
            await asyncio.shield(cleanup)

    async def _release(self, active: ActiveReply | None) -> None:
        try:
            await cancel_and_wait(*self.runtime.tasks, active.task if active else None)
            await self.input.close()
            await self.store.drop(self.tenant_id, self.call_id)
        finally:
            # The parts' callbacks into this session go, so reference counting frees the call.
            self.playout.close()
            self.turns.close()
            self.barge_in.close()

    def abort(self, error: VoiceAIError) -> None:
        """End the call with an error status (e.g. the transport cannot keep up)."""
        self.runtime.fail(error)

    def end(self, reason: EndReason, message: str) -> None:
        """End the call for a reason its transport knows (a room call's caller was transferred)."""
        self.runtime.end(reason, message)

    def _max_duration(self) -> None:
        self.runtime.end(
            EndReason.MAX_DURATION,
            f"the call reached its maximum duration of {self.settings.max_call_s:.0f} s",
        )

    # ------------------------------------------------------------------ caller -> STT
    async def _read_caller(self) -> None:
        async for event in self.transport.inbound():
            if isinstance(event, CallerAudio):
                self.turns.check_backstop(await self.input.on_audio(event.data))
            elif isinstance(event, CallerDtmf):
                self.turns.dtmf(event.digits)
            elif isinstance(event, CallerHangup):
                break
        self.runtime.end(EndReason.CALLER_HANGUP, "the caller hung up")

    async def _read_stt(self) -> None:
        try:
            async for event in self.input.events():
                self._on_stt(event)
        except Unavailable as e:
            self.runtime.end(EndReason.SERVICE_ERROR, e.message)

    # ------------------------------------------------------------------ STT events
    def _on_stt(self, event: SttEvent) -> None:
        now = time.monotonic()
        if isinstance(event, SpeechStarted):
            self.turns.speech_started(now)
            self.barge_in.speech_started()
        elif isinstance(event, Interim):
            if event.text:
                self.transport.send_event(CallerTranscript(event.text, False, self.turn + 1))
                self.barge_in.interim(event.text, now)
        elif isinstance(event, Final):
            if event.text:
                self.transport.send_event(CallerTranscript(event.text, True, self.turn + 1))
                if self.barge_in.takes_floor(event.text, now):
                    self.turns.heard(event.text, now)
            if event.speech_final:
                self._on_speech_end(event.end_ms, now)
        elif isinstance(event, UtteranceEnd):
            self._on_speech_end(event.last_word_end_ms, now)

    def _on_speech_end(self, end_ms: int, now: float) -> None:
        self.turns.speech_ended(end_ms, now)
        self.barge_in.speech_ended()
        self.turns.wait_for_end(now)

    # ------------------------------------------------------------------ turns
    def _start_reply(self, text: str, speech_end_at: float, last_final_at: float) -> None:
        """The caller's turn is over: the agent answers ``text``."""
        self.runtime.turn += 1
        timer = TurnTimer(self.turn, speech_end_at)
        timer.mark("stt_final", last_final_at)
        timer.mark("end_of_turn")
        active = ActiveReply(self.turn, timer)
        self.floor.active = active
        active.task = asyncio.get_running_loop().create_task(
            self._run_reply(active, text), name=f"reply{self.turn}:{self.call_id[:8]}"
        )
        self.never_silent.watch(active, speech_end_at)

    async def _run_reply(self, active: ActiveReply, text: str) -> None:
        await self.store.append(self.tenant_id, self.call_id, HistoryEntry("user", text, active.turn))
        history = await self.store.history(self.tenant_id, self.call_id)
        assert active.timer is not None
        call_trace.turn_started(active.turn, active.timer.speech_end)  # inside the reply task
        reply = ReplyTurn(
            self.clients,
            self.agent,
            history,
            self.fmt,
            self.playout,
            active.turn,
            active.timer,
            self.usage,
            active.spoken,
        )
        try:
            async with asyncio.timeout(self.agent.turn_taking.turn_timeout_ms / 1000.0):
                await speak_with_failover(reply)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of the turn: apologise, the call goes on
            why = "the turn timed out" if isinstance(e, TimeoutError) else describe_failure(e)
            log.warning("turn %d failed (%s); apologising", active.turn, why)
            call_trace.turn_failed(active.turn, why)
            self.never_silent.apologize(active)

    # ------------------------------------------------------------------ playout callbacks
    def _on_segment_start(self, seg: Segment) -> None:
        active = self.floor.active
        if active is not None and active.timer is not None and active.turn == seg.turn:
            active.timer.mark("first_audio_out")
        if seg.text:
            self.transport.send_event(AgentSpeech(seg.text, seg.turn))

    def _on_reply_done(self, turn: int) -> None:
        active = self.floor.active
        if active is None or active.turn != turn:
            return
        self.floor.active = None
        self.never_silent.stand_down()
        text = active.spoken.text.strip() or " ".join(s.text for s in active.spoken.segments).strip()
        self._finish(active, text, interrupted=False)
        if self.failures.ends_after(active.turn):  # a dead dependency ends the call honestly
            self.runtime.end(EndReason.SERVICE_ERROR, self.failures.reason)
            return
        self.failures.succeeded(active.turn)
        # A hard monthly usage limit crossed: the call ends here, after the turn, never mid-word.
        if (over := end_after_turn(self.usage_budget, self.usage.lines)) is not None:
            self.runtime.end(EndReason.QUOTA, over)
            return
        if self.turns.waiting and not self.turns.caller.speaking:
            self._on_speech_end(0, time.monotonic())

    def _finish(self, active: ActiveReply, text: str, interrupted: bool) -> None:
        if text and active.record:
            entry = HistoryEntry("assistant", text, active.turn, interrupted)
            self.runtime.spawn(self.store.append(self.tenant_id, self.call_id, entry), "history")
        if active.timer is not None:
            active.timer.timings.interrupted = interrupted
            timings = active.timer.finish()
            call_trace.turn_finished(timings)
            self.transport.send_event(timings)
        active.played.set()

    def _cut_off(self) -> None:
        """Stop the agent mid-reply: drop its queued audio, cancel the reply, record what was heard."""
        active = self.floor.active
        self.barge_in.stop()
        self.never_silent.stand_down()
        dropped = self.playout.clear(close_turn=active.turn if active is not None else None)
        if active is None:
            return
        self.floor.active = None
        if active.task is not None:
            active.task.cancel()
        self.transport.send_event(ClearAudio(active.turn))
        self._finish(active, heard_text(active.spoken.segments, dropped), interrupted=True)

    # ------------------------------------------------------------------ asked by the transport
    async def say(self, text: str) -> None:
        """Speak ``text`` now, as a turn of its own in the agent's voice (phrase cache, playout,
        like the greeting), cutting off what the agent was saying; returns once its last frame
        went to the transport, or the caller cut it off. A room call's transfer announces itself
        with it."""
        if not self.runtime.live:
            return
        self._cut_off()
        self.runtime.turn += 1  # a new turn: a cut-off reply's late audio (closed turns) never follows it
        active = self.never_silent.speak_phrase(text, self.turn)
        await active.played.wait()
