"""Typed events that cross the transport seam, and the seam itself.

A transport (Converse gRPC stream, a LiveKit room, ...) turns its wire traffic into
``InboundEvent``s and sends ``OutboundEvent``s back; ``CallSession`` never knows which
transport it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from common.audio import Format
from gateway.usage_fold import UsageFold


# ---------------------------------------------------------------- inbound (caller -> agent)
@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Raw caller audio in the transport's caller format."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CallerDtmf:
    """Keypad digits the caller pressed."""

    digits: str


@dataclass(frozen=True, slots=True)
class CallerHangup:
    """The caller hung up."""

    pass


InboundEvent = CallerAudio | CallerDtmf | CallerHangup


# ---------------------------------------------------------------- outbound (agent -> caller)
class EndReason(Enum):
    """Why a call ended (the Converse ``CallEnded.Reason`` values)."""

    CALLER_HANGUP = 1
    SERVICE_ERROR = 2
    INVALID_INPUT = 3
    MAX_DURATION = 4
    SHUTDOWN = 5
    TRANSFERRED = 6  # the caller went to a human (a room call's transfer)
    QUOTA = 60  # a hard usage quota or spend cap was reached; ended after the turn (issue 17)


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The call is set up: caller audio may flow."""

    call_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class CallerTranscript:
    """What the recognizer heard the caller say (interim or final)."""

    text: str
    is_final: bool
    turn: int


@dataclass(frozen=True, slots=True)
class AgentSpeech:
    """Text the agent is speaking now: sent as the first frame of its audio goes out."""

    text: str
    turn: int


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """Barge-in: the caller side should drop agent audio it has not played yet."""

    turn: int


@dataclass(slots=True)
class TurnTimings:
    """Milliseconds from the caller's speech end to each stage of one turn (None = did not happen)."""

    turn: int
    stt_final_ms: float | None = None
    end_of_turn_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    first_audio_out_ms: float | None = None
    interrupted: bool = False
    filler_spoken: bool = False


@dataclass(slots=True)
class Usage:
    """What a call used: STT audio, LLM tokens, TTS characters and audio."""

    stt_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    tts_characters: int = 0
    tts_seconds: float = 0.0
    # Per provider/model/key lines the services reported (issue 17 hook: gateway/usage_fold.py).
    lines: UsageFold = field(default_factory=UsageFold)


@dataclass(frozen=True, slots=True)
class CallEnded:
    """How a call ended, with its usage and turn count."""

    reason: EndReason
    message: str
    usage: Usage = field(default_factory=Usage)
    turns: int = 0


OutboundEvent = CallStarted | CallerTranscript | AgentSpeech | ClearAudio | TurnTimings | CallEnded


class CallTransport(Protocol):
    """Frames in, frames out, control events: what a CallSession needs from an ingress."""

    @property
    def caller_format(self) -> Format:
        """Wire format of caller audio; agent audio is sent back in the same format."""
        ...

    def inbound(self) -> AsyncIterator[InboundEvent]:
        """Caller events until hangup or disconnect (the iterator then ends)."""
        ...

    def send_audio(self, frame: bytes) -> None:
        """One 20 ms frame of agent audio; called by the pacer, must not block."""
        ...

    def send_event(self, event: OutboundEvent) -> None:
        """A control event; must not block."""
        ...
