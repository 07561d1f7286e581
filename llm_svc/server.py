"""LanguageModelService servicer: validates the request, streams the engine's events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from common.errors import InvalidArgument
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from llm_svc.providers.base import ChatModel, ChatRequest, Completion, Intent, Message, ResponderRules

MAX_MESSAGES = 512
MAX_CONTENT_BYTES = 32 * 1024
MAX_TOKENS_LIMIT = 8192
_ROLES = {llm_pb2.ROLE_SYSTEM: "system", llm_pb2.ROLE_USER: "user", llm_pb2.ROLE_ASSISTANT: "assistant"}
_FINISH = {"stop": llm_pb2.FINISH_REASON_STOP, "length": llm_pb2.FINISH_REASON_LENGTH}


def to_request(req: llm_pb2.StreamChatRequest) -> ChatRequest:
    if not req.messages:
        raise InvalidArgument("messages is empty: send at least one message (the conversation so far)")
    if len(req.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"too many messages ({len(req.messages)}); at most {MAX_MESSAGES}")
    messages = []
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}].role must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT")
        if len(m.content.encode()) > MAX_CONTENT_BYTES:
            raise InvalidArgument(f"messages[{i}].content is over {MAX_CONTENT_BYTES // 1024} KiB")
        messages.append(Message(role, m.content, m.interrupted))  # type: ignore[arg-type]
    if not 0 <= req.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidArgument(f"max_tokens must be 0..{MAX_TOKENS_LIMIT} (0 = service default)")
    if not 0.0 <= req.temperature <= 2.0:
        raise InvalidArgument("temperature must be between 0 and 2")
    rules = ResponderRules(
        intents=tuple(Intent(tuple(i.keywords), i.reply) for i in req.responder_rules.intents),
        default_reply=req.responder_rules.default_reply,
    )
    return ChatRequest(tuple(messages), req.model, req.max_tokens, req.temperature, rules)


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServiceServicer):
    """StreamChat over one ChatModel engine."""

    def __init__(self, engine: ChatModel) -> None:
        self._engine = engine

    async def StreamChat(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        chat = to_request(request)
        events = self._engine.stream(chat)
        try:
            async for event in events:
                if isinstance(event, Completion):
                    yield llm_pb2.StreamChatResponse(
                        done=llm_pb2.ChatCompletion(
                            finish_reason=_FINISH[event.finish_reason],
                            engine=event.engine,
                            usage=usage_pb2.Usage(
                                llm_prompt_tokens=event.prompt_tokens,
                                llm_completion_tokens=event.completion_tokens,
                            ),
                        )
                    )
                    return
                yield llm_pb2.StreamChatResponse(delta=llm_pb2.TokenDelta(text=event.text))
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # stop generation at once on cancel
