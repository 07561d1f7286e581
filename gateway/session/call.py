"""CallSession: one call from connect to hang-up, whatever transport carries it.

It decides when the caller's turn is over (the caller's audio and STT stream are
``CallerInput``'s), runs one agent reply per turn (LLM tokens piped into TTS), pauses and cuts
the agent off when the caller barges in, and times every turn. The never-silent fallbacks are
in ``fallbacks``; the call's tasks and timers in ``runtime.CallBase``: every task it starts is
cancelled in ``run``'s ``finally``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from common.audio import silence
from common.errors import InvalidArgument, Unavailable
from common.tasks import cancel_and_wait
from gateway import call_trace
from gateway.agents import Agent
from gateway.session import endpointing
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
)
from gateway.session.fallbacks import ActiveReply, NeverSilent
from gateway.session.history import ConversationStore, HistoryEntry
from gateway.session.playout import Pacer, Playout, Segment, heard_text
from gateway.session.reply import PhraseCache
from gateway.session.reply_failover import speak_with_failover
from gateway.session.services import (
    Final,
    Interim,
    MeshClients,
    SpeechStarted,
    UtteranceEnd,
    describe_failure,
)
from gateway.session.timing import INTERRUPTIONS, TurnTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Process-wide knobs (per-agent behaviour lives in ``TurnTakingProfile``)."""

    stt_chunk_ms: int = 100  # caller audio is batched toward STT, flushed at speech start/end
    stt_quiet_chunk_ms: int = 500  # batches once the line has been quiet for a while
    max_call_s: float = 3600.0
    stt_reopen_attempts: int = 2


