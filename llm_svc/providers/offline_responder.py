"""OfflineResponder: a deterministic, rule-driven stand-in for a language model.

It is NOT a language model: it does not generate, sample or understand anything. It lets the
whole mesh run without an API key or network, with replies a test can predict:

- The reply is the first ``Intent`` of the agent's ``ResponderRules`` any of whose keywords or
  phrases occurs in the caller's last message (case-insensitive, on word boundaries, any run of
  whitespace between a phrase's words); else the rules' ``default_reply``; else the service's
  default reply (settings ``llm_default_reply``).
- ``{user}`` anywhere in a reply is replaced by the caller's words; other braces are literal.
- When the last message is not the caller's (the call just started and nobody has spoken), the
  reply is the service's greeting (settings ``llm_greeting``).
- The reply streams as word-sized deltas ("word" plus its trailing space), optionally
  ``token_delay_ms`` apart to imitate a model's pace; ``max_tokens`` cuts it (finish "length").

Token counts are approximations, not a tokenizer's: whitespace-separated words of all messages
for the prompt, word-sized deltas sent for the completion.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, FinishReason, Intent, TokenDelta

DEFAULT_REPLY = "I'm the offline demo agent. I heard you say: {user}"
DEFAULT_GREETING = "Hello! How can I help you today?"
USER_PLACEHOLDER = "{user}"

_WORD_WITH_SPACE = re.compile(r"\S+\s*")


def keyword_pattern(keyword: str) -> re.Pattern[str] | None:
    """A case-insensitive pattern for a word or phrase on word boundaries; None for a blank one."""
    words = keyword.lower().split()
    if not words:
        return None
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def intent_matches(intent: Intent, said: str) -> bool:
    """Whether any of the intent's keywords or phrases occurs in ``said`` on word boundaries."""
    for keyword in intent.keywords:
        pattern = keyword_pattern(keyword)
        if pattern is not None and pattern.search(said):
            return True
    return False


def prompt_tokens(request: ChatRequest) -> int:
    """Approximate prompt size: whitespace-separated words of every message."""
    return sum(len(m.content.split()) for m in request.messages)


class OfflineResponder:
    """Deterministic replies from the agent's rules, streamed word by word (see module docstring)."""

    name = "offline-responder"

    def __init__(
        self,
        default_reply: str = DEFAULT_REPLY,
        greeting: str = DEFAULT_GREETING,
        token_delay_ms: int = 0,
    ) -> None:
        if token_delay_ms < 0:
            raise ValueError("token_delay_ms must be >= 0")
        self._default_reply = default_reply
        self._greeting = greeting
        self._delay_s = token_delay_ms / 1000.0

    def choose_reply(self, request: ChatRequest) -> str:
        last = request.messages[-1] if request.messages else None
        if last is None or last.role != "user":
            return self._greeting
        said = " ".join(last.content.split())
        reply = next(
            (i.reply for i in request.rules.intents if intent_matches(i, said)),
            request.rules.default_reply or self._default_reply,
        )
        return reply.replace(USER_PLACEHOLDER, said)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        tokens = _WORD_WITH_SPACE.findall(self.choose_reply(request).strip())
        finish: FinishReason = "stop"
        if request.max_tokens and len(tokens) > request.max_tokens:
            tokens = tokens[: request.max_tokens]
            finish = "length"
        for token in tokens:
            # A closed generator (client cancelled) stops here: nothing runs after the yield.
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            yield TokenDelta(token)
        yield Completion(finish, prompt_tokens(request), len(tokens), self.name)
