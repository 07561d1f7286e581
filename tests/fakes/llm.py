"""Zero-cost ChatModel for benchmarks: a fixed first-token latency, then a fixed reply.

The reply is ``REPLY`` unless ``VOICEAI_FAKE_LLM_REPLY`` sets another text (streamed one word per
token, as a model's deltas arrive)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from common.errors import EngineError
from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, TokenDelta

REPLY = ("Sure thing. ", "I can ", "help ", "with ", "that.")


class ZeroCostChatModel:
    name = "zero-cost-fake"

    def __init__(self) -> None:
        self._first_token_s = int(os.environ.get("VOICEAI_FAKE_LLM_FIRST_TOKEN_MS", "100")) / 1000.0
        text = os.environ.get("VOICEAI_FAKE_LLM_REPLY", "")
        self._reply = tuple(w + " " for w in text.split()) if text.strip() else REPLY
        # Fail the reply to the caller's Nth turn of a call (0 = never): a failed turn for tests.
        self._fail_turn = int(os.environ.get("VOICEAI_FAKE_LLM_FAIL_TURN", "0"))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        await asyncio.sleep(self._first_token_s)
        if self._fail_turn and sum(m.role == "user" for m in request.messages) == self._fail_turn:
            raise EngineError(f"{self.name}: failing turn {self._fail_turn} as configured")
        for token in self._reply:
            yield TokenDelta(token)
        yield Completion("stop", len(request.messages), len(self._reply), self.name)
