"""llm_svc over real loopback gRPC: offline responder, validation, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from llm_svc.app import Settings, build_host
from llm_svc.providers.base import ChatEvent, ChatRequest, TokenDelta
from llm_svc.providers.offline_responder import OfflineResponder
from tests.conftest import md, running

U, A, S = llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT, llm_pb2.ROLE_SYSTEM
RULES = llm_pb2.ResponderRules(
    intents=[
        llm_pb2.Intent(keywords=["hours", "open"], reply="We open at nine."),
        llm_pb2.Intent(keywords=["book"], reply="Booking for you: {user}"),
    ],
    default_reply="Default: {user}",
)


def _req(*msgs: tuple[int, str], **kw) -> llm_pb2.StreamChatRequest:  # type: ignore[no-untyped-def]
    return llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in msgs], **kw)


async def _chat(
    stub: llm_pb2_grpc.LanguageModelServiceStub, req: llm_pb2.StreamChatRequest
) -> tuple[str, llm_pb2.ChatCompletion]:
    text, done = "", None
    async for resp in stub.StreamChat(req, metadata=md()):
        if resp.WhichOneof("event") == "delta":
            text += resp.delta.text
        else:
            done = resp.done
    assert done is not None
    return text, done


async def test_offline_responder_answers_by_rules() -> None:
    async with running(build_host(Settings())) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        text, done = await _chat(
            stub, _req((S, "sys"), (U, "What are your opening HOURS?"), responder_rules=RULES)
        )
        assert text == "We open at nine."
        assert done.finish_reason == llm_pb2.FINISH_REASON_STOP and done.engine == "offline-responder"
        assert done.usage.llm_completion_tokens == 4 and done.usage.llm_prompt_tokens == 6
        text, _ = await _chat(stub, _req((U, "I want to book a cleaning"), responder_rules=RULES))
        assert text == "Booking for you: I want to book a cleaning"
        text, _ = await _chat(stub, _req((U, "bookkeeping question"), responder_rules=RULES))  # word boundary
        assert text == "Default: bookkeeping question"
        text, _ = await _chat(stub, _req((U, "hello")))
        assert text == "I'm the offline demo agent. I heard you say: hello"
        text, done = await _chat(stub, _req((U, "hello"), max_tokens=2))
        assert text == "I'm the " and done.finish_reason == llm_pb2.FINISH_REASON_LENGTH


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (llm_pb2.StreamChatRequest(), "messages is empty"),
        (_req((0, "x")), "messages[0].role"),
        (_req((U, "x" * 40000)), "over 32 KiB"),
        (_req((U, "x"), max_tokens=-1), "max_tokens"),
        (_req((U, "x"), temperature=3.0), "temperature"),
    ],
)
async def test_bad_requests_are_invalid_argument(req: llm_pb2.StreamChatRequest, fragment: str) -> None:
    async with running(build_host(Settings())) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _chat(stub, req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in (info.value.details() or "")
        text, _ = await _chat(stub, _req((U, "still fine?")))  # the server keeps serving
        assert text


class _SlowEngine:
    name = "slow"

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.tokens = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            while True:
                self.tokens += 1
                yield TokenDelta("word ")
                await asyncio.sleep(0.05)
        finally:
            self.closed.set()


async def test_client_cancel_stops_generation_at_once() -> None:
    engine = _SlowEngine()
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:  # type: ignore[arg-type]
        call = llm_pb2_grpc.LanguageModelServiceStub(ch).StreamChat(_req((U, "go")), metadata=md())
        await call.read()
        call.cancel()
        await asyncio.wait_for(engine.closed.wait(), 1.0)
        produced = engine.tokens
        await asyncio.sleep(0.2)
        assert engine.tokens == produced  # nothing more after the cancel


def test_greeting_when_no_user_message_yet() -> None:
    from llm_svc.providers.base import Message

    r = OfflineResponder().choose_reply(ChatRequest((Message("system", "x"),)))
    assert r.startswith("Hello")
