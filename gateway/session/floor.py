"""Who holds the floor on the agent's side: the reply it is giving now, and its playout.

``Floor`` is the one handle every part of a call shares on the active reply: the turn-taking
part asks whether the agent is speaking, barge-in cuts it off, never-silent replaces it with a
fixed phrase. ``CallSession`` and never-silent are the only parts that set it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.session.playout import Playout
from gateway.session.reply import SpokenText
from gateway.session.timing import TurnTimer


@dataclass(slots=True)
class ActiveReply:
    """The agent's current turn: what it is saying and the task producing it."""

    turn: int
    timer: TurnTimer | None
    spoken: SpokenText = field(default_factory=SpokenText)
    task: asyncio.Task[None] | None = None
    record: bool = True
    played: asyncio.Event = field(default_factory=asyncio.Event)  # finished or cut off


class Floor:
    """The agent's active reply (if any) and the call's playout (see module docstring)."""

    __slots__ = ("active", "playout")

    def __init__(self, playout: Playout) -> None:
        self.active: ActiveReply | None = None
        self.playout = playout

    @property
    def agent_speaking(self) -> bool:
        """A reply is in progress or agent audio is still queued."""
        return self.active is not None or self.playout.busy

    def take(self) -> ActiveReply | None:
        """The active reply, which no longer holds the floor."""
        active, self.active = self.active, None
        return active
