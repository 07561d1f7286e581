"""Turn-taking: when the caller's turn is over.

``TurnTaking`` owns the caller's side of the floor (``CallerSpeech``), the words heard since
the agent's last turn and the end-of-turn wait: the STT reports the end of speech, and the
turn ends ``end_of_turn_silence_ms`` later, or ``incomplete_turn_silence_ms`` when the words
trail off (``endpointing``); new speech cancels the wait and the texts merge. The energy VAD
is the backstop when the recognizer never closes an utterance. A keypad press is a turn of
its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import InvalidArgument
from gateway.agents import TurnTakingProfile
from gateway.session import endpointing
from gateway.session.clock import AudioClock, EnergyVad
from gateway.session.floor import Floor
from gateway.session.runtime import Timers

log = logging.getLogger(__name__)

_DTMF = frozenset("0123456789*#ABCD")


def _ignore(*_args: object) -> None:
    return None


@dataclass(slots=True)
class CallerSpeech:
    """The caller's side of the floor, in monotonic seconds (written by ``TurnTaking`` only)."""

    speaking: bool = False
    started_at: float = 0.0
    end_at: float = 0.0
    last_final_at: float = 0.0


class TurnTaking:
    """The caller's words and the end of their turn (see module docstring)."""

    def __init__(
        self,
        profile: TurnTakingProfile,
        floor: Floor,
        timers: Timers,
        clock: AudioClock,
        vad: EnergyVad,
        end_turn: Callable[[str, float, float], None],
    ) -> None:
        self.caller = CallerSpeech()
        self._profile = profile
        self._floor = floor
        self._timers = timers
        self._clock = clock
        self._vad = vad
        self._end_turn = end_turn  # (text, speech end, last final), monotonic seconds
        self._pending: list[str] = []

    @property
    def waiting(self) -> bool:
        """Words were heard that no agent turn has answered yet."""
        return bool(self._pending)

    def speech_started(self, now: float) -> None:
        """The caller started speaking: any end-of-turn wait is off."""
        self.caller.speaking = True
        self.caller.started_at = now
        self._timers.cancel("end-of-turn")

    def heard(self, text: str, now: float) -> None:
        """Final words of the caller's turn."""
        self._pending.append(text)
        self.caller.last_final_at = now

    def speech_ended(self, end_ms: int, now: float) -> None:
        """The caller stopped speaking at ``end_ms`` of the audio (0: now)."""
        self.caller.speaking = False
        self.caller.end_at = min(now, self._clock.arrival(end_ms)) if end_ms > 0 else now

    def wait_for_end(self, now: float) -> None:
        """Start the end-of-turn wait if there are words to answer and the agent is free."""
        if not self._pending or self._floor.active is not None:
            return
        silence_ms, why = endpointing.end_of_turn_silence_ms(" ".join(self._pending), self._profile)
        if why:
            log.debug("caller may not be done (%s): waiting %d ms", why, silence_ms)
        delay = self.caller.end_at + silence_ms / 1000.0 - now
        self._timers.schedule("end-of-turn", delay, self._end_of_turn)

    def check_backstop(self, now: float) -> None:
        """End the turn if the recognizer never closed the utterance but the line went quiet."""
        if (
            not self._pending
            or self.caller.speaking
            or self._floor.active is not None
            or self._timers.pending("end-of-turn")
        ):
            return
        quiet_since = max(self._vad.last_voice_at, self.caller.last_final_at)
        if (now - quiet_since) * 1000.0 > self._profile.incomplete_turn_silence_ms + 700:
            log.info("ending turn on the VAD backstop after %.0f ms of silence", (now - quiet_since) * 1000.0)
            self.caller.end_at = quiet_since
            self._end_of_turn()

    def dtmf(self, digits: str) -> None:
        """Keypad digits: a turn of their own, after the usual end-of-turn silence."""
        if not digits or any(d not in _DTMF for d in digits):
            raise InvalidArgument("dtmf must be digits 0-9, '*', '#' or 'A'-'D'")
        self._pending.append(f"(the caller pressed {' '.join(digits)})")
        self.caller.end_at = self.caller.last_final_at = time.monotonic()
        self._timers.schedule("end-of-turn", self._profile.end_of_turn_silence_ms / 1000.0, self._end_of_turn)

    def close(self) -> None:
        """The call is over: drop the callback into the session (no reference cycle)."""
        self._end_turn = _ignore

    def _end_of_turn(self) -> None:
        self._timers.fired("end-of-turn")
        if not self._pending or self._floor.active is not None:
            return
        text = " ".join(self._pending)
        self._pending.clear()
        self._end_turn(text, self.caller.end_at, self.caller.last_final_at)
