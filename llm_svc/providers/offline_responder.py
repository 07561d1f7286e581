"""OfflineResponder: a deterministic stand-in for a language model, for running without keys.

It is NOT a language model. It answers from the agent's ResponderRules: the first intent any of
whose keywords occurs (on word boundaries, case-insensitive) in the caller's last message,
else the rules' default reply, else the service's default reply. ``{user}`` in a reply is
replaced by the caller's words. Replies stream as word-sized deltas.

Token counts are approximations: whitespace-separated words (prompt: all messages).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, TokenDelta

_TOKEN = re.compile(r"\S+\s*")
DEFAULT_GREETING = "Hello! How can I help you today?"


def _matches(keyword: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(keyword.lower())}(?![\w])", text) is not None


class OfflineResponder:
    """Deterministic rule-based replies (see module docstring)."""

    name = "offline-responder"

    def __init__(
        self,
        default_reply: str = "I'm the offline demo agent. I heard you say: {user}",
        token_delay_ms: int = 0,
    ) -> None:
        self._default = default_reply
        self._delay = token_delay_ms / 1000.0

    def choose_reply(self, request: ChatRequest) -> str:
        last = request.messages[-1] if request.messages else None
        if last is None or last.role != "user":
            return request.rules.default_reply or DEFAULT_GREETING
        said = last.content.strip()
        lowered = said.lower()
        for intent in request.rules.intents:
            if any(k.strip() and _matches(k.strip(), lowered) for k in intent.keywords):
                return intent.reply.replace("{user}", said)
        return (request.rules.default_reply or self._default).replace("{user}", said)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        reply = self.choose_reply(request)
        tokens = _TOKEN.findall(reply)
        finish: str = "stop"
        if request.max_tokens and len(tokens) > request.max_tokens:
            tokens = tokens[: request.max_tokens]
            finish = "length"
        for token in tokens:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield TokenDelta(token)
        prompt = sum(len(m.content.split()) for m in request.messages)
        yield Completion(finish, prompt, len(tokens), self.name)  # type: ignore[arg-type]
