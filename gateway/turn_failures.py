"""A dead dependency ends the call honestly: after ``limit`` consecutive failed turns the agent
says a closing line instead of another apology, and the call ends with SERVICE_ERROR.

The call core asks ``failed(turn)`` where it would apologise (the phrase to speak instead, if
any), ``ends_after(turn)`` when a reply has played, and ``succeeded(turn)`` for a turn that got
its real answer. Each failed turn is reported as a ``TurnFailed`` event, which the call record
(``RecordingTransport``) marks on the turn and never forwards to the caller's transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_LIMIT = 2
CLOSING_LINE = (
    "I'm sorry, I'm having technical trouble and can't help you right now."
    " Please call again a little later. Goodbye."
)


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """A turn lost its transcription or reply and the agent apologised (record-only event)."""

    turn: int
    closing: bool = False  # the call ends after this turn's closing line


class TurnFailures:
    """Counts one call's consecutive failed turns against ``limit`` (0 = never end the call)."""

    def __init__(
        self, emit: Callable[[Any], None], limit: int = DEFAULT_LIMIT, closing_line: str = CLOSING_LINE
    ) -> None:
        self._emit = emit
        self.limit = limit
        self.closing_line = closing_line
        self._consecutive = 0
        self._failed: set[int] = set()
        self._closing_turn: int | None = None

    def failed(self, turn: int) -> str | None:
        """Turn ``turn`` failed: the closing line when this is one failure too many, else None."""
        if turn not in self._failed:
            self._failed.add(turn)
            self._consecutive += 1
        closing = 0 < self.limit <= self._consecutive
        if closing and self._closing_turn is None:
            self._closing_turn = turn
        self._emit(TurnFailed(turn, closing))
        return self.closing_line if closing else None

    def succeeded(self, turn: int) -> None:
        """Turn ``turn``'s reply played and it was a real answer: the run of failures is over."""
        if turn not in self._failed:
            self._consecutive = 0

    def ends_after(self, turn: int) -> bool:
        """Whether the call ends now that ``turn``'s reply (the closing line) has played."""
        return self._closing_turn is not None and turn >= self._closing_turn

    @property
    def reason(self) -> str:
        """The call's end message."""
        return f"{self._consecutive} turns in a row failed (a service the call needs is not answering)"


__all__ = ["CLOSING_LINE", "DEFAULT_LIMIT", "TurnFailed", "TurnFailures"]
