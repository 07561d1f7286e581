"""LanguageModelService servicer: protobuf <-> ChatRequest/ChatEvent, and the stream's shape.

It validates the request, streams the engine's deltas, and ends with exactly one ``done``. A
client cancel reaches the engine as the close of its generator, so generation stops at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence

import grpc.aio

from common import telemetry
from common.engine_metrics import LLM_FIRST_TOKEN, llm_reply
from common.errors import EngineError, InvalidArgument
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.providers import KNOWN_PROVIDERS
from llm_svc.context_budget import ContextBudgets
from llm_svc.providers.base import (
    ChatModel,
    ChatRequest,
    Completion,
    Intent,
    Message,
    ResponderRules,
    Role,
    TokenDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from llm_svc.usage_report import completion_usage

MAX_CONTEXT_BUDGET = 1_000_000
log = logging.getLogger(__name__)

MAX_MESSAGES = 512
MAX_CONTENT_BYTES = 32 * 1024
MAX_TOKENS_LIMIT = 8192
MAX_INTENTS = 256
MAX_RULE_CHARS = 4096
MAX_TOOLS = 128  # OpenAI's limit per request
MAX_TOOL_JSON_BYTES = 16 * 1024
MAX_PROVIDERS = 8
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ROLES: dict[int, Role] = {
    llm_pb2.ROLE_SYSTEM: "system",
    llm_pb2.ROLE_USER: "user",
    llm_pb2.ROLE_ASSISTANT: "assistant",
    llm_pb2.ROLE_TOOL: "tool",
}
_FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "tool_calls": llm_pb2.FINISH_REASON_TOOL_CALLS,
}


def _rules(rules: llm_pb2.ResponderRules) -> ResponderRules:
    if len(rules.intents) > MAX_INTENTS:
        raise InvalidArgument(
            f"responder_rules.intents has {len(rules.intents)} intents; at most {MAX_INTENTS}"
        )
    intents = []
    for i, intent in enumerate(rules.intents):
        if not intent.reply.strip():
            raise InvalidArgument(f"responder_rules.intents[{i}].reply is empty: say what the agent answers")
        if len(intent.reply) > MAX_RULE_CHARS or sum(map(len, intent.keywords)) > MAX_RULE_CHARS:
            raise InvalidArgument(
                f"responder_rules.intents[{i}] is too long: its reply, and its keywords together,"
                f" may be at most {MAX_RULE_CHARS} characters"
            )
        intents.append(Intent(tuple(intent.keywords), intent.reply))
    if len(rules.default_reply) > MAX_RULE_CHARS:
        raise InvalidArgument(f"responder_rules.default_reply is over {MAX_RULE_CHARS} characters")
    return ResponderRules(tuple(intents), rules.default_reply)


def _json_object(text: str, field: str) -> None:
    if len(text) > MAX_TOOL_JSON_BYTES // 4 and len(text.encode()) > MAX_TOOL_JSON_BYTES:
        raise InvalidArgument(f"{field} is over {MAX_TOOL_JSON_BYTES // 1024} KiB")
    if not text.strip():
        return
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{field} is not valid JSON ({e.args[0] if e.args else e})") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a JSON object, got {type(value).__name__}")


def _tools(tools: Sequence[llm_pb2.Tool]) -> tuple[Tool, ...]:
    if len(tools) > MAX_TOOLS:
        raise InvalidArgument(f"tools has {len(tools)} entries; at most {MAX_TOOLS}")
    out, names = [], set()
    for i, t in enumerate(tools):
        if not TOOL_NAME.fullmatch(t.name):
            raise InvalidArgument(f"tools[{i}].name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
        if t.name in names:
            raise InvalidArgument(
                f"tools[{i}].name {t.name!r} is used by an earlier tool; names must be unique"
            )
        names.add(t.name)
        if len(t.description) > MAX_RULE_CHARS:
            raise InvalidArgument(f"tools[{i}].description is over {MAX_RULE_CHARS} characters")
        _json_object(t.parameters_json, f"tools[{i}].parameters_json")
        out.append(Tool(t.name, t.description, t.parameters_json))
    return tuple(out)


def _tool_calls(m: llm_pb2.ChatMessage, i: int, role: Role) -> tuple[ToolCall, ...]:
    if m.tool_calls and role != "assistant":
        raise InvalidArgument(f"messages[{i}].tool_calls is only for ROLE_ASSISTANT messages")
    calls = []
    for j, c in enumerate(m.tool_calls):
        field = f"messages[{i}].tool_calls[{j}]"
        if not c.id or len(c.id) > 256:
            raise InvalidArgument(f"{field}.id must be 1-256 characters (the id the model gave the call)")
        if not TOOL_NAME.fullmatch(c.name):
            raise InvalidArgument(f"{field}.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
        _json_object(c.arguments_json, f"{field}.arguments_json")
        calls.append(ToolCall(c.id, c.name, c.arguments_json))
    if role == "tool" and not m.tool_call_id:
        raise InvalidArgument(f"messages[{i}].tool_call_id is required for ROLE_TOOL (the call it answers)")
    return tuple(calls)


def _providers(names: Sequence[str]) -> tuple[str, ...]:
    if len(names) > MAX_PROVIDERS:
        raise InvalidArgument(f"providers has {len(names)} entries; at most {MAX_PROVIDERS}")
    known = KNOWN_PROVIDERS["llm"]
    for i, name in enumerate(names):
        if name.strip().lower() not in known:
            raise InvalidArgument(
                f"providers[{i}]: unknown llm provider {name[:40]!r}; use {', '.join(known)}"
            )
    return tuple(names)


def to_request(req: llm_pb2.StreamChatRequest, default_max_tokens: int) -> ChatRequest:
    """Validate ``req`` and translate it; raises InvalidArgument naming the field to fix."""
    if not req.messages:
        raise InvalidArgument("messages is empty: send at least one message (the conversation so far)")
    if len(req.messages) > MAX_MESSAGES:
        raise InvalidArgument(
            f"messages has {len(req.messages)} entries; at most {MAX_MESSAGES} (drop or summarise old turns)"
        )
    messages = []
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise InvalidArgument(
                f"messages[{i}].role must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
            )
        if len(m.content) > MAX_CONTENT_BYTES // 4 and len(m.content.encode()) > MAX_CONTENT_BYTES:
            raise InvalidArgument(
                f"messages[{i}].content is over {MAX_CONTENT_BYTES // 1024} KiB of UTF-8; shorten it"
            )
        calls = _tool_calls(m, i, role)
        messages.append(Message(role, m.content, m.interrupted, calls, m.tool_call_id))
    if not 0 <= req.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidArgument(f"max_tokens must be 0..{MAX_TOKENS_LIMIT} (0 = the service default)")
    if not 0.0 <= req.temperature <= 2.0:  # also false for NaN
        raise InvalidArgument(f"temperature must be between 0 and 2, got {req.temperature:g}")
    return ChatRequest(
        messages=tuple(messages),
        model=req.model,
        max_tokens=req.max_tokens or default_max_tokens,
        temperature=req.temperature,
        rules=_rules(req.responder_rules),
        tools=_tools(req.tools),
        providers=_providers(req.providers),
    )


def _done(event: Completion) -> llm_pb2.StreamChatResponse:
    return llm_pb2.StreamChatResponse(
        done=llm_pb2.ChatCompletion(
            finish_reason=_FINISH[event.finish_reason],
            engine=event.engine,
            cached=event.cached,
            usage=completion_usage(event),
        )
    )


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServiceServicer):
    """StreamChat over one ChatModel engine."""

    def __init__(
        self,
        engine: ChatModel,
        default_max_tokens: int = 1024,
        budgets: ContextBudgets | None = None,
        default_model: str = "",
    ) -> None:
        self._engine = engine
        self._default_max_tokens = default_max_tokens
        self._budgets = budgets  # issue 17: per-agent context budgets (llm_svc/context_budget.py)
        self._default_model = default_model

    async def StreamChat(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        chat = to_request(request, self._default_max_tokens)
        if not 0 <= request.context_token_budget <= MAX_CONTEXT_BUDGET:
            raise InvalidArgument(f"context_token_budget must be 0..{MAX_CONTEXT_BUDGET} (0 = no budget)")
        if request.context_token_budget and self._budgets is not None:
            fitted = await self._budgets.apply(
                chat, request.context_token_budget, chat.model or self._default_model
            )
            chat = fitted.request
        started = time.perf_counter()
        events = self._engine.stream(chat)
        first_token_s = -1.0  # metrics hook (issue 16): observed at done, under the engine that served
        try:
            async for event in events:
                if isinstance(event, TokenDelta):
                    if first_token_s < 0:
                        first_token_s = time.perf_counter() - started
                    yield llm_pb2.StreamChatResponse(delta=llm_pb2.TokenDelta(text=event.text))
                    continue
                if isinstance(event, ToolCallDelta):
                    yield llm_pb2.StreamChatResponse(
                        tool_call=llm_pb2.ToolCallDelta(
                            index=event.index, id=event.id, name=event.name, arguments=event.arguments
                        )
                    )
                    continue
                yield _done(event)
                llm_reply(
                    event.engine, str(event.finish_reason), event.prompt_tokens, event.completion_tokens
                )
                if first_token_s >= 0:
                    LLM_FIRST_TOKEN.labels(event.engine).observe(first_token_s)
                telemetry.span_attributes(
                    {
                        "voiceai.llm.engine": event.engine,
                        "voiceai.llm.model": chat.model or "",
                        "voiceai.llm.prompt_tokens": event.prompt_tokens,
                        "voiceai.llm.completion_tokens": event.completion_tokens,
                        "voiceai.llm.cached": event.cached,
                        "voiceai.llm.fell_back": event.fell_back,
                    }
                )
                log.info(
                    "chat done: engine=%s finish=%s cached=%s prompt_tokens=%d completion_tokens=%d in %.0f ms",
                    event.engine,
                    event.finish_reason,
                    event.cached,
                    event.prompt_tokens,
                    event.completion_tokens,
                    (time.perf_counter() - started) * 1000,
                )
                return  # exactly one done; anything the engine would yield after it is dropped
            raise EngineError(f"engine {self._engine.name!r} ended its reply without a completion")
        finally:
            # Runs on normal end, error and client cancel alike: the engine stops generating now,
            # not when the garbage collector finds its generator.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
