"""A 429 storm against the OpenAI provider: every request ends cleanly (RESOURCE_EXHAUSTED, or over
the cap at once), slots and clients are all given back, and memory does not grow with the number
of refused attempts."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import tracemalloc

from common.errors import ResourceExhausted
from llm_svc.chain import ProviderChain
from llm_svc.providers.base import ChatRequest, Message
from llm_svc.providers.offline_responder import OfflineResponder
from llm_svc.providers.openai_chat import OpenAIChat, OpenAIOptions
from tests.doubles.openai_api import Fault, OpenAIDouble

REQUEST = ChatRequest((Message("user", "hello"),), max_tokens=16)


async def _storm(chain: ProviderChain, n: int, concurrency: int = 10) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            try:
                async for _ in chain.stream(REQUEST):
                    pass
                kind = "answered"
            except ResourceExhausted as e:
                kind = "cap" if "concurrency cap" in e.message else "rate_limited"
            outcomes[kind] = outcomes.get(kind, 0) + 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(one())
    return outcomes


async def test_memory_stays_bounded_in_a_429_storm() -> None:
    options = OpenAIOptions(
        max_attempts=3, backoff_s=0.001, backoff_max_s=0.002, jitter_s=0.001, cap=8, queue_timeout_s=0.0
    )
    async with OpenAIDouble(always=Fault(status=429, retry_after="0"), max_recorded=0) as api:
        options = dataclasses.replace(options, base_url=api.base_url)
        openai_chat = OpenAIChat(options, environ={"OPENAI_API_KEY": "sk-storm"})
        chain = ProviderChain({"openai": openai_chat, "local": OfflineResponder()}, ["openai"])
        try:
            await _storm(chain, 60)  # warm-up: clients, pools, metric children, code paths
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            outcomes = await _storm(chain, 300)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
        finally:
            await openai_chat.aclose()
        assert sum(outcomes.values()) == 300 and "answered" not in outcomes
        assert outcomes.get("rate_limited", 0) > 0
        growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert growth < 512 * 1024, f"memory grew by {growth} bytes over 300 refused requests"
        assert openai_chat.limiter.in_use() == 0 and openai_chat.limiter.in_use(None) == 0
        assert api.handled <= 3 * 360  # never more than max_attempts per request


async def test_a_storm_with_a_fallback_answers_every_request() -> None:
    async with OpenAIDouble(always=Fault(status=429, retry_after="0"), max_recorded=0) as api:
        options = OpenAIOptions(base_url=api.base_url, max_attempts=2, backoff_s=0.001, jitter_s=0.001, cap=4)
        openai_chat = OpenAIChat(options, environ={"OPENAI_API_KEY": "sk-storm"})
        chain = ProviderChain({"openai": openai_chat, "local": OfflineResponder()}, ["openai", "local"])
        try:
            outcomes = await _storm(chain, 100)
        finally:
            await openai_chat.aclose()
        assert outcomes == {"answered": 100}
