"""The ChatModel Protocol every llm_svc engine implements, and the typed values it consumes and yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation; ``interrupted`` marks an agent reply the caller cut off."""

    role: Role
    content: str
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Intent:
    """A canned answer: ``reply`` is said when any of ``keywords`` (words or phrases) is heard."""

    keywords: tuple[str, ...]
    reply: str


@dataclass(frozen=True, slots=True)
class ResponderRules:
    """The agent's rules for rule-driven engines; model-backed engines ignore them."""

    intents: tuple[Intent, ...] = ()
    default_reply: str = ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One completion request: the conversation so far (oldest first) and its limits.

    ``max_tokens`` is always positive here: the servicer substitutes the service default for 0.
    """

    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    rules: ResponderRules = field(default_factory=ResponderRules)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Text to append to the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The reply is complete: why it ended, what it cost, and which engine produced it."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    engine: str


ChatEvent = TokenDelta | Completion


class ChatModel(Protocol):
    """A chat engine: streams a reply as zero or more ``TokenDelta`` then exactly one ``Completion``.

    ``stream`` is an async generator. The servicer closes it (``aclose``) when the client cancels,
    so generation must stop at its next ``await``/``yield`` and release what it holds in ``finally``.
    """

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...
