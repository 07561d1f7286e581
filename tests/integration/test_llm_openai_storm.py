"""The OpenAI provider under failure, at the engine level: a 429 storm ends every request cleanly
(RESOURCE_EXHAUSTED, or over the cap at once) with memory flat over the refused attempts; a
cancel during a retry wait ends at once and frees the slot; an unreachable server falls back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import socket
import tracemalloc

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import telemetry
from common.errors import ResourceExhausted
from common.providers import EnvKeySource, resolve_key
from llm_svc.chain import ProviderChain
from llm_svc.providers.base import ChatRequest, Completion, Message
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
        openai_chat = OpenAIChat(options, keys=EnvKeySource({"OPENAI_API_KEY": "sk-storm"}))
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
        openai_chat = OpenAIChat(options, keys=EnvKeySource({"OPENAI_API_KEY": "sk-storm"}))
        chain = ProviderChain({"openai": openai_chat, "local": OfflineResponder()}, ["openai", "local"])
        try:
            outcomes = await _storm(chain, 100)
        finally:
            await openai_chat.aclose()
        assert outcomes == {"answered": 100}


async def test_a_cancel_during_a_retry_wait_ends_at_once_and_frees_the_slot() -> None:
    async with OpenAIDouble() as api:
        api.fail_next(Fault(status=429, retry_after="30"))
        options = OpenAIOptions(base_url=api.base_url, deadline_s=120.0, cap=1)
        openai_chat = OpenAIChat(options, keys=EnvKeySource({"OPENAI_API_KEY": "sk-x"}))
        chain = ProviderChain({"openai": openai_chat}, ["openai"])

        async def consume() -> None:
            async for _ in chain.stream(REQUEST):
                pass

        task = asyncio.create_task(consume())
        try:
            for _ in range(500):  # until the first attempt got its 429 and the 30 s wait began
                if api.requests:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)  # not the 30 s Retry-After
            assert task.cancelled()
            assert (
                openai_chat.limiter.in_use(resolve_key("OPENAI_API_KEY", "", {"OPENAI_API_KEY": "sk-x"})) == 0
            )
            assert len(api.requests) == 1
        finally:
            await openai_chat.aclose()


async def test_an_unreachable_server_is_retried_then_the_chain_falls_back() -> None:
    with socket.socket() as s:  # a port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1", backoff_s=0.01, jitter_s=0.01)
    openai_chat = OpenAIChat(options, keys=EnvKeySource({}))
    chain = ProviderChain({"openai": openai_chat, "local": OfflineResponder()}, ["openai", "local"])
    try:
        events = [e async for e in chain.stream(REQUEST)]
    finally:
        await openai_chat.aclose()
    done = events[-1]
    assert isinstance(done, Completion) and done.engine == "offline-responder" and done.fell_back


async def test_a_fallback_is_an_event_on_the_stream_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """With tracing on, the switch to the next provider shows on the span the request runs in."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry._state, "provider", provider)
    async with OpenAIDouble(always=Fault(status=500), max_recorded=0) as api:
        options = OpenAIOptions(base_url=api.base_url, max_attempts=1, backoff_s=0.001, jitter_s=0.001)
        openai_chat = OpenAIChat(options, keys=EnvKeySource({"OPENAI_API_KEY": "sk-fallback"}))
        chain = ProviderChain({"openai": openai_chat, "local": OfflineResponder()}, ["openai", "local"])
        try:
            with provider.get_tracer("test").start_as_current_span(
                "/voiceai.llm.v1.LanguageModelService/StreamChat"
            ):
                events = [e async for e in chain.stream(REQUEST)]
        finally:
            await openai_chat.aclose()
    assert isinstance(events[-1], Completion) and events[-1].fell_back
    (span,) = exporter.get_finished_spans()
    (event,) = [e for e in span.events if e.name == "voiceai.provider_fallback"]
    assert dict(event.attributes or {}) == {
        "service": "llm",
        "failed": "openai",
        "to": "local",
        "reason": "server_error",
    }
