"""llm_svc's OpenAI provider: the real openai SDK against the OpenAI double over loopback, through
the real gRPC servicer. Words, usage, tools and keys arrive as sent; each injected fault either
retries or falls back with the words intact, or ends the stream with a clear status."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from llm_svc.app import Settings, build_host
from tests.conftest import TENANT, running
from tests.conftest import llm_md as md
from tests.doubles.openai_api import Fault, OpenAIDouble, Reply, ScriptedToolCall

U, A, S, T = llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT, llm_pb2.ROLE_SYSTEM, llm_pb2.ROLE_TOOL
KEYS = {"OPENAI_API_KEY": "sk-deployment"}
FAST = {  # short deadlines so fault tests take well under a second each
    "llm_openai_first_token_timeout_ms": 400,
    "llm_openai_deadline_ms": 1500,
    "llm_openai_inactivity_timeout_ms": 400,
}


@contextlib.asynccontextmanager
async def llm(
    api: OpenAIDouble, environ: dict[str, str] | None = None, **kw: Any
) -> AsyncIterator[llm_pb2_grpc.LanguageModelServiceStub]:
    settings = Settings(
        **{
            "llm_providers": "openai,local",
            "openai_base_url": api.base_url,
            "llm_openai_model": "gpt-test",
            **kw,
        }
    )
    host = build_host(settings, environ=KEYS if environ is None else environ)
    async with running(host) as addr, grpc.aio.insecure_channel(addr) as ch:
        yield llm_pb2_grpc.LanguageModelServiceStub(ch)


def req(*msgs: tuple[int, str], **kw: Any) -> llm_pb2.StreamChatRequest:
    return llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in msgs], **kw)


async def chat(
    stub: llm_pb2_grpc.LanguageModelServiceStub, request: llm_pb2.StreamChatRequest, tenant: str = TENANT
) -> tuple[str, list[llm_pb2.ToolCallDelta], llm_pb2.ChatCompletion]:
    text, calls, done = "", [], None
    async for resp in stub.StreamChat(request, metadata=md(tenant=tenant)):
        assert done is None, "nothing may follow done"
        kind = resp.WhichOneof("event")
        if kind == "delta":
            text += resp.delta.text
        elif kind == "tool_call":
            calls.append(resp.tool_call)
        else:
            done = resp.done
    assert done is not None
    return text, calls, done


def fallbacks(reason: str) -> float:
    labels = {"service": "llm", "from_provider": "openai", "to_provider": "local", "reason": reason}
    return REGISTRY.get_sample_value("voiceai_provider_fallbacks_total", labels) or 0.0


async def test_words_usage_model_and_limits_reach_the_client() -> None:
    async with OpenAIDouble() as api, llm(api) as stub:
        text, calls, done = await chat(stub, req((S, "be brief"), (U, "hello there friend"), max_tokens=50))
        assert text == "echo: hello there friend" and not calls
        assert done.finish_reason == llm_pb2.FINISH_REASON_STOP and done.engine == "openai/gpt-test"
        assert done.usage.llm_prompt_tokens == 5 and done.usage.llm_completion_tokens == 4
        assert not done.cached
        sent = api.requests[-1]
        assert sent.model == "gpt-test" and sent.body["max_tokens"] == 50  # a compatible server: max_tokens
        assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
        assert sent.authorization == "Bearer sk-deployment"
        assert sent.body["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there friend"},
        ]
        # The request's model wins; max_tokens 0 is the service default; the length limit shows.
        text, _, done = await chat(stub, req((U, "a b c d e f"), model="other", max_tokens=3))
        assert text == "echo: a b " and done.finish_reason == llm_pb2.FINISH_REASON_LENGTH
        assert api.requests[-1].model == "other"


async def test_each_tenant_uses_its_own_key_or_the_deployments() -> None:
    env = {**KEYS, "OPENAI_API_KEY__TENANT_TEST": "sk-tenant-own"}
    async with OpenAIDouble() as api, llm(api, env) as stub:
        await chat(stub, req((U, "one")))
        await chat(stub, req((U, "two")), tenant="other-tenant")
        assert [r.authorization for r in api.requests] == ["Bearer sk-tenant-own", "Bearer sk-deployment"]


async def test_tool_calls_stream_through_and_tool_turns_reach_the_model() -> None:
    params = json.dumps({"type": "object", "properties": {"tz": {"type": "string"}}})
    tools = [llm_pb2.Tool(name="get_time", description="Current time", parameters_json=params)]
    args = json.dumps({"tz": "Europe/Paris", "format": "24h"})
    async with OpenAIDouble() as api, llm(api) as stub:
        api.reply_next(
            Reply(text="Let me check. ", tool_calls=(ScriptedToolCall("call_1", "get_time", args),))
        )
        text, calls, done = await chat(stub, req((U, "what time is it"), tools=tools))
        assert text == "Let me check. " and done.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS
        assert len(calls) > 2, "arguments arrive in fragments, as the model streams them"
        assert (calls[0].index, calls[0].id, calls[0].name) == (0, "call_1", "get_time")
        assert "".join(c.arguments for c in calls) == args
        assert api.requests[-1].body["tools"] == [
            {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": json.loads(params)}}
        ]  # fmt: skip
        # The next turn carries the call and its result back to the model.
        history = [
            llm_pb2.ChatMessage(role=U, content="what time is it"),
            llm_pb2.ChatMessage(
                role=A, tool_calls=[llm_pb2.ToolCall(id="call_1", name="get_time", arguments_json=args)]
            ),
            llm_pb2.ChatMessage(role=T, content="14:05", tool_call_id="call_1"),
        ]
        api.reply_next(Reply(text="It is 14:05."))
        text, _, _ = await chat(stub, llm_pb2.StreamChatRequest(messages=history, tools=tools))
        assert text == "It is 14:05."
        assert api.requests[-1].body["messages"][1:] == [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "14:05"},
        ]  # fmt: skip


async def test_an_interrupted_reply_is_sent_as_heard_and_marked() -> None:
    async with OpenAIDouble() as api, llm(api) as stub:
        msgs = [
            llm_pb2.ChatMessage(role=U, content="tell me a story"),
            llm_pb2.ChatMessage(role=A, content="Once upon a ", interrupted=True),
            llm_pb2.ChatMessage(role=U, content="stop"),
            llm_pb2.ChatMessage(role=A, content="", interrupted=True),  # cut off before a word
            llm_pb2.ChatMessage(role=U, content="thanks"),
        ]
        await chat(stub, llm_pb2.StreamChatRequest(messages=msgs))
        assert [m.get("content") for m in api.requests[-1].body["messages"]] == [
            "tell me a story",
            "Once upon a...",
            "stop",
            "thanks",
        ]


async def test_429_is_retried_after_retry_after_with_the_words_intact() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(status=429, retry_after="0.3"))
        text, _, done = await chat(stub, req((U, "are you there")))
        assert text == "echo: are you there" and done.engine == "openai/gpt-test"
        assert len(api.requests) == 2
        assert api.requests[1].at - api.requests[0].at >= 0.29, "Retry-After was not honoured"


async def test_5xx_is_retried_with_backoff() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(status=500), Fault(status=503))
        text, _, done = await chat(stub, req((U, "still there")))
        assert text == "echo: still there" and done.engine == "openai/gpt-test"
        assert len(api.requests) == 3


async def test_a_retry_after_beyond_the_deadline_falls_back_at_once() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(status=429, retry_after="30"))
        before = fallbacks("rate_limited")
        text, _, done = await chat(stub, req((U, "hi")))
        assert done.engine == "offline-responder" and text.endswith("I heard you say: hi")
        assert len(api.requests) == 1 and fallbacks("rate_limited") == before + 1


async def test_a_slow_first_byte_past_the_deadline_falls_back_to_local() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(first_byte_delay_s=5.0))
        before = fallbacks("timeout")
        text, _, done = await chat(stub, req((U, "anyone home")))
        assert text == "I'm the offline demo agent. I heard you say: anyone home"
        assert done.engine == "offline-responder" and fallbacks("timeout") == before + 1
        assert len(api.requests) == 1, "a slow provider is not retried within the turn"
        # Without a fallback the client gets DEADLINE_EXCEEDED naming the provider.
        api.fail_next(Fault(first_byte_delay_s=5.0))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, req((U, "x"), providers=["openai"]))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "openai timed out before the first token" in (info.value.details() or "")


async def test_a_disconnect_after_the_first_token_ends_with_a_clear_status_and_no_retry() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(disconnect_after=2))
        got = ""
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for resp in stub.StreamChat(req((U, "one two three four")), metadata=md()):
                got += resp.delta.text
        assert got == "echo: one ", "the words before the drop arrive, nothing after"
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "broke off after it started" in (info.value.details() or "")
        assert len(api.requests) == 1


async def test_a_stall_after_the_first_token_ends_the_stream_instead_of_hanging() -> None:
    async with (
        OpenAIDouble(chunk_delay_s=0.1) as api,
        llm(api, **{**FAST, "llm_openai_inactivity_timeout_ms": 50}) as stub,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.StreamChat(req((U, "slow words")), metadata=md()):
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "timeout" in (info.value.details() or "")


async def test_a_429_storm_fails_over_or_answers_resource_exhausted() -> None:
    storm = Fault(status=429, retry_after="0.01")
    async with OpenAIDouble(always=storm) as api, llm(api, **FAST, llm_openai_max_attempts=2) as stub:
        for _ in range(5):
            text, _, done = await chat(stub, req((U, "hello")))
            assert done.engine == "offline-responder"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, req((U, "hello"), providers=["openai"]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate-limited" in (info.value.details() or "")
        trailers = dict(info.value.trailing_metadata() or ())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        assert api.handled == 12  # two attempts per request, no more


async def test_over_the_cap_falls_back_or_is_resource_exhausted() -> None:
    async with (
        OpenAIDouble(chunk_delay_s=0.05) as api,
        llm(api, **FAST, llm_openai_cap=1, llm_openai_queue_timeout_ms=0) as stub,
    ):
        holder = stub.StreamChat(req((U, "a long answer with many words in it")), metadata=md("call-1"))
        await holder.read()  # the one slot is now held
        text, _, done = await chat(stub, req((U, "me too")))
        assert done.engine == "offline-responder" and fallbacks("over_cap") >= 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, req((U, "me too"), providers=["openai"]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "concurrency cap" in (info.value.details() or "")
        holder.cancel()


async def test_a_cancelled_stream_closes_the_provider_connection() -> None:
    async with OpenAIDouble(chunk_delay_s=0.05) as api, llm(api) as stub:
        call = stub.StreamChat(req((U, " ".join(["word"] * 200))), metadata=md())
        assert (await call.read()).delta.text == "echo: "
        call.cancel()
        for _ in range(200):
            if api.dropped:
                break
            await asyncio.sleep(0.02)
        assert api.dropped == 1, "the HTTP stream to the provider was left open"


async def test_requests_the_provider_refuses_are_invalid_argument_without_fallback() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(status=400))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, req((U, "x")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "openai refused the request (HTTP 400" in (info.value.details() or "")
        assert len(api.requests) == 1


BAD = [
    (req((U, "x"), tools=[llm_pb2.Tool(name="bad name")]), "tools[0].name must be"),
    (req((U, "x"), tools=[llm_pb2.Tool(name="f" * 65)]), "tools[0].name must be"),
    (req((U, "x"), tools=[llm_pb2.Tool(name="f"), llm_pb2.Tool(name="f")]), "tools[1].name 'f' is used"),
    (req((U, "x"), tools=[llm_pb2.Tool(name="f", parameters_json="{nope")]), "tools[0].parameters_json is not valid JSON"),
    (req((U, "x"), tools=[llm_pb2.Tool(name="f", parameters_json="[1]")]), "tools[0].parameters_json must be a JSON object"),
    (req((U, "x"), providers=["openai", "bard"]), "providers[1]: unknown llm provider 'bard'"),
    (req((T, "14:05")), "messages[0].tool_call_id is required"),
    (
        llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=A, tool_calls=[llm_pb2.ToolCall(name="f")])]),
        "messages[0].tool_calls[0].id must be",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "fragment"), BAD)
async def test_bad_tools_and_providers_are_invalid_argument_naming_the_field(
    request_: llm_pb2.StreamChatRequest, fragment: str
) -> None:
    async with OpenAIDouble() as api, llm(api) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, request_)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in (info.value.details() or ""), info.value.details()
        assert not api.requests


async def test_azure_openai_uses_the_deployment_path_api_version_and_api_key_header() -> None:
    async with OpenAIDouble() as api:
        settings = {"openai_base_url": api.azure_endpoint, "llm_openai_api_version": "2024-10-21"}
        async with llm(api, **settings) as stub:
            text, _, _ = await chat(stub, req((U, "hi azure"), model="my-deployment", max_tokens=7))
        assert text == "echo: hi azure"
        sent = api.requests[-1]
        assert sent.path == "/openai/deployments/my-deployment/chat/completions"
        assert sent.query == {"api-version": "2024-10-21"} and sent.headers["api-key"] == "sk-deployment"
        assert sent.body["max_completion_tokens"] == 7 and "max_tokens" not in sent.body


async def test_a_self_hosted_server_needs_no_key() -> None:
    async with OpenAIDouble() as api, llm(api, environ={}) as stub:
        text, _, _ = await chat(stub, req((U, "local model")))
        assert text == "echo: local model" and api.requests[-1].authorization.startswith("Bearer ")


async def test_a_refused_key_falls_back_or_is_failed_precondition_naming_the_key_not_its_value() -> None:
    async with OpenAIDouble() as api, llm(api, **FAST) as stub:
        api.fail_next(Fault(status=401))
        _, _, done = await chat(stub, req((U, "hi")))
        assert done.engine == "offline-responder"
        api.fail_next(Fault(status=401))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat(stub, req((U, "hi"), providers=["openai"]))
        details = info.value.details() or ""
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "refused the API key" in details and "the default key, fingerprint" in details
        assert "sk-deployment" not in details


async def test_a_tenant_without_a_key_falls_back_when_only_tenant_keys_exist() -> None:
    env = {"OPENAI_API_KEY__ACME": "sk-acme"}
    async with OpenAIDouble() as api:
        settings = {**FAST, "openai_base_url": "", "llm_openai_token_param": "max_tokens"}
        async with llm(api, env, **settings) as stub:
            _, _, done = await chat(stub, req((U, "hi")))  # tenant-test has no key
            assert done.engine == "offline-responder"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await chat(stub, req((U, "hi"), providers=["openai"]))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no OpenAI API key for this tenant: set OPENAI_API_KEY" in (info.value.details() or "")
        assert not api.requests


async def test_usage_lines_name_the_model_key_and_cached_prompt_tokens() -> None:
    """The reply's usage is reported by provider, model and key; a repeated stable prefix (the
    system prompt and earlier turns) comes back as cached input tokens, billed lower."""
    async with OpenAIDouble(cache_min_tokens=4) as api, llm(api) as stub:
        system = (S, "you are a very brief and polite front desk agent")
        _, _, first = await chat(stub, req(system, (U, "hello there")))
        _, _, second = await chat(stub, req(system, (U, "hello there"), (A, "echo: hello there"), (U, "bye")))
    lines = {ln.unit: ln for ln in first.usage.lines}
    assert set(lines) == {"input_token", "output_token"}  # nothing cached the first time
    assert lines["input_token"].quantity_milli == first.usage.llm_prompt_tokens * 1000
    assert {(ln.provider, ln.model, ln.key_label) for ln in first.usage.lines} == {
        ("openai", "gpt-test", "default")
    }
    units = {ln.unit: ln.quantity_milli // 1000 for ln in second.usage.lines}
    assert units["cached_input_token"] == 12  # system (10 words) + the first user turn (2)
    assert units["input_token"] + units["cached_input_token"] == second.usage.llm_prompt_tokens
    assert units["output_token"] == second.usage.llm_completion_tokens
