"""The ChatModel Protocol every llm_svc engine implements, and the typed events it yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Intent:
    keywords: tuple[str, ...]
    reply: str


@dataclass(frozen=True, slots=True)
class ResponderRules:
    intents: tuple[Intent, ...] = ()
    default_reply: str = ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    rules: ResponderRules = field(default_factory=ResponderRules)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    engine: str


ChatEvent = TokenDelta | Completion


class ChatModel(Protocol):
    """Streams a reply: zero or more ``TokenDelta`` then exactly one ``Completion``.

    Closing the iterator (the client cancelled) must stop generation at once.
    """

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...
