"""The language-model hop as a typed stream: the conversation in, ``ReplyEvent``s out.

The adapter is the only place that knows the ``voiceai.llm.v1`` messages; a reply sees
``TokenText`` deltas and one ``ReplyDone`` carrying the token usage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from common.discovery import ChannelPool
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from gateway import call_trace
from gateway.agents import Agent
from gateway.session.history import HistoryEntry
from gateway.session.instances import TrackedCall
from gateway.session.streams._context import call_metadata

_ROLES = {"user": llm_pb2.ROLE_USER, "assistant": llm_pb2.ROLE_ASSISTANT}


@dataclass(frozen=True, slots=True)
class TokenText:
    """Text the model wrote next (never empty)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The model finished; what its prompt and completion cost in tokens."""

    prompt_tokens: int
    completion_tokens: int
    # The reply's usage lines by provider/model/key, passed through to the call's usage fold.
    usage: usage_pb2.Usage | None = field(default=None, compare=False)


ReplyEvent = TokenText | ReplyDone


def chat_request(agent: Agent, history: Sequence[HistoryEntry]) -> llm_pb2.StreamChatRequest:
    """The StreamChat request for ``agent`` after the conversation ``history``."""
    messages = [llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=agent.system_prompt)]
    for entry in history:
        messages.append(
            llm_pb2.ChatMessage(role=_ROLES[entry.role], content=entry.text, interrupted=entry.interrupted)
        )
    return llm_pb2.StreamChatRequest(
        messages=messages,
        model=agent.llm_model,
        max_tokens=agent.max_tokens,
        context_token_budget=agent.context_token_budget,
        responder_rules=agent.responder_rules,
        providers=list(agent.llm_providers),
    )


class LlmStream:
    """One StreamChat call: its events typed; its errors name the instance (``TrackedCall``)."""

    __slots__ = ("_call",)

    def __init__(self, call: TrackedCall) -> None:
        self._call = call

    async def events(self) -> AsyncIterator[ReplyEvent]:
        """Token deltas as they arrive, then ``ReplyDone``."""
        async for resp in self._call:
            kind = resp.WhichOneof("event")
            if kind == "delta":
                if resp.delta.text:
                    yield TokenText(resp.delta.text)
            elif kind == "done":
                u = resp.done.usage
                yield ReplyDone(int(u.llm_prompt_tokens), int(u.llm_completion_tokens), u)


@contextlib.asynccontextmanager
async def open_llm_stream(pool: ChannelPool, request: llm_pb2.StreamChatRequest) -> AsyncIterator[LlmStream]:
    """A StreamChat call on the least-loaded instance, cancelled on exit however the block ends."""
    async with pool.lease() as lease:
        span = call_trace.client_span("llm.StreamChat", lease.address)
        call = llm_pb2_grpc.LanguageModelServiceStub(lease.channel).StreamChat(
            request, metadata=call_trace.with_traceparent(call_metadata("llm"), span)
        )
        error: BaseException | None = None
        try:
            yield LlmStream(TrackedCall(call, pool.service, lease.address))
        except BaseException as e:
            error = e
            raise
        finally:
            call.cancel()
            call_trace.end_client(span, error)
