"""Barge-in: the caller speaking over the agent.

Caller speech over the agent for ``min_interruption_ms`` pauses playout; words that are not
backchannels (``min_interruption_words``; "uh-huh"/"okay" excluded) confirm it and the call
cuts the agent off; noise without words, or a backchannel, resumes the agent where it paused
(after ``false_interruption_timeout_ms`` once the caller stops).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.agents import TurnTakingProfile
from gateway.session import endpointing
from gateway.session.floor import Floor
from gateway.session.runtime import Timers
from gateway.session.timing import INTERRUPTIONS
from gateway.session.turn_taking import CallerSpeech


def _ignore() -> None:
    return None


class BargeIn:
    """Pause, confirm (cut off) or resume the agent when the caller talks over it."""

    def __init__(
        self,
        profile: TurnTakingProfile,
        floor: Floor,
        caller: CallerSpeech,
        timers: Timers,
        cut_off: Callable[[], None],
    ) -> None:
        self._profile = profile
        self._floor = floor
        self._caller = caller
        self._timers = timers
        self._cut_off = cut_off
        self.paused = False

    def speech_started(self) -> None:
        """The caller started speaking: over the agent, a pause follows if it lasts."""
        self._timers.cancel("resume")
        if self._floor.agent_speaking:
            self._timers.schedule("barge-in", self._profile.min_interruption_ms / 1000.0, self._pause)

    def speech_ended(self) -> None:
        """The caller stopped: a pause without words resumes after the false-interruption wait."""
        self._timers.cancel("barge-in")
        if self.paused:
            self._timers.schedule("resume", self._profile.false_interruption_timeout_ms / 1000.0, self.resume)

    def interim(self, text: str, now: float) -> None:
        """Tentative words: enough of them over the agent cut it off at once."""
        if (
            self._floor.agent_speaking
            and self._long_enough(now)
            and endpointing.interrupts(text, self._profile)
        ):
            self._confirm()

    def takes_floor(self, text: str, now: float) -> bool:
        """Final words: True when they are the caller's turn (the agent, if speaking, is cut
        off); False for a backchannel over the agent, which resumes it if paused."""
        if not self._floor.agent_speaking:
            return True
        if endpointing.interrupts(text, self._profile) and self._long_enough(now):
            self._confirm()
            return True
        # "uh-huh", "okay": the caller is listening, not taking the floor.
        INTERRUPTIONS.labels("backchannel").inc()
        self.resume()
        return False

    def resume(self) -> None:
        """Resume a paused agent (a false interruption)."""
        self._timers.cancel("resume")  # called by the timer, or before it (a backchannel)
        if self.paused:
            self.paused = False
            INTERRUPTIONS.labels("false").inc()
            self._floor.playout.resume()

    def stop(self) -> None:
        """The agent was cut off: nothing is paused or pending any more."""
        self.paused = False
        self._timers.cancel("resume")
        self._timers.cancel("barge-in")

    def close(self) -> None:
        """The call is over: drop the callback into the session (no reference cycle)."""
        self._cut_off = _ignore

    def _long_enough(self, now: float) -> bool:
        return (now - self._caller.started_at) * 1000.0 >= self._profile.min_interruption_ms

    def _pause(self) -> None:
        self._timers.fired("barge-in")
        if self._caller.speaking and self._floor.playout.busy and not self.paused:
            self.paused = True
            self._floor.playout.pause()
            self._timers.schedule("resume", self._profile.false_interruption_timeout_ms / 1000.0, self.resume)

    def _confirm(self) -> None:
        INTERRUPTIONS.labels("confirmed").inc()
        self._cut_off()