class CallSession(NeverSilent):
    """One call: caller audio in, turn-taking, agent replies out (see module docstring)."""

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
        super().__init__(call_id)
        self.tenant_id = tenant_id
        self.agent = agent
        self.profile = agent.turn_taking
        self.transport = transport
        self.fmt = transport.caller_format
        self.clients = clients
        self.store = store
        self.phrases = phrases
        self.settings = settings or SessionSettings()
        self.input = CallerInput(
            self.fmt,
            clients,
            agent,
            self.usage,
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
        self._pending: list[str] = []
        self._caller_speaking = False
        self._speech_started_at = 0.0
        self._speech_end_at = 0.0
        self._last_final_at = 0.0
        self._active: ActiveReply | None = None
        self._paused = False

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> CallEnded:
        """Run the call to its end; returns why it ended. Raises VoiceAIError for bad input."""
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        try:
            await self.input.open()
            self.transport.send_event(CallStarted(self.call_id, self.agent.agent_id))
            self._spawn(self._read_caller(), "caller-in")
            self._spawn(self._read_stt(), "stt-in")
            self._spawn(self._warm_phrases(), "warm-phrases")
            if self.agent.greeting:
                self._speak_phrase(self.agent.greeting, turn=0)
            self._schedule("max-duration", self.settings.max_call_s, self._max_duration)
            return await self._ended
        finally:
            # Stop every source of new work synchronously, before the first await below.
            self._closed = True
            self._pacer.forget(self.playout)
            self.playout.pacer = None
            self.playout.clear()
            self._close_timers()
            active, self._active = self._active, None
            # The rest must finish even if this task is cancelled again meanwhile (a client
            # that vanishes can cancel the handler more than once): run it shielded.
            cleanup = asyncio.get_running_loop().create_task(
                self._release(active), name=f"call-cleanup:{self.call_id[:8]}"
            )
            await asyncio.shield(cleanup)

    async def _release(self, active: ActiveReply | None) -> None:
        try:
            await cancel_and_wait(*(self._tasks), active.task if active else None)
            await self.input.close()
            await self.store.drop(self.tenant_id, self.call_id)
        finally:
            self.playout.close()

    def _max_duration(self) -> None:
        self._end(
            EndReason.MAX_DURATION,
            f"the call reached its maximum duration of {self.settings.max_call_s:.0f} s",
        )

    # ------------------------------------------------------------------ caller -> STT
    async def _read_caller(self) -> None:
        async for event in self.transport.inbound():
            if isinstance(event, CallerAudio):
                self._check_backstop(await self.input.on_audio(event.data))
            elif isinstance(event, CallerDtmf):
                self._on_dtmf(event.digits)
            elif isinstance(event, CallerHangup):
                break
        self._end(EndReason.CALLER_HANGUP, "the caller hung up")

    def _check_backstop(self, now: float) -> None:
        """End the turn if the recognizer never closed the utterance but the line went quiet."""
        if (
            not self._pending
            or self._caller_speaking
            or self._active is not None
            or "end-of-turn" in self._timers
        ):
            return
        quiet_since = max(self.input.vad.last_voice_at, self._last_final_at)
        if (now - quiet_since) * 1000.0 > self.profile.incomplete_turn_silence_ms + 700:
            log.info("ending turn on the VAD backstop after %.0f ms of silence", (now - quiet_since) * 1000.0)
            self._speech_end_at = quiet_since
            self._end_of_turn()

    def _on_dtmf(self, digits: str) -> None:
        if not digits or any(d not in "0123456789*#ABCD" for d in digits):
            raise InvalidArgument("dtmf must be digits 0-9, '*', '#' or 'A'-'D'")
        self._pending.append(f"(the caller pressed {' '.join(digits)})")
        self._speech_end_at = self._last_final_at = time.monotonic()
        self._schedule("end-of-turn", self.profile.end_of_turn_silence_ms / 1000.0, self._end_of_turn)

    async def _read_stt(self) -> None:
        try:
            async for event in self.input.events():
                self._on_stt(event)
        except Unavailable as e:
            self._end(EndReason.SERVICE_ERROR, e.message)

    # ------------------------------------------------------------------ STT events
    def _on_stt(self, event: object) -> None:
        now = time.monotonic()
        if isinstance(event, SpeechStarted):
            self._caller_speaking = True
            self._speech_started_at = now
            self._cancel_timer("end-of-turn")
            self._cancel_timer("resume")
            if self._agent_active():
                self._schedule(
                    "barge-in", self.profile.min_interruption_ms / 1000.0, self._tentative_interrupt
                )
        elif isinstance(event, Interim):
            if event.text:
                self.transport.send_event(CallerTranscript(event.text, False, self.turn + 1))
                if (
                    self._agent_active()
                    and self._long_enough(now)
                    and endpointing.interrupts(event.text, self.profile)
                ):
                    self._confirm_interruption()
        elif isinstance(event, Final):
            self._on_final(event, now)
        elif isinstance(event, UtteranceEnd):
            self._on_speech_end(event.last_word_end_ms, now)

    def _on_final(self, event: Final, now: float) -> None:
        text = event.text
        if text:
            self.transport.send_event(CallerTranscript(text, True, self.turn + 1))
            if self._agent_active():
                if endpointing.interrupts(text, self.profile) and self._long_enough(now):
                    self._confirm_interruption()
                else:
                    # "uh-huh", "okay": the caller is listening, not taking the floor.
                    INTERRUPTIONS.labels("backchannel").inc()
                    text = ""
                    self._resume_if_paused()
            if text:
                self._pending.append(text)
                self._last_final_at = now
        if event.speech_final:
            self._on_speech_end(event.end_ms, now)

    def _on_speech_end(self, end_ms: int, now: float) -> None:
        self._caller_speaking = False
        self._cancel_timer("barge-in")
        self._speech_end_at = min(now, self.input.clock.arrival(end_ms)) if end_ms > 0 else now
        if self._paused:
            self._schedule(
                "resume",
                self.profile.false_interruption_timeout_ms / 1000.0,
                self._resume_if_paused,
            )
        if self._pending and self._active is None:
            silence_ms, why = endpointing.end_of_turn_silence_ms(" ".join(self._pending), self.profile)
            if why:
                log.debug("caller may not be done (%s): waiting %d ms", why, silence_ms)
            delay = self._speech_end_at + silence_ms / 1000.0 - now
            self._schedule("end-of-turn", delay, self._end_of_turn)

    def _long_enough(self, now: float) -> bool:
        return (now - self._speech_started_at) * 1000.0 >= self.profile.min_interruption_ms

    # ------------------------------------------------------------------ turns
    def _agent_active(self) -> bool:
        return self._active is not None or self.playout.busy

    def _end_of_turn(self) -> None:
        self._timers.pop("end-of-turn", None)
        if not self._pending or self._active is not None:
            return
        text = " ".join(self._pending)
        self._pending.clear()
        self.turn += 1
        timer = TurnTimer(self.turn, self._speech_end_at)
        timer.mark("stt_final", self._last_final_at)
        timer.mark("end_of_turn")
        active = ActiveReply(self.turn, timer)
        self._active = active
        active.task = asyncio.get_running_loop().create_task(
            self._run_reply(active, text), name=f"reply{self.turn}:{self.call_id[:8]}"
        )
        budget = self.profile.no_response_budget_ms / 1000.0
        self._schedule(
            "no-response",
            self._speech_end_at + budget - time.monotonic(),
            self._no_response,
            active,
        )

    async def _run_reply(self, active: ActiveReply, text: str) -> None:
        await self.store.append(self.tenant_id, self.call_id, HistoryEntry("user", text, active.turn))
        history = await self.store.history(self.tenant_id, self.call_id)
        assert active.timer is not None
        call_trace.turn_started(active.turn, active.timer.speech_end)
        try:
            async with asyncio.timeout(self.profile.turn_timeout_ms / 1000.0):
                await speak_with_failover(
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
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of the turn: apologise, the call goes on
            why = "the turn timed out" if isinstance(e, TimeoutError) else describe_failure(e)
            log.warning("turn %d failed (%s); apologising", active.turn, why)
            call_trace.turn_failed(active.turn, why)
            self._apologize(active)

    # ------------------------------------------------------------------ playout callbacks
    def _on_segment_start(self, seg: Segment) -> None:
        active = self._active
        if active is not None and active.timer is not None and active.turn == seg.turn:
            active.timer.mark("first_audio_out")
        if seg.text:
            self.transport.send_event(AgentSpeech(seg.text, seg.turn))

    def _on_reply_done(self, turn: int) -> None:
        active = self._active
        if active is None or active.turn != turn:
            return
        self._active = None
        self._cancel_timer("no-response")
        self._cancel_timer("stuck")
        text = active.spoken.text.strip() or " ".join(s.text for s in active.spoken.segments).strip()
        self._finish(active, text, interrupted=False)
        if self._pending and not self._caller_speaking:
            self._on_speech_end(0, time.monotonic())

    def _finish(self, active: ActiveReply, text: str, interrupted: bool) -> None:
        if text and active.record:
            entry = HistoryEntry("assistant", text, active.turn, interrupted)
            self._spawn(self.store.append(self.tenant_id, self.call_id, entry), "history")
        if active.timer is not None:
            active.timer.timings.interrupted = interrupted
            timings = active.timer.finish()
            call_trace.turn_finished(timings)
            self.transport.send_event(timings)
        active.played.set()

    # ------------------------------------------------------------------ barge-in
    def _tentative_interrupt(self) -> None:
        self._timers.pop("barge-in", None)
        if self._caller_speaking and self.playout.busy and not self._paused:
            self._paused = True
            self.playout.pause()
            self._schedule(
                "resume",
                self.profile.false_interruption_timeout_ms / 1000.0,
                self._resume_if_paused,
            )

    def _resume_if_paused(self) -> None:
        self._timers.pop("resume", None)
        if self._paused:
            self._paused = False
            INTERRUPTIONS.labels("false").inc()
            self.playout.resume()

    def _confirm_interruption(self) -> None:
        INTERRUPTIONS.labels("confirmed").inc()
        self._cut_off()

    def _cut_off(self) -> None:
        """Stop the agent mid-reply: drop its queued audio, cancel the reply, record what was heard."""
        active = self._active
        self._paused = False
        for timer in ("resume", "barge-in", "no-response", "stuck"):
            self._cancel_timer(timer)
        dropped = self.playout.clear(close_turn=active.turn if active is not None else None)
        if active is None:
            return
        self._active = None
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
        if self._closed or self._ended is None or self._ended.done():
            return
        self._cut_off()
        self.turn += 1  # a new turn: a cut-off reply's late audio (closed turns) never follows it
        self._speak_phrase(text, self.turn)
        active = self._active
        if active is not None:
            await active.played.wait()
