"""The exact-repeat reply cache with a real Redis: hits replay the words, tenants never share
entries, and only complete, non-tool, first-choice replies are stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import redis.asyncio as aioredis

from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.redis_conn import RedisSettings
from llm_svc.app import Settings, build_host
from tests.conftest import running
from tests.doubles.openai_api import Fault, OpenAIDouble, Reply, ScriptedToolCall
from tests.integration.test_llm_openai import KEYS, U, chat, req


@contextlib.asynccontextmanager
async def cached_llm(
    api: OpenAIDouble, redis_settings: RedisSettings, **kw: Any
) -> AsyncIterator[llm_pb2_grpc.LanguageModelServiceStub]:
    base = {
        "llm_providers": "openai,local",
        "openai_base_url": api.base_url,
        "llm_openai_model": "gpt-test",
        "llm_reply_cache": True,
        "llm_reply_cache_ttl_s": 60,
        "llm_openai_first_token_timeout_ms": 300,
    }
    settings = Settings(**{**base, **kw})
    host = build_host(settings, environ=KEYS, redis=redis_settings)
    async with running(host) as addr, grpc.aio.insecure_channel(addr) as ch:
        yield llm_pb2_grpc.LanguageModelServiceStub(ch)


async def test_an_exact_repeat_is_replayed_from_the_cache(
    redis_settings: RedisSettings, redis_client: aioredis.Redis
) -> None:
    async with OpenAIDouble() as api, cached_llm(api, redis_settings) as stub:
        first = await chat(stub, req((U, "good morning")))
        second = await chat(stub, req((U, "good morning")))
        assert first[0] == second[0] == "echo: good morning"
        assert not first[2].cached and second[2].cached and second[2].engine == "openai/gpt-test"
        assert second[2].usage.llm_completion_tokens == 0  # no provider tokens were spent
        assert len(api.requests) == 1
        # Anything else in the request is another entry: the text, the model, the chain.
        await chat(stub, req((U, "good morning!")))
        await chat(stub, req((U, "good morning"), model="gpt-other"))
        await chat(stub, req((U, "good morning"), providers=["openai"]))
        assert len(api.requests) == 4
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_settings.key_prefix}:*")]
        assert len(keys) == 4 and all(b":t:{tenant-test}:llm:reply:" in k for k in keys)
        ttl = await redis_client.ttl(keys[0])
        assert 0 < ttl <= 60


async def test_tenants_never_share_cached_replies(redis_settings: RedisSettings) -> None:
    async with OpenAIDouble() as api, cached_llm(api, redis_settings) as stub:
        api.reply_next(Reply(text="Welcome to Acme."), Reply(text="Welcome to Globex."))
        acme = await chat(stub, req((U, "hi")), tenant="acme")
        globex = await chat(stub, req((U, "hi")), tenant="globex")
        assert (acme[0], globex[0]) == ("Welcome to Acme.", "Welcome to Globex.")
        again = await chat(stub, req((U, "hi")), tenant="globex")
        assert again[0] == "Welcome to Globex." and again[2].cached
        assert len(api.requests) == 2


async def test_tool_calls_truncated_and_fallback_replies_are_not_stored(
    redis_settings: RedisSettings,
) -> None:
    async with OpenAIDouble() as api, cached_llm(api, redis_settings) as stub:
        call = ScriptedToolCall("c1", "lookup", '{"q": "x"}')
        api.reply_next(
            Reply(text="Checking.", tool_calls=(call,)), Reply(text="Checking.", tool_calls=(call,))
        )
        for _ in range(2):
            _, calls, done = await chat(stub, req((U, "look it up")))
            assert calls and not done.cached
        for _ in range(2):  # finish "length"
            _, _, done = await chat(stub, req((U, "one two three"), max_tokens=2))
            assert not done.cached
        api.fail_next(Fault(first_byte_delay_s=2.0))  # openai too slow: the local answer is not kept
        text, _, done = await chat(stub, req((U, "hello")))
        assert done.engine == "offline-responder" and not done.cached
        text, _, done = await chat(stub, req((U, "hello")))
        assert text == "echo: hello" and not done.cached
        assert len(api.requests) == 6


async def test_the_cache_is_off_unless_enabled(redis_settings: RedisSettings) -> None:
    async with OpenAIDouble() as api, cached_llm(api, redis_settings, llm_reply_cache=False) as stub:
        await chat(stub, req((U, "same")))
        _, _, done = await chat(stub, req((U, "same")))
        assert not done.cached and len(api.requests) == 2


async def test_a_redis_outage_is_a_miss_not_a_failure() -> None:
    gone = RedisSettings(url="redis://127.0.0.1:1/0", key_prefix="test-gone", connect_timeout_s=0.05)
    async with OpenAIDouble() as api, cached_llm(api, gone) as stub:
        text, _, done = await chat(stub, req((U, "still works")))
        assert text == "echo: still works" and not done.cached
