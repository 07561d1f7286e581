"""Zero-cost ChatModel for benchmarks: a fixed first-token latency, then a fixed short reply."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, TokenDelta

REPLY = ("Sure thing. ", "I can ", "help ", "with ", "that.")


class ZeroCostChatModel:
    name = "zero-cost-fake"

    def __init__(self) -> None:
        self._first_token_s = int(os.environ.get("VOICEAI_FAKE_LLM_FIRST_TOKEN_MS", "100")) / 1000.0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        await asyncio.sleep(self._first_token_s)
        for token in REPLY:
            yield TokenDelta(token)
        yield Completion("stop", len(request.messages), len(REPLY), self.name)
