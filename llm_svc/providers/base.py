"""The ChatModel Protocol every llm_svc engine implements, and the typed values it consumes and yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made earlier in the conversation (arguments as JSON text)."""

    id: str
    name: str
    arguments_json: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation; ``interrupted`` marks an agent reply the caller cut off.

    Assistant turns may carry the ``tool_calls`` the model made; a ``tool`` turn answers the call
    named by ``tool_call_id``.
    """

    role: Role
    content: str
    interrupted: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters_json`` is a JSON Schema object ("" = none)."""

    name: str
    description: str = ""
    parameters_json: str = ""


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
    ``providers`` is the request's own provider chain (empty = the service's default chain).
    """

    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    rules: ResponderRules = field(default_factory=ResponderRules)
    tools: tuple[Tool, ...] = ()
    providers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Text to append to the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call ``index``: its first fragment names ``id`` and ``name``; the
    ``arguments`` fragments concatenate to the call's JSON arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """The reply is complete: why it ended, what it cost, and which engine produced it.

    ``cached`` marks a reply replayed from the tenant's exact-repeat cache; ``fell_back`` marks
    one a later provider of the chain produced after an earlier one failed.
    """

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    engine: str
    cached: bool = False
    fell_back: bool = False
    # Of prompt_tokens, how many the provider served from its prompt cache (billed lower).
    cached_prompt_tokens: int = 0
    # Which key paid: "default" (the platform's), "tenant" (its own), "" (none needed).
    key_label: str = ""


ChatEvent = TokenDelta | ToolCallDelta | Completion


class ChatModel(Protocol):
    """A chat engine: streams a reply as zero or more ``TokenDelta``/``ToolCallDelta`` then exactly
    one ``Completion``.

    ``stream`` is an async generator. The servicer closes it (``aclose``) when the client cancels,
    so generation must stop at its next ``await``/``yield`` and release what it holds in ``finally``.
    """

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...
