"""The OpenAI provider's parts: Retry-After parsing, the conversation and tools on the wire, the
bounded client pool, error classification and the service's provider configuration."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from common.errors import FailedPrecondition
from common.providers import EnvKeySource, retry_after_s
from llm_svc.app import Settings, make_chain
from llm_svc.providers.base import ChatRequest, Message, Tool, ToolCall
from llm_svc.providers.offline_responder import OfflineResponder
from llm_svc.providers.openai_chat import OpenAIChat, OpenAIOptions, classify
from llm_svc.providers.openai_wire import to_messages, to_tools


def test_retry_after_in_milliseconds_seconds_or_a_date() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None and retry_after_s(None) is None
    assert retry_after_s({"Retry-After": "7"}) == 7.0  # any header-name case (websocket handshakes)


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError(
        "x", response=response, body={"code": "some_code", "message": "secret prompt"}
    )


def test_classify_says_what_to_retry_and_what_to_fall_back_from() -> None:
    rate = classify(_status_error(429, {"retry-after": "3"}), "m", started=False)
    assert (rate.kind, rate.retry_after_s, rate.fallback) == ("rate_limited", 3.0, True)
    assert classify(_status_error(503), "m", False).kind == "server_error"
    assert classify(_status_error(401), "m", False).kind == "auth"
    bad = classify(_status_error(400), "gpt-x", False)
    assert bad.kind == "bad_request" and not bad.fallback and bad.code.name == "INVALID_ARGUMENT"
    assert "some_code" in str(bad) and "secret prompt" not in str(bad)  # provider text may echo the prompt
    assert classify(TimeoutError(), "m", False).kind == "timeout"
    request = httpx2.Request("POST", "http://x")
    assert classify(openai.APIConnectionError(request=request), "m", started=True).kind == "disconnect"
    assert classify(openai.APIConnectionError(request=request), "m", started=False).kind == "connect"


def test_messages_on_the_wire() -> None:
    call = ToolCall("c1", "f", '{"a": 1}')
    wire = to_messages(
        [
            Message("system", "rules"),
            Message("assistant", "Half a sent", interrupted=True),
            Message("assistant", "  ", interrupted=True),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "42", tool_call_id="c1"),
            Message("assistant", ""),
        ]
    )
    assert wire == [
        {"role": "system", "content": "rules"},
        {"role": "assistant", "content": "Half a sent..."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": ""},
    ]  # fmt: skip
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    assert to_tools([Tool("search", "Find", json.dumps(schema)), Tool("ping")]) == [
        {"type": "function", "function": {"name": "search", "parameters": schema, "description": "Find"}},
        {
            "type": "function",
            "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
        },
    ]


def test_request_parameters_follow_the_endpoint() -> None:
    request = ChatRequest((Message("user", "hi"),), max_tokens=9, temperature=0.0)
    official = OpenAIChat(OpenAIOptions(model="gpt-4o-mini"), keys=EnvKeySource({})).params(request)
    assert official["max_completion_tokens"] == 9 and "max_tokens" not in official
    assert "temperature" not in official  # 0 = the model's default
    compatible = OpenAIChat(OpenAIOptions(base_url="http://vllm:8000/v1"), keys=EnvKeySource({})).params(
        ChatRequest((Message("user", "hi"),), model="llama", max_tokens=9, temperature=0.7)
    )
    assert (
        compatible["max_tokens"] == 9 and compatible["model"] == "llama" and compatible["temperature"] == 0.7
    )


def test_provider_configuration_names_the_variable_to_fix() -> None:
    local = OfflineResponder()
    with pytest.raises(FailedPrecondition, match="VOICEAI_LLM_PROVIDERS: unknown provider 'gpt'"):
        make_chain(Settings(llm_providers="gpt,local"), local, {})
    with pytest.raises(FailedPrecondition, match="none of these providers is configured"):
        make_chain(Settings(llm_providers="openai"), local, {})
    with pytest.raises(FailedPrecondition, match="OPENAI_BASE_URL is empty"):
        make_chain(Settings(llm_openai_api_version="2024-10-21"), local, {"OPENAI_API_KEY": "k"})
    chain, cloud = make_chain(Settings(llm_providers="openai, local"), local, {"OPENAI_API_KEY__ACME": "k"})
    assert sorted(chain.providers) == ["local", "openai"] and chain.default_chain == ("openai", "local")
    assert len(cloud) == 1
    chain, cloud = make_chain(Settings(), local, {})
    assert list(chain.providers) == ["local"] and not cloud
